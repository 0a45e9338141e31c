"""diffusers `UNet2DModel` presets that follow the score_sde architectures NCSN++ and DDPM++.

Song et al. (2021), Section 4.4 and Appendix H ("NCSN++ / DDPM++"):

- **NCSN++** (for the VE SDE): Gaussian Fourier-feature embedding of the noise level, conditioning on sigma(t),
  BigGAN-style residual up/down-sampling, attention at 16x16, output divided by sigma (the network predicts
  ``score`` = unit-variance output / sigma). diffusers' `UNet2DModel` does the division itself when
  ``time_embedding_type="fourier"``, and its `GaussianFourierProjection` takes ``log`` of its input: the model
  must be called with sigma > 0, which the VE SDE guarantees (sigma(0) = sigma_min) and the scheduler's
  ``timestep_type="sigma"`` supplies.
- **DDPM++** (for the VP and sub-VP SDEs): sinusoidal (positional) embedding of the timestep, the same residual
  blocks and attention, predicting ``epsilon``; the model is called with the scheduler's timestep map.

What differs from score_sde, and why: the original NCSN++ has "skip" (progressive input / output) paths with
FIR kernels; diffusers' `SkipDownBlock2D` / `SkipUpBlock2D` hard-code 3 image channels there, so these presets use
the plain `DownBlock2D` / `AttnDownBlock2D` blocks, which work for any channel count (1-channel digits and MNIST,
3-channel RGB). Width and depth are arguments, so a tiny preset trains on a CPU.
"""

import json
import math
import os
from typing import Optional, Sequence, Tuple

from diffusers import UNet2DModel

from ..registry import Registry

#: Model presets, chosen by name in the training command line (``--model ddpmpp``).
MODEL_PRESETS = Registry("model preset", "scoresde_diffusers.model_presets")

#: What each preset predicts and how it is conditioned: read by the trainer to configure the scheduler.
PRESET_PARAMETRIZATION = {
    "ncsnpp": {"prediction_type": "score", "timestep_type": "sigma"},
    "ddpmpp": {"prediction_type": "epsilon", "timestep_type": None},  # None: the scheduler's default map
}


def default_channel_mult(resolution: int) -> Tuple[int, ...]:
    """score_sde's channel multipliers by resolution, shortened for the small images a CPU can train on."""
    if resolution <= 8:
        return (1, 2)
    if resolution <= 16:
        return (1, 2, 2)
    if resolution <= 32:
        return (1, 2, 2, 2)
    if resolution <= 64:
        return (1, 2, 3, 4)
    return (1, 1, 2, 2, 2, 2)


