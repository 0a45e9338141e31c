"""The maths of controllable generation (Song et al. 2021, section 5 and Appendix I), pure torch.

Three conditionings, each entering the samplers as one object handed to the one sampling loop of its kind
(`scoresde_diffusers.conditioning`: `ClassGuidance`, `Imputation`), never through a copy of the loop:

- **Class-conditional sampling** (Song et al. 2021, section 5, eq. 14):
  grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x), the second term the gradient of a time-dependent
  classifier, by autograd (`classifier_log_prob`, `classifier_gradient`). ``guidance_scale`` multiplies it; 1 is
  the exact conditional when the classifier is exact, 0 unconditional sampling.
- **Imputation / inpainting** (Song et al. 2021, Appendix I.2, Algorithm 4): before every
  model evaluation at time t the known part is replaced by a sample of the forward-noised observation,
  x <- mask * x + (1 - mask) * (m(t) y + sigma(t) z) (`impute`), with diffusers' mask convention
  (1 = white = repaint, 0 = keep; `prepare_mask`).
- **Colorization** (Song et al. 2021, Appendix I.3): imputation in a decoupled space. An
  orthogonal 3x3 matrix `COLORIZATION_MATRIX` maps RGB to coordinates whose first one is the gray direction
  (1, 1, 1) / sqrt(3); there the gray coordinate sqrt(3) * mean(r, g, b) is known and the two chroma
  coordinates are generated. Orthogonality keeps the SDE's isotropic noise isotropic, so imputing in the
  decoupled space and mapping back (`decouple`, `couple`) is the same imputation.
"""

import math
from typing import Optional, Sequence

import numpy as np
import PIL.Image
import torch

from .utils import append_dims

# ---------------------------------------------------------------------------------------------- classifier guidance


def classifier_logits(classifier, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """The (B, num_classes) logits of a time-dependent classifier called as ``classifier(sample, timestep)``,
    returning a tensor, a tuple or an output with ``.logits``."""
    output = classifier(sample, timestep)
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, (tuple, list)) else output


def check_class_labels(class_labels: torch.Tensor, num_classes: int) -> None:
    """A ValueError when a label is outside [0, num_classes)."""
    if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) >= num_classes):
        raise ValueError(
            f"class_labels must lie in [0, {num_classes - 1}] for a classifier with {num_classes} classes; "
            f"got values from {int(class_labels.min())} to {int(class_labels.max())}."
        )


def classifier_log_prob(
    classifier, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor, num_classes: Optional[int] = None
) -> torch.Tensor:
    """log p_t(y_i | x_i) per sample, the log-softmax of the classifier's logits at the labels `class_labels` (B,).

    With `num_classes`, a classifier whose logits have another number of classes is a ValueError."""
    logits = classifier_logits(classifier, sample, timestep)
    if logits.ndim != 2 or logits.shape[0] != sample.shape[0]:
        raise ValueError(f"The classifier must return (B, num_classes) logits; got shape {tuple(logits.shape)} for {sample.shape[0]} samples.")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"The classifier returns {logits.shape[1]} classes but its config says num_classes={num_classes}.")
    check_class_labels(class_labels, logits.shape[1])
    log_probs = torch.log_softmax(logits.to(sample.dtype), dim=1)
    return log_probs.gather(1, class_labels.to(log_probs.device, torch.long).reshape(-1, 1)).squeeze(1)


def classifier_gradient(
    classifier, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor, num_classes: Optional[int] = None
) -> torch.Tensor:
    """grad_x log p_t(y | x) of a time-dependent classifier, by autograd (Song et al. 2021, section 5, eq. 14), same shape
    as `sample`; works inside ``torch.no_grad()`` (samplers run there). Samples are independent, so the gradient
    of the sum over the batch is each sample's own gradient."""
    with torch.enable_grad():
        x = sample.detach().requires_grad_(True)
        log_prob = classifier_log_prob(classifier, x, timestep, class_labels, num_classes)
        (gradient,) = torch.autograd.grad(log_prob.sum(), x)
    return gradient.detach()


