"""Small tensor helpers shared by the SDEs, samplers and models."""

import numbers
from typing import List, Sequence

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


def describe(value, max_entries: int = 6) -> str:
    """A short description of `value` for an error message: small values as they are, a large tensor or array by its
    shape, dtype and range, so that a message never prints a whole tensor."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        tensor = torch.as_tensor(value)
        if tensor.numel() <= max_entries:
            return f"{tensor.tolist()!r}" if tensor.ndim else f"{tensor.item()!r}"
        text = f"a tensor of shape {tuple(tensor.shape)} and dtype {tensor.dtype}"
        if tensor.is_floating_point() or tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            finite = tensor[torch.isfinite(tensor)] if tensor.is_floating_point() else tensor
            if finite.numel():
                text += f" with values in [{finite.min().item():.4g}, {finite.max().item():.4g}]"
        return text
    if isinstance(value, (list, tuple)) and len(value) > max_entries:
        return f"a {type(value).__name__} of {len(value)} values"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def non_finite_summary(tensor: torch.Tensor) -> str:
    """How many entries of `tensor` are NaN or infinite and where the first one is, e.g. ``"3 of 64 entries
    (first at index (0, 5))"``; empty when every entry is finite."""
    bad = ~torch.isfinite(tensor)
    count = int(bad.sum())
    if count == 0:
        return ""
    first = tuple(int(i) for i in bad.nonzero()[0].tolist())
    return f"{count} of {tensor.numel()} entries (first at index {first})"


def check_finite(tensor: torch.Tensor, name: str, hint: str) -> None:
    """Raise a ValueError naming `name`, how many entries are NaN/inf and where, and `hint` (what to check)."""
    summary = non_finite_summary(tensor)
    if summary:
        raise ValueError(f"{name} has NaN or infinite values in {summary}; {hint}")


#: The data a pipeline or ODE scheduler assumes when told none: diffusers' 8-bit images, in [-1, 1].
DEFAULT_DATA_RANGE = (-1.0, 1.0)
DEFAULT_NUM_LEVELS = 256


def check_data_range(data_range: Sequence[float]) -> List[float]:
    """`data_range` as a ``[low, high]`` list of floats (the form saved in model_index.json); a ValueError otherwise."""
    try:
        low, high = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (low, high) of numbers, got {data_range!r}.") from None
    if not low < high:
        raise ValueError(f"data_range must satisfy low < high, got {data_range!r}.")
    return [low, high]


def check_num_levels(num_levels) -> int:
    """`num_levels`, the number of values one data entry takes (256 for 8-bit images), as an int >= 2; a ValueError
    naming what is allowed otherwise."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, numbers.Integral) or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2, the number of values one data entry takes (256 for 8-bit images), got {num_levels!r}.")
    return int(num_levels)


#: What `check_in_range` suggests by default: the image inputs of the conditional pipelines are mapped when given as
#: PIL images, arrays in [0, 1] or uint8.
IMAGE_INPUT_HINT = "Tensors are taken in the data range; pass PIL images, arrays in [0, 1] or uint8 in [0, 255] to have them mapped."


def check_in_range(tensor: torch.Tensor, data_range, name: str, tolerance: float = 1e-4, hint: str = IMAGE_INPUT_HINT) -> None:
    """Raise a ValueError naming `name` when entries of `tensor` are NaN/inf or outside `data_range` (by more than
    `tolerance` of its width), with how many, the range they span and `hint` (what to pass instead)."""
    check_finite(tensor, name, f"pass finite values in the data range {list(data_range)}.")
    low, high = (float(v) for v in data_range)
    slack = tolerance * (high - low)
    outside = (tensor < low - slack) | (tensor > high + slack)
    if outside.any():
        raise ValueError(
            f"{name} must lie in the model's data range {[low, high]}; {int(outside.sum())} of {tensor.numel()} "
            f"entries are outside (values from {float(tensor.min()):.4g} to {float(tensor.max()):.4g}). {hint}"
        )


#: The most steps a grid may have: 500 times the paper's longest sampler (2000 PC steps for VE). Anything above is
#: a typo (10**12 asked the allocator for 8 TB), and beyond a few thousand steps samples no longer change.
MAX_INFERENCE_STEPS = 1_000_000


def check_num_steps(value, name: str = "num_inference_steps") -> int:
    """`value` as an int in [1, `MAX_INFERENCE_STEPS`]; a ValueError naming `name` otherwise."""
    try:
        valid = not isinstance(value, bool) and int(value) == value >= 1
    except (TypeError, ValueError):  # None, strings, ...
        valid = False
    if not valid:
        raise ValueError(f"{name} must be an integer >= 1, got {describe(value)}.")
    if value > MAX_INFERENCE_STEPS:
        raise ValueError(
            f"{name}={value} is more than {MAX_INFERENCE_STEPS:,}: the grid alone would take "
            f"{8 * int(value) / 2**30:.3g} GiB, and beyond a few thousand steps the samples no longer change."
        )
    return int(value)