def _unet_config(
    resolution: int,
    in_channels: int,
    width: int,
    channel_mult: Optional[Sequence[int]],
    layers_per_block: int,
    attention_resolutions: Sequence[int],
    dropout: float,
    norm_num_groups: Optional[int],
) -> dict:
    if not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"UNet presets need a square resolution >= 4 pixels, got {resolution!r}.")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
    channel_mult = tuple(channel_mult) if channel_mult else default_channel_mult(resolution)
    factor = 2 ** (len(channel_mult) - 1)
    if resolution % factor or resolution // factor < 2:
        allowed = [r for r in (4, 8, 16, 32, 64, 128, 256) if r % factor == 0 and r // factor >= 2]
        raise ValueError(
            f"Resolution {resolution} cannot be halved {len(channel_mult) - 1} times (channel_mult={channel_mult}) "
            f"down to at least 2x2 pixels: use a resolution divisible by {factor} and at least {2 * factor} "
            f"(e.g. {allowed[:4]}), or pass a shorter --channel_mult."
        )
    channels = tuple(int(width * m) for m in channel_mult)
    groups = norm_num_groups or math.gcd(32, *channels)
    if any(c % groups for c in channels):
        raise ValueError(f"norm_num_groups={groups} must divide every block width {channels}.")
    down, up = [], []
    current = resolution
    for _ in channels:
        down.append("AttnDownBlock2D" if current in attention_resolutions else "DownBlock2D")
        current //= 2
    for block in reversed(down):
        up.append(block.replace("Down", "Up"))
    return dict(
        sample_size=resolution,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        layers_per_block=layers_per_block,
        attention_head_dim=None if channels[0] < 8 else 8,
        norm_num_groups=groups,
        norm_eps=1e-6,
        dropout=dropout,
        downsample_type="resnet",  # BigGAN-style residual resampling, as NCSN++/DDPM++ (resblock_type="biggan")
        upsample_type="resnet",
        mid_block_scale_factor=math.sqrt(2.0),  # score_sde's skip_rescale: sums of two paths divided by sqrt(2)
        act_fn="silu",
    )


@MODEL_PRESETS.register("ncsnpp")
def ncsnpp_config(
    resolution: int,
    in_channels: int = 3,
    width: int = 128,
    channel_mult: Optional[Sequence[int]] = None,
    layers_per_block: int = 4,
    attention_resolutions: Sequence[int] = (16,),
    dropout: float = 0.1,
    norm_num_groups: Optional[int] = None,
) -> dict:
    """`UNet2DModel` config following NCSN++ (score_sde ``configs/ve/cifar10_ncsnpp_continuous.py``: nf=128,
    ch_mult (1, 2, 2, 2), 4 residual blocks per resolution, attention at 16, dropout 0.1, Fourier embedding with
    scale 16). Call it with sigma(t) (``timestep_type="sigma"``); it predicts the score.

    Args:
        resolution (`int`): image height = width; must be divisible by 2^(len(channel_mult) - 1).
        in_channels (`int`, defaults to 3): image channels (1 for digits / MNIST).
        width (`int`, defaults to 128): channels of the first level (score_sde's ``nf``).
        channel_mult (`Sequence[int]`, *optional*): width multiplier per level; by resolution if not given.
        layers_per_block (`int`, defaults to 4): residual blocks per level (score_sde's ``num_res_blocks``).
        attention_resolutions (`Sequence[int]`, defaults to ``(16,)``): resolutions with self-attention.
        dropout (`float`, defaults to 0.1): dropout in the residual blocks.
        norm_num_groups (`int`, *optional*): GroupNorm groups; the largest divisor of 32 that fits by default.
    """
    config = _unet_config(resolution, in_channels, width, channel_mult, layers_per_block, attention_resolutions, dropout, norm_num_groups)
    config.update(time_embedding_type="fourier", flip_sin_to_cos=True, freq_shift=0)
    return config


@MODEL_PRESETS.register("ddpmpp")
def ddpmpp_config(
    resolution: int,
    in_channels: int = 3,
    width: int = 128,
    channel_mult: Optional[Sequence[int]] = None,
    layers_per_block: int = 4,
    attention_resolutions: Sequence[int] = (16,),
    dropout: float = 0.1,
    norm_num_groups: Optional[int] = None,
) -> dict:
    """`UNet2DModel` config following DDPM++ (score_sde ``configs/vp/cifar10_ddpmpp_continuous.py``: nf=128,
    ch_mult (1, 2, 2, 2), 4 residual blocks, attention at 16, dropout 0.1, positional embedding). It predicts
    epsilon. Arguments as `ncsnpp_config`."""
    config = _unet_config(resolution, in_channels, width, channel_mult, layers_per_block, attention_resolutions, dropout, norm_num_groups)
    config.update(time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0)
    return config


def create_unet(
    preset: str = "ddpmpp",
    resolution: int = 32,
    in_channels: int = 3,
    config_file: Optional[str] = None,
    **kwargs,
) -> UNet2DModel:
    """Build a `UNet2DModel` from a preset name (``"ncsnpp"``, ``"ddpmpp"`` or a plugin's) or a config file.

    Args:
        preset (`str`, defaults to ``"ddpmpp"``): a name in `MODEL_PRESETS`.
        resolution (`int`, defaults to 32): image height = width.
        in_channels (`int`, defaults to 3): image channels.
        config_file (`str`, *optional*): a `UNet2DModel` ``config.json`` (or a folder holding one); replaces the
            preset. Its ``sample_size`` and ``in_channels`` must match the data.
        kwargs: preset arguments (``width``, ``channel_mult``, ``layers_per_block``, ...).

    Example:

    >>> from scoresde_diffusers.models.unet_presets import create_unet
    >>> unet = create_unet("ddpmpp", resolution=8, in_channels=1, width=16, layers_per_block=1)
    >>> unet.config.sample_size, unet.config.time_embedding_type
    (8, 'positional')
    """
    if config_file is not None:
        path = os.path.join(config_file, "config.json") if os.path.isdir(config_file) else config_file
        if not os.path.isfile(path):
            raise ValueError(f"UNet config file {config_file!r} does not exist.")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        size = config.get("sample_size")
        if size is not None and (tuple(size) if isinstance(size, (list, tuple)) else (size, size)) != (resolution, resolution):
            raise ValueError(f"The UNet config's sample_size {size} does not match the data resolution {resolution}.")
        if config.get("in_channels", 3) != in_channels:
            raise ValueError(f"The UNet config's in_channels {config.get('in_channels', 3)} does not match the data's {in_channels} channels.")
        return UNet2DModel.from_config(config)
    return UNet2DModel(**MODEL_PRESETS.get(preset)(resolution, in_channels=in_channels, **kwargs))