# ---------------------------------------------------------------------------------------------- imputation


def impute(
    sample: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sde,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """x <- mask * x + (1 - mask) * (m(t) y + sigma(t) z): the known part of `sample` replaced by a sample of
    the forward-noised observation y (score_sde's `get_pc_inpainter`; Song et al. 2021, Appendix I.2).

    Args:
        sample (`torch.Tensor`): x_t, shape (B, ...).
        observation (`torch.Tensor`): y, the data whose known part is kept (its masked-out values are unused).
        mask (`torch.Tensor`): 1 where x is generated (diffusers' white = repaint), 0 where y is known;
            broadcastable to `sample`.
        sde (`SDE` or `ScoreSdeSchedulerMixin`): gives m(t) and sigma(t) through `marginal_prob`.
        t (`torch.Tensor`): continuous times, shape (B,).
        noise (`torch.Tensor`): z ~ N(0, I), shape of `sample`.
    """
    mean, std = sde.marginal_prob(observation.to(sample.dtype), t.to(sample.dtype))
    noised = mean + append_dims(std, sample.ndim) * noise.to(sample.dtype)
    return mask * sample + (1 - mask) * noised


def _check_binary(mask: torch.Tensor, allowed: str) -> None:
    other = ~((mask == 0) | (mask == 1))
    if other.any():
        values = torch.unique(mask[other])
        shown = ", ".join(f"{v:g}" for v in values[:4].tolist()) + (", ..." if values.numel() > 4 else "")
        raise ValueError(
            f"mask_image must hold only {allowed} (1 = repaint, 0 = keep); {int(other.sum())} of {mask.numel()} "
            f"entries are other values ({shown}). Binarize it first, e.g. `(mask >= 0.5).float()`."
        )


def prepare_mask(mask_image, sample_shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """A {0, 1} float mask broadcastable to `sample_shape` (B, C, H, W) or (B, D), diffusers' convention: white (1,
    255) = repaint, black (0) = keep. PIL masks are thresholded at half white, as diffusers' inpainting pipelines
    do (their edges are often anti-aliased); a tensor or array must hold only 0 and 1 (0 and 255 as uint8): any
    other value (0.5, 2) would silently repaint or keep pixels the caller did not mean, so it is a ValueError.

    Accepts a PIL image (or a list of them, one per sample; converted to gray), a numpy array or a tensor of
    shape (H, W), (1, H, W), (C, H, W), (B, 1, H, W), (B, C, H, W), numpy's (H, W, 1) / (B, H, W, 1), or, for
    vector data, (D,) / (B, D). A shape that does not fit the samples is a ValueError.
    """
    shape = tuple(sample_shape)
    if isinstance(mask_image, PIL.Image.Image):
        mask_image = [mask_image]
    if isinstance(mask_image, (list, tuple)) and mask_image and isinstance(mask_image[0], PIL.Image.Image):
        arrays = [np.asarray(m.convert("L"), dtype=np.float32) / 255.0 for m in mask_image]
        mask = torch.from_numpy(np.stack(arrays))[:, None]  # (B, 1, H, W)
    elif isinstance(mask_image, np.ndarray):
        array = mask_image.astype(np.float32) / (255.0 if mask_image.dtype == np.uint8 else 1.0)
        mask = torch.from_numpy(array)
        _check_binary(mask, "0 and 255" if mask_image.dtype == np.uint8 else "0 and 1")
        # numpy images are channels-last: (H, W, 1) / (B, H, W, 1|C) -> channels-first.
        if len(shape) == 4 and mask.ndim >= 3 and mask.shape[-1] in (1, shape[1]) and mask.shape[-2] == shape[3] and mask.shape[-1] != shape[3]:
            mask = mask.movedim(-1, -3)
    elif isinstance(mask_image, torch.Tensor):
        is_uint8 = mask_image.dtype == torch.uint8
        mask = mask_image.detach().float() / (255.0 if is_uint8 else 1.0)
        _check_binary(mask, "0 and 255" if is_uint8 else "0 and 1")
    else:
        raise ValueError(f"mask_image must be a PIL image, a list of them, a numpy array or a torch tensor; got {type(mask_image).__name__}.")
    if len(shape) == 4 and mask.ndim == 2:
        mask = mask[None, None]
    elif len(shape) == 4 and mask.ndim == 3:
        mask = mask[None]
    elif len(shape) == 2 and mask.ndim == 1:
        mask = mask[None]
    fits = mask.ndim == len(shape) and all(m in (1, s) for m, s in zip(mask.shape, shape)) and mask.shape[0] in (1, shape[0])
    if not fits:
        raise ValueError(
            f"mask_image of shape {tuple(mask_image.size[::-1]) if isinstance(mask_image, PIL.Image.Image) else tuple(mask.shape)} "
            f"does not match the image of shape {shape}: give (H, W), (B, 1, H, W) or (B, C, H, W) masks for images, "
            f"(D,) or (B, D) for vectors."
        )
    return (mask >= 0.5).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- colorization

#: The orthogonal matrix of the colorization decoupling (Song et al. 2021, Appendix I.3): row 0 is the gray
#: direction (1, 1, 1) / sqrt(3), rows 1-2 span the chroma plane. ``u = M x`` per pixel (`decouple`), ``x = M^T u``.
COLORIZATION_MATRIX = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [-2 / math.sqrt(6), 1 / math.sqrt(6), 1 / math.sqrt(6)],
        [0.0, 1 / math.sqrt(2), -1 / math.sqrt(2)],
    ],
    dtype=torch.float64,
)


