"""`NCSNppModel`: score_sde's NCSN++ and DDPM++ networks, exactly, as a diffusers model.

Song et al. (2021), "Score-Based Generative Modeling through Stochastic Differential Equations", Section 4.4 and
Appendix H.1 describe the architecture search that produced them, starting from the DDPM UNet (Ho et al. 2020):

- **NCSN++** (for the VE SDE): Gaussian Fourier-feature embedding of log sigma (Tancik et al. 2020), BigGAN-type
  residual blocks that resample inside the block (Brock et al. 2019), FIR anti-aliased up/down-sampling
  (StyleGAN2, Karras et al. 2020), progressive-growing "input skip" / "output skip" / "residual" pyramids,
  residual branches rescaled by 1/sqrt(2), and the output divided by sigma ("scale_by_sigma").
- **DDPM++** (for the VP and sub-VP SDEs): the same network with the sinusoidal (positional) timestep embedding,
  no FIR filter, no pyramids, and no output scaling (it predicts the noise, epsilon = -sigma x score).
- The "deep" variants double ``num_res_blocks`` (4 -> 8).

This is a re-implementation in plain torch of score_sde_pytorch's ``models/ncsnpp.py`` and ``models/layerspp.py``
(the FIR filter is in `upfirdn2d`, no CUDA extension): the same computation and the same modules under the same
names, so a score_sde state dict loads with the ``module.`` prefix of its `DataParallel` wrapper removed (see
`scripts/convert_score_sde_checkpoint.py`). tests/test_conversion.py checks the outputs against the original
network's to 1e-5.

The config keys are score_sde's ``config.model`` fields, except ``sample_size`` / ``in_channels`` (diffusers'
names for ``config.data.image_size`` / ``num_channels``, read by the pipelines) and ``centered``
(``config.data.centered``: False means the data is in [0, 1] and the network maps it to [-1, 1] first).

The network's `timestep` is what score_sde passes it: sigma itself for the Fourier embedding (continuous VE), a
time label for the positional one (999 t for continuous VP / sub-VP, t (N - 1) for discrete VP, the noise-level
index round((1 - t) (N - 1)) for discrete VE, where ``sigmas[index]`` gives the sigma to divide by; a fractional
index is rounded).
"""

import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from . import upfirdn2d as fir_ops

# ---------------------------------------------------------------------------------------------------- choices
ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
    "swish": nn.SiLU,
}
RESBLOCK_TYPES = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
COMBINE_METHODS = ("sum", "cat")
EMBEDDING_TYPES = ("fourier", "positional")


def check_choice(name: str, value, allowed: Sequence) -> None:
    """A ValueError naming `name`, the bad `value` and the allowed ones."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def get_activation(name: str) -> nn.Module:
    check_choice("nonlinearity", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


# ---------------------------------------------------------------------------------------------------- init
def default_init_(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM's initialisation (Ho et al. 2020, after TensorFlow's variance_scaling(scale, "fan_avg", "uniform")):
    uniform with variance scale / mean(fan_in, fan_out); scale 0 means 1e-10, an almost-zero last layer."""
    scale = 1e-10 if scale == 0 else scale
    shape = tensor.shape
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_avg = (shape[0] + shape[1]) * receptive / 2
    bound = math.sqrt(3 * scale / fan_avg)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, init_scale: float = 1.0, padding: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding, bias=bias)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    linear = nn.Linear(in_dim, out_dim)
    default_init_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def group_norm(channels: int, num_groups: Optional[int] = None) -> nn.GroupNorm:
    """NCSN++'s GroupNorm: min(C / 4, 32) groups unless `num_groups` is given (DDPM uses 32)."""
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


def rescale(x: torch.Tensor, h: torch.Tensor, skip_rescale: bool) -> torch.Tensor:
    """x + h, divided by sqrt(2) with ``skip_rescale`` so the sum of two unit-variance branches stays unit-variance
    (Song et al. 2021, Appendix H.1, "rescaling all skip connections by 1/sqrt(2)")."""
    return (x + h) / np.sqrt(2.0) if skip_rescale else x + h


