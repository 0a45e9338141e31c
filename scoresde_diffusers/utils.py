"""Small tensor helpers shared by the SDEs, samplers and models."""

import torch


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to `x` until it has `ndim` dimensions (k-diffusion's helper).

    Used to broadcast per-sample quantities of shape (B,) against data of any shape (B, D) or (B, C, H, W),
    so nothing in the library assumes images.
    """
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"Cannot broadcast a tensor with {x.ndim} dimensions to {ndim} dimensions.")
    return x.reshape(x.shape + (1,) * missing)


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first (batch) one."""
    return x.flatten(1).sum(dim=1)


def batch_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample in a batch, over all non-batch dimensions."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to do sampler arithmetic in: half precisions are upcast to float32, float64 stays float64."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32