def _check_rgb(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"Colorization works on RGB images of shape (B, 3, H, W); got {tuple(x.shape)}.")


def decouple(x: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) -> decoupled coordinates u = M x per pixel; u[:, 0] = sqrt(3) * mean(r, g, b) is the gray part."""
    _check_rgb(x)
    return torch.einsum("ij,bjhw->bihw", COLORIZATION_MATRIX.to(x.device, x.dtype), x)


def couple(u: torch.Tensor) -> torch.Tensor:
    """The inverse of `decouple`: x = M^T u (M is orthogonal)."""
    _check_rgb(u)
    return torch.einsum("ji,bjhw->bihw", COLORIZATION_MATRIX.to(u.device, u.dtype), u)


def gray_to_decoupled(gray: torch.Tensor) -> torch.Tensor:
    """A (B, 3, H, W) decoupled observation whose gray coordinate is sqrt(3) * `gray` (B, 1, H, W) and whose
    chroma coordinates are 0 (unused: they are generated)."""
    return torch.cat([math.sqrt(3) * gray, torch.zeros_like(gray).expand(-1, 2, -1, -1)], dim=1)


def to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) gray values from a 1-channel image, or the channel mean of a 3-channel (gray) image; any other
    channel count is a ValueError."""
    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise ValueError(
            f"Colorization needs grayscale images of shape (B, 1, H, W) (or a 3-channel gray image (B, 3, H, W)); "
            f"got shape {tuple(image.shape)}."
        )
    return image if image.shape[1] == 1 else image.mean(dim=1, keepdim=True)


def colorization_mask(shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The decoupled-space mask of colorization: 0 (known) on the gray coordinate, 1 (generated) on the chroma ones."""
    mask = torch.ones((1, 3, 1, 1), dtype=dtype, device=device)
    mask[:, 0] = 0
    return mask.expand(1, 3, *shape[2:]) if len(shape) == 4 else mask


__all__ = [
    "COLORIZATION_MATRIX",
    "check_class_labels",
    "classifier_gradient",
    "classifier_log_prob",
    "classifier_logits",
    "colorization_mask",
    "couple",
    "decouple",
    "gray_to_decoupled",
    "impute",
    "prepare_mask",
    "to_grayscale",
]
