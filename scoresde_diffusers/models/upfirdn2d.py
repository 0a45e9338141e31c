"""FIR up/down-sampling in plain torch: upfirdn2d and the StyleGAN2 resampling ops built on it.

NCSN++ (Song et al. 2021, Appendix H.1: "anti-aliasing based on Finite Impulse Response (FIR)") resamples with
the FIR filter [1, 3, 3, 1] as StyleGAN2 does (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", Section 2 and Appendix B). score_sde_pytorch runs these through a CUDA extension (`op/upfirdn2d`)
that must be compiled before the model module can even be imported; here everything is ordinary torch ops, so
the networks run (and are differentiable) on any device.

upfirdn2d(x, k, up, down, pad) = downsample_by(down)(conv2d(pad(zero_upsample_by(up)(x)), flip(k))): each
channel is upsampled by inserting ``up - 1`` zeros after every pixel, padded by ``pad = (p0, p1)`` on both axes
(negative values crop), correlated with the flipped 2-D kernel (that is, convolved with the kernel), and every
``down``-th pixel is kept.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: Tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), FIR-filter and downsample a batch of images `x` of shape (N, C, H, W)."""
    batch, channels, height, width = x.shape
    if up > 1:
        upsampled = x.new_zeros(batch, channels, height * up, width * up)
        upsampled[:, :, ::up, ::up] = x
        x = upsampled
    pad0, pad1 = pad
    x = F.pad(x, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    x = x[:, :, max(-pad0, 0) : x.shape[2] - max(-pad1, 0), max(-pad0, 0) : x.shape[3] - max(-pad1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)[None, None].repeat(channels, 1, 1, 1)
    x = F.conv2d(x, weight, groups=channels)
    return x[:, :, ::down, ::down]


def setup_kernel(kernel: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """The 2-D filter of a separable 1-D FIR `kernel`, normalised to sum to `gain` (computed in float32, as
    StyleGAN2 and score_sde do, so that the filter taps are bit-identical to theirs)."""
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    k /= np.sum(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"A FIR kernel must be 1-D or square 2-D, got shape {k.shape}.")
    return torch.from_numpy(k * np.float32(gain))


def upsample_2d(x: torch.Tensor, kernel: Optional[Sequence[float]] = None, factor: int = 2) -> torch.Tensor:
    """Upsample by `factor` with the FIR `kernel` (default: nearest neighbour); constant images stay constant."""
    k = setup_kernel([1] * factor if kernel is None else kernel, gain=factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, kernel: Optional[Sequence[float]] = None, factor: int = 2) -> torch.Tensor:
    """Downsample by `factor` with the FIR `kernel` (default: average pooling)."""
    k = setup_kernel([1] * factor if kernel is None else kernel)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, weight: torch.Tensor, kernel: Optional[Sequence[float]] = None, factor: int = 2) -> torch.Tensor:
    """`upsample_2d` followed by a 'same' convolution with `weight` (O, I, K, K), fused as StyleGAN2 does: a
    transposed convolution with stride `factor`, then one FIR pass.

    score_sde_pytorch's port of this op reverses the weight with ``w[..., ::-1, ::-1]``, which PyTorch rejects,
    so the NCSN++ paths that use it (FIR with ``resblock_type="ddpm"`` upsampling, or ``progressive="residual"``)
    cannot run there; this follows StyleGAN2's definition (the spatially flipped kernel).
    """
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if kernel_h != kernel_w:
        raise ValueError(f"upsample_conv_2d needs a square convolution kernel, got {kernel_h}x{kernel_w}.")
    k = setup_kernel([1] * factor if kernel is None else kernel, gain=factor**2)
    p = (k.shape[0] - factor) - (kernel_w - 1)
    # A transposed convolution with the flipped, in/out-swapped kernel is the adjoint of the 'same' convolution.
    w = torch.flip(weight, [2, 3]).transpose(0, 1)
    x = F.conv_transpose2d(x, w, stride=factor)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, weight: torch.Tensor, kernel: Optional[Sequence[float]] = None, factor: int = 2) -> torch.Tensor:
    """A convolution with `weight` (O, I, K, K) followed by `downsample_2d`, fused: one FIR pass, then a
    strided convolution (StyleGAN2)."""
    kernel_w = weight.shape[-1]
    k = setup_kernel([1] * factor if kernel is None else kernel)
    p = (k.shape[0] - factor) + (kernel_w - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling by `factor`."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Average pooling over `factor` x `factor` blocks."""
    return F.avg_pool2d(x, factor, stride=factor)