# ---------------------------------------------------------------------------------------------------- layers
def timestep_embedding(timesteps: torch.Tensor, embedding_dim: int, max_positions: int = 10000) -> torch.Tensor:
    """The sinusoidal embedding of DDPM (Ho et al. 2020, Appendix B; Vaswani et al. 2017): sin then cos of
    timesteps x 10000^(-i / (d/2 - 1)), in float32, zero-padded to an odd `embedding_dim`."""
    half_dim = embedding_dim // 2
    frequencies = torch.exp(
        torch.arange(half_dim, dtype=torch.float32, device=timesteps.device) * -(math.log(max_positions) / (half_dim - 1))
    )
    emb = timesteps.float()[:, None] * frequencies[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return F.pad(emb, (0, 1)) if embedding_dim % 2 == 1 else emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features sin(2 pi W x), cos(2 pi W x) of the scalar x = log sigma, W ~ N(0, scale^2) fixed
    (Tancik et al. 2020; Song et al. 2021, Appendix H.1). W is not trained, as in score_sde, so score_sde's EMA
    does not hold it."""

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_proj = x[:, None] * self.W[None, :] * 2 * np.pi
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


class NIN(nn.Module):
    """A 1x1 convolution written as a matrix product over channels ("network in network"), weight (in, out)."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


class Combine(nn.Module):
    """Merges the input-image pyramid into the features: a 1x1 convolution of the pyramid, then sum or concat."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        check_choice("progressive_combine", method, COMBINE_METHODS)
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class AttnBlock(nn.Module):
    """Self-attention over all pixels with a residual connection (DDPM's attention block)."""

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0, num_groups: Optional[int] = None):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, num_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(h), self.NIN_1(h), self.NIN_2(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(channels) ** (-0.5))
        w = F.softmax(w.reshape(batch, height, width, height * width), dim=-1).reshape(batch, height, width, height, width)
        h = self.NIN_3(torch.einsum("bhwij,bcij->bchw", w, v))
        return rescale(x, h, self.skip_rescale)


class FIRConv2d(nn.Module):
    """A 3x3 convolution fused with FIR up- or down-sampling (StyleGAN2's ``Conv2d`` with up/down)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, up: bool = False, down: bool = False, resample_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(default_init_(torch.empty(out_ch, in_ch, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up, self.down, self.resample_kernel, self.kernel = up, down, tuple(resample_kernel), kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = fir_ops.upsample_conv_2d(x, self.weight, self.resample_kernel)
        elif self.down:
            x = fir_ops.conv_downsample_2d(x, self.weight, self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel // 2)
        return x + self.bias.reshape(1, -1, 1, 1)


class Upsample(nn.Module):
    """x2 upsampling: nearest (+ 3x3 conv) without FIR, FIR filter (fused with a 3x3 conv) with it."""

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, with_conv: bool = False, fir: bool = False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and not fir:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        elif with_conv:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, up=True, resample_kernel=fir_kernel)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir_ops.upsample_2d(x, self.fir_kernel)
        h = F.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2), mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """x2 downsampling: stride-2 3x3 conv on the (0, 1)-padded input ("SAME" as in TensorFlow) or average
    pooling without FIR; FIR filter (fused with a 3x3 conv) with it."""

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, with_conv: bool = False, fir: bool = False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and not fir:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        elif with_conv:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, down=True, resample_kernel=fir_kernel)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir_ops.downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, stride=2)


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block: GroupNorm, act, conv, + Dense(act(temb)), GroupNorm, act, dropout, conv; a 1x1
    (NIN) or 3x3 shortcut when the width changes."""

    def __init__(
        self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None, conv_shortcut: bool = False,
        dropout: float = 0.1, skip_rescale: bool = False, init_scale: float = 0.0, num_groups: Optional[int] = None,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, num_groups)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, num_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.out_ch, self.conv_shortcut, self.skip_rescale = act, out_ch, conv_shortcut, skip_rescale

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if x.shape[1] != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return rescale(x, h, self.skip_rescale)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN's residual block (Brock et al. 2019), as in NCSN++: the block itself up- or down-samples both its
    branch (after the first activation) and its shortcut (then a 1x1 conv), with the FIR filter or naively."""

    def __init__(
        self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None, up: bool = False, down: bool = False,
        dropout: float = 0.1, fir: bool = False, fir_kernel=(1, 3, 3, 1), skip_rescale: bool = True, init_scale: float = 0.0,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.up, self.down, self.fir, self.fir_kernel = act, up, down, fir, tuple(fir_kernel)
        self.in_ch, self.out_ch, self.skip_rescale = in_ch, out_ch, skip_rescale

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return fir_ops.upsample_2d(x, self.fir_kernel) if self.fir else fir_ops.naive_upsample_2d(x)
        if self.down:
            return fir_ops.downsample_2d(x, self.fir_kernel) if self.fir else fir_ops.naive_downsample_2d(x)
        return x

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.resample(self.act(self.GroupNorm_0(x)))
        x = self.resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return rescale(x, h, self.skip_rescale)


# ---------------------------------------------------------------------------------------------------- helpers
def level_resolutions(sample_size: Union[int, Sequence[int]], num_levels: int) -> Tuple[int, ...]:
    """The feature-map width at each level; score_sde decides where attention goes by comparing it with
    ``attn_resolutions``."""
    width = sample_size if isinstance(sample_size, int) else sample_size[-1]
    return tuple(int(width) // (2**i) for i in range(num_levels))


def batch_timesteps(timestep: Union[torch.Tensor, float, int], sample: torch.Tensor) -> torch.Tensor:
    """`timestep` as a (B,) tensor on the sample's device: a scalar is repeated over the batch."""
    timestep = torch.as_tensor(timestep, device=sample.device)
    if timestep.ndim == 0 or timestep.numel() == 1:
        return timestep.reshape(1).expand(sample.shape[0])
    if timestep.shape != (sample.shape[0],):
        raise ValueError(
            f"timestep must be a scalar or have shape ({sample.shape[0]},) (one per sample); got shape {tuple(timestep.shape)}."
        )
    return timestep


def noise_level_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> torch.Tensor:
    """score_sde's discrete noise levels: num_scales values geometrically spaced from sigma_max down to
    sigma_min (Song & Ermon 2019, Section 4.2), index 0 the largest; computed in float64 then stored in float32."""
    return torch.tensor(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))).float()


