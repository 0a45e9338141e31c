"""`ScoreSdeDDPMModel`: the DDPM UNet as score_sde_pytorch implements it (``models/ddpm.py``), as a diffusers model.

Ho et al. (2020), "Denoising Diffusion Probabilistic Models", Appendix B: a PixelCNN++-style UNet with two
residual blocks per resolution, GroupNorm with 32 groups, self-attention at 16x16, and a sinusoidal timestep
embedding. Song et al. (2021) use it as the DDPM baseline of Table 2/3 (checkpoints ``vp/cifar10_ddpm``,
``vp/cifar10_ddpm_continuous``, ``subvp/cifar10_ddpm_continuous``) and, with ``scale_by_sigma``, on the VE SDE
(``ve/cifar10_ddpm``).

The modules have score_sde's names and order, so a score_sde state dict loads once the ``module.`` prefix is
removed; the layers are NCSN++'s (`scoresde_diffusers.models.ncsnpp`) with DDPM's 32 normalisation groups and
no skip rescaling, which is exactly score_sde's DDPM layers. Config keys as in `NCSNppModel`.
"""

from typing import Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from .ncsnpp import (
    AttnBlock,
    Downsample,
    ResnetBlockDDPM,
    Upsample,
    batch_timesteps,
    check_sample_channels,
    conv3x3,
    dense,
    get_activation,
    group_norm,
    level_resolutions,
    noise_level_index,
    noise_level_sigmas,
    sigmas_at,
    timestep_embedding,
)

#: DDPM normalises every GroupNorm over 32 groups (Ho et al. 2020, Appendix B), so widths are multiples of 32.
DDPM_NUM_GROUPS = 32


class ScoreSdeDDPMModel(ModelMixin, ConfigMixin):
    r"""score_sde's DDPM network, called like a diffusers UNet: ``model(sample, timestep).sample``.

    Args:
        sample_size (`int`, defaults to 32): image width; sets where the attention blocks go.
        in_channels (`int`, defaults to 3): image channels (also the output channels).
        nf (`int`, defaults to 128): base width, a multiple of 32.
        ch_mult (`Tuple[int]`, defaults to ``(1, 2, 2, 2)``): width multiplier per resolution level.
        num_res_blocks (`int`, defaults to 2): residual blocks per level.
        attn_resolutions (`Tuple[int]`, defaults to ``(16,)``): feature widths with self-attention.
        dropout (`float`, defaults to 0.1): dropout inside the residual blocks.
        resamp_with_conv (`bool`, defaults to `True`): convolutional up/down-sampling.
        scale_by_sigma (`bool`, defaults to `False`): divide the output by ``sigmas[timestep]`` (the VE use, where
            the timestep is a noise-level index, rounded to the nearest level).
        nonlinearity (`str`, defaults to ``"swish"``): the activation.
        centered (`bool`, defaults to `True`): data in [-1, 1]; if False it is in [0, 1] and mapped on entry.
        sigma_min (`float`), sigma_max (`float`), num_scales (`int`): the discrete noise levels ``sigmas``.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: Union[int, Tuple[int, int]] = 32,
        in_channels: int = 3,
        nf: int = 128,
        ch_mult: Tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Tuple[int, ...] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        scale_by_sigma: bool = False,
        nonlinearity: str = "swish",
        centered: bool = True,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        if any((nf * mult) % DDPM_NUM_GROUPS for mult in ch_mult):
            raise ValueError(
                f"Every width nf * ch_mult must be a multiple of {DDPM_NUM_GROUPS} (DDPM's GroupNorm groups); "
                f"got nf={nf}, ch_mult={tuple(ch_mult)}."
            )
        self.act = act = get_activation(nonlinearity)
        self.register_buffer("sigmas", noise_level_sigmas(sigma_min, sigma_max, num_scales))
        num_levels = len(ch_mult)
        self.level_attention = [r in attn_resolutions for r in level_resolutions(sample_size, num_levels)]
        temb_dim = 4 * nf

        def resnet_block(in_ch, out_ch=None):
            return ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=temb_dim, dropout=dropout, skip_rescale=False, num_groups=DDPM_NUM_GROUPS)

        def attn_block(ch):
            return AttnBlock(ch, skip_rescale=False, init_scale=0.0, num_groups=DDPM_NUM_GROUPS)

        modules = [dense(nf, temb_dim), dense(temb_dim, temb_dim), conv3x3(in_channels, nf)]
        skip_channels = [nf]
        in_ch = nf
        for level in range(num_levels):
            for _ in range(num_res_blocks):
                modules.append(resnet_block(in_ch, nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
                if self.level_attention[level]:
                    modules.append(attn_block(in_ch))
                skip_channels.append(in_ch)
            if level != num_levels - 1:
                modules.append(Downsample(in_ch, with_conv=resamp_with_conv))
                skip_channels.append(in_ch)
        modules += [resnet_block(in_ch), attn_block(in_ch), resnet_block(in_ch)]
        for level in reversed(range(num_levels)):
            for _ in range(num_res_blocks + 1):
                modules.append(resnet_block(in_ch + skip_channels.pop(), nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
            if self.level_attention[level]:
                modules.append(attn_block(in_ch))
            if level != 0:
                modules.append(Upsample(in_ch, with_conv=resamp_with_conv))
        modules += [group_norm(in_ch, DDPM_NUM_GROUPS), conv3x3(in_ch, in_channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)

    def forward(
        self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int], return_dict: bool = True
    ) -> Union[UNet2DOutput, Tuple]:
        """The network output at (`sample`, `timestep`).

        Args:
            sample (`torch.Tensor`): (B, C, H, W) noisy images, in [-1, 1] if ``centered`` else [0, 1].
            timestep (`torch.Tensor`, `float` or `int`): scalar or (B,): the time label (a noise-level index when
                ``scale_by_sigma``).
            return_dict (`bool`, defaults to `True`): return a `UNet2DOutput` instead of a tuple.
        """
        config = self.config
        check_sample_channels(sample, config.in_channels, type(self).__name__)
        timesteps = batch_timesteps(timestep, sample)
        if config.scale_by_sigma:
            timesteps = noise_level_index(timesteps)
        modules = iter(self.all_modules)
        temb = next(modules)(timestep_embedding(timesteps, config.nf).to(sample.dtype))
        temb = next(modules)(self.act(temb))
        h = sample if config.centered else 2 * sample - 1.0
        num_levels = len(config.ch_mult)
        hs = [next(modules)(h)]
        for level in range(num_levels):
            for _ in range(config.num_res_blocks):
                h = next(modules)(hs[-1], temb)
                if self.level_attention[level]:
                    h = next(modules)(h)
                hs.append(h)
            if level != num_levels - 1:
                hs.append(next(modules)(hs[-1]))
        h = next(modules)(hs[-1], temb)
        h = next(modules)(h)
        h = next(modules)(h, temb)
        for level in reversed(range(num_levels)):
            for _ in range(config.num_res_blocks + 1):
                h = next(modules)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.level_attention[level]:
                h = next(modules)(h)
            if level != 0:
                h = next(modules)(h)
        norm, conv = next(modules), next(modules)
        h = conv(self.act(norm(h)))
        if config.scale_by_sigma:
            h = h / sigmas_at(self.sigmas, timesteps).to(h.dtype).reshape(-1, 1, 1, 1)
        return UNet2DOutput(sample=h) if return_dict else (h,)