def noise_level_index(timesteps: torch.Tensor) -> torch.Tensor:
    """A noise-level index, rounded to the nearest level: score_sde's sampler passes round((1 - t)(N - 1)), and a
    scheduler's ``noise_level_index`` map passes the unrounded (1 - t)(N - 1) (it must stay invertible)."""
    return timesteps.round() if timesteps.is_floating_point() else timesteps


def sigmas_at(sigmas: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """``sigmas[timesteps]`` for (integer-valued) noise-level indices, with a clear error out of range."""
    index = timesteps.long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= sigmas.shape[0]):
        raise ValueError(
            f"With the positional embedding and scale_by_sigma the timestep is a noise-level index in "
            f"[0, {sigmas.shape[0] - 1}]; got values in [{int(index.min())}, {int(index.max())}]."
        )
    return sigmas.to(timesteps.device)[index]


def check_sample_channels(sample: torch.Tensor, in_channels: int, name: str) -> None:
    if sample.ndim != 4 or sample.shape[1] != in_channels:
        raise ValueError(f"{name} expects samples of shape (B, {in_channels}, H, W); got {tuple(sample.shape)}.")


# ---------------------------------------------------------------------------------------------------- the model
class NCSNppModel(ModelMixin, ConfigMixin):
    r"""NCSN++ / DDPM++ (Song et al. 2021, Section 4.4, Appendix H.1), called like a diffusers UNet:
    ``model(sample, timestep).sample``.

    Args:
        sample_size (`int`, defaults to 32): image width (score_sde's ``data.image_size``); sets where the
            attention blocks go. The network is convolutional and runs at any size divisible by
            2^(len(ch_mult) - 1).
        in_channels (`int`, defaults to 3): image channels (``data.num_channels``); also the output channels.
        nf (`int`, defaults to 128): base width.
        ch_mult (`Tuple[int]`, defaults to ``(1, 2, 2, 2)``): width multiplier per resolution level.
        num_res_blocks (`int`, defaults to 4): residual blocks per level (8 in the "deep" variants).
        attn_resolutions (`Tuple[int]`, defaults to ``(16,)``): feature widths with self-attention.
        dropout (`float`, defaults to 0.1): dropout inside the residual blocks.
        resamp_with_conv (`bool`, defaults to `True`): convolutional up/down-sampling in ``ddpm`` blocks.
        conditional (`bool`, defaults to `True`): condition on the noise level / time.
        fir (`bool`, defaults to `True`): FIR-filtered resampling (StyleGAN2) instead of nearest / average.
        fir_kernel (`Tuple[int]`, defaults to ``(1, 3, 3, 1)``): the separable FIR filter.
        skip_rescale (`bool`, defaults to `True`): divide residual sums by sqrt(2).
        resblock_type (`str`, defaults to ``"biggan"``): ``"biggan"`` (resampling residual blocks) or ``"ddpm"``.
        progressive (`str`, defaults to ``"none"``): output pyramid: ``"none"``, ``"output_skip"``, ``"residual"``.
        progressive_input (`str`, defaults to ``"residual"``): input pyramid: ``"none"``, ``"input_skip"``,
            ``"residual"``.
        progressive_combine (`str`, defaults to ``"sum"``): how ``input_skip`` merges: ``"sum"`` or ``"cat"``.
        embedding_type (`str`, defaults to ``"fourier"``): ``"fourier"`` (of log sigma; the timestep is sigma) or
            ``"positional"`` (sinusoidal; the timestep is a time label or noise-level index).
        init_scale (`float`, defaults to 0.0): initial scale of each residual branch's last layer.
        fourier_scale (`float`, defaults to 16.0): standard deviation of the Fourier-feature frequencies.
        scale_by_sigma (`bool`, defaults to `True`): divide the output by sigma (the timestep for ``fourier``,
            ``sigmas[timestep]`` for ``positional``, whose timestep is then a noise-level index, rounded to the
            nearest level), so the network outputs the score.
        nonlinearity (`str`, defaults to ``"swish"``): ``"swish"``, ``"elu"``, ``"relu"`` or ``"lrelu"``.
        centered (`bool`, defaults to `False`): data already in [-1, 1]; if False it is in [0, 1] and mapped to
            [-1, 1] on entry (score_sde's ``data.centered``).
        sigma_min (`float`, defaults to 0.01), sigma_max (`float`, defaults to 50.0), num_scales (`int`, defaults
            to 1000): the discrete noise levels ``sigmas`` (a buffer, as in score_sde) that a positional model
            with ``scale_by_sigma`` indexes.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: Union[int, Tuple[int, int]] = 32,
        in_channels: int = 3,
        nf: int = 128,
        ch_mult: Tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Tuple[int, ...] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        fir: bool = True,
        fir_kernel: Tuple[int, ...] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        embedding_type: str = "fourier",
        init_scale: float = 0.0,
        fourier_scale: float = 16.0,
        scale_by_sigma: bool = True,
        nonlinearity: str = "swish",
        centered: bool = False,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        check_choice("resblock_type", resblock_type, RESBLOCK_TYPES)
        check_choice("progressive", progressive, PROGRESSIVE)
        check_choice("progressive_input", progressive_input, PROGRESSIVE_INPUT)
        check_choice("progressive_combine", progressive_combine, COMBINE_METHODS)
        check_choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        if nf % 4 != 0 or nf < 4:
            raise ValueError(f"nf must be a positive multiple of 4 (GroupNorm uses nf / 4 groups); got {nf}.")
        self.act = act = get_activation(nonlinearity)
        self.register_buffer("sigmas", noise_level_sigmas(sigma_min, sigma_max, num_scales))
        num_levels = len(ch_mult)
        resolutions = level_resolutions(sample_size, num_levels)
        self.level_attention = [resolution in attn_resolutions for resolution in resolutions]
        channels = in_channels
        temb_dim = nf * 4

        def resnet_block(**kwargs):
            common = dict(act=act, dropout=dropout, init_scale=init_scale, skip_rescale=skip_rescale, temb_dim=temb_dim)
            if resblock_type == "ddpm":
                return ResnetBlockDDPM(**common, **kwargs)
            return ResnetBlockBigGAN(**common, fir=fir, fir_kernel=fir_kernel, **kwargs)

        def attn_block(ch):
            return AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        modules = []
        if embedding_type == "fourier":
            modules.append(GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if conditional:
            modules += [dense(embed_dim, temb_dim), dense(temb_dim, temb_dim)]
        # Pyramid resamplers without weights live outside all_modules, as in score_sde (same state-dict keys).
        if progressive == "output_skip":
            self.pyramid_upsample = Upsample(channels, fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(channels, fir=fir, fir_kernel=fir_kernel, with_conv=False)

        modules.append(conv3x3(channels, nf))
        skip_channels = [nf]
        in_ch = nf
        input_pyramid_ch = channels
        for level in range(num_levels):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[level]
                modules.append(resnet_block(in_ch=in_ch, out_ch=out_ch))
                in_ch = out_ch
                if self.level_attention[level]:
                    modules.append(attn_block(in_ch))
                skip_channels.append(in_ch)
            if level != num_levels - 1:
                if resblock_type == "ddpm":
                    modules.append(Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(resnet_block(down=True, in_ch=in_ch))
                if progressive_input == "input_skip":
                    modules.append(Combine(input_pyramid_ch, in_ch, method=progressive_combine))
                    if progressive_combine == "cat":
                        in_ch *= 2
                elif progressive_input == "residual":
                    modules.append(Downsample(input_pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    input_pyramid_ch = in_ch
                skip_channels.append(in_ch)

        in_ch = skip_channels[-1]
        modules += [resnet_block(in_ch=in_ch), attn_block(in_ch), resnet_block(in_ch=in_ch)]

        pyramid_ch = 0
        for level in reversed(range(num_levels)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                modules.append(resnet_block(in_ch=in_ch + skip_channels.pop(), out_ch=out_ch))
                in_ch = out_ch
            if self.level_attention[level]:
                modules.append(attn_block(in_ch))
            if progressive != "none":
                if level == num_levels - 1 or progressive == "output_skip":
                    out = channels if progressive == "output_skip" else in_ch
                    scale = 1.0 if progressive == "residual" else init_scale
                    modules += [group_norm(in_ch), conv3x3(in_ch, out, init_scale=scale)]
                    pyramid_ch = out
                else:
                    modules.append(Upsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = in_ch
            if level != 0:
                if resblock_type == "ddpm":
                    modules.append(Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(resnet_block(in_ch=in_ch, up=True))
        if progressive != "output_skip":
            modules += [group_norm(in_ch), conv3x3(in_ch, channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(modules)

    def forward(
        self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int], return_dict: bool = True
    ) -> Union[UNet2DOutput, Tuple]:
        """The network output at (`sample`, `timestep`).

        Args:
            sample (`torch.Tensor`): (B, C, H, W) noisy images, in [0, 1] unless ``centered``.
            timestep (`torch.Tensor`, `float` or `int`): scalar or (B,): sigma (``fourier``) or the time label /
                noise-level index (``positional``).
            return_dict (`bool`, defaults to `True`): return a `UNet2DOutput` instead of a tuple.
        """
        config = self.config
        check_sample_channels(sample, config.in_channels, type(self).__name__)
        timesteps = batch_timesteps(timestep, sample)
        modules = iter(self.all_modules)
        if config.embedding_type == "fourier":
            if (timesteps <= 0).any():
                raise ValueError("With the Fourier embedding the timestep is the noise level sigma and must be > 0.")
            used_sigmas = timesteps
            temb = next(modules)(torch.log(timesteps))
        else:
            used_sigmas = None
            if config.scale_by_sigma:
                timesteps = noise_level_index(timesteps)
                used_sigmas = sigmas_at(self.sigmas, timesteps)
            temb = timestep_embedding(timesteps, config.nf)
        if config.conditional:
            temb = next(modules)(temb.to(sample.dtype))
            temb = next(modules)(self.act(temb))
        else:
            temb = None

        x = sample if config.centered else 2 * sample - 1.0
        num_levels = len(config.ch_mult)
        input_pyramid = x
        hs = [next(modules)(x)]
        for level in range(num_levels):
            for _ in range(config.num_res_blocks):
                h = next(modules)(hs[-1], temb)
                if self.level_attention[level]:
                    h = next(modules)(h)
                hs.append(h)
            if level != num_levels - 1:
                block = next(modules)
                h = block(hs[-1]) if config.resblock_type == "ddpm" else block(hs[-1], temb)
                if config.progressive_input == "input_skip":
                    input_pyramid = self.pyramid_downsample(input_pyramid)
                    h = next(modules)(input_pyramid, h)
                elif config.progressive_input == "residual":
                    input_pyramid = rescale(next(modules)(input_pyramid), h, config.skip_rescale)
                    h = input_pyramid
                hs.append(h)

        h = hs[-1]
        h = next(modules)(h, temb)
        h = next(modules)(h)
        h = next(modules)(h, temb)

        def norm_act_conv(modules, h):
            norm, conv = next(modules), next(modules)
            return conv(self.act(norm(h)))

        pyramid = None
        for level in reversed(range(num_levels)):
            for _ in range(config.num_res_blocks + 1):
                h = next(modules)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.level_attention[level]:
                h = next(modules)(h)
            if config.progressive != "none":
                if level == num_levels - 1:
                    pyramid = norm_act_conv(modules, h)
                elif config.progressive == "output_skip":
                    pyramid = self.pyramid_upsample(pyramid) + norm_act_conv(modules, h)
                else:
                    pyramid = rescale(next(modules)(pyramid), h, config.skip_rescale)
                    h = pyramid
            if level != 0:
                block = next(modules)
                h = block(h) if config.resblock_type == "ddpm" else block(h, temb)

        if config.progressive == "output_skip":
            h = pyramid
        else:
            h = norm_act_conv(modules, h)
        if config.scale_by_sigma:
            h = h / used_sigmas.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return UNet2DOutput(sample=h) if return_dict else (h,)
