"""Model-output parametrisations: what a network predicts, and how that becomes a score.

With x_t = m(t) x_0 + sigma(t) eps (the perturbation kernel of the SDE) and Tweedie's formula
E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / m, the usual outputs are equivalent:

- ``score``:        s = grad_x log p_t(x)
- ``epsilon``:      eps = -sigma s                       (Ho et al. 2020; score_sde's VP models)
- ``sample``:       x_0 = (x + sigma^2 s) / m
- ``v_prediction``: v = m eps - sigma x_0                 (Salimans & Ho 2022, with diffusers' alpha_t = m, sigma_t = sigma)
- ``edm``:          F with x_0 = c_skip x / m + c_out F, input c_in x / m   (Karras et al. 2022, Table 1)

Each is registered in `PREDICTION_TYPES` as a `Parametrization(to_score, from_score, input_scale, loss_weight)`, functions of
``(output_or_score, x, m, sigma)`` where m and sigma are already broadcast to x's shape.
"""

from typing import Callable, NamedTuple, Optional

import torch

from ..registry import Registry
from ..utils import append_dims

PREDICTION_TYPES = Registry("prediction type", "scoresde_diffusers.prediction_types")


class Parametrization(NamedTuple):
    """How a model output becomes a score and back, all functions of ``(..., m, sigma)`` broadcast to x's shape.

    ``input_scale(m, sigma)``: the factor the model's input x_t is multiplied by (None: x_t as it is); schedulers
    apply it in `scale_model_input` and the losses before calling the model. ``loss_weight(m, sigma)``: a factor
    on the denoising score-matching residual |sigma s + z|^2 (None: 1, score_sde's lambda = sigma^2)."""

    to_score: Callable
    from_score: Callable
    input_scale: Optional[Callable] = None
    loss_weight: Optional[Callable] = None


def _v_to_score(v, x, m, sigma):
    # Solve x = m x0 + sigma eps, v = m eps - sigma x0 for eps; valid for any m, sigma (VE and sub-VP too).
    eps = (sigma * x + m * v) / (m**2 + sigma**2)
    return -eps / sigma


def _score_to_v(s, x, m, sigma):
    eps = -sigma * s
    x0 = (x + sigma**2 * s) / m
    return m * eps - sigma * x0


PREDICTION_TYPES.register("score", Parametrization(lambda s, x, m, sigma: s, lambda s, x, m, sigma: s))
PREDICTION_TYPES.register(
    "epsilon", Parametrization(lambda eps, x, m, sigma: -eps / sigma, lambda s, x, m, sigma: -sigma * s)
)
PREDICTION_TYPES.register(
    "sample",
    Parametrization(lambda x0, x, m, sigma: (m * x0 - x) / sigma**2, lambda s, x, m, sigma: (x + sigma**2 * s) / m),
)
PREDICTION_TYPES.register("v_prediction", Parametrization(_v_to_score, _score_to_v))

#: EDM's sigma_data: the standard deviation of data in [-1, 1] that its preconditioning assumes (Karras et al. 2022,
#: section 5; a uniform distribution on [-1, 1] has 0.58, images about 0.5).
SIGMA_DATA = 0.5


def _edm_coefficients(m, sigma):
    """c_skip, c_out, c_in of Karras et al. (2022), Table 1, in the scaled variables y = x / m, u = sigma / m (where
    every linear SDE is the VE SDE in u)."""
    u2 = (sigma / m) ** 2
    norm = (u2 + SIGMA_DATA**2).sqrt()
    return SIGMA_DATA**2 / (u2 + SIGMA_DATA**2), (sigma / m) * SIGMA_DATA / norm, 1 / norm


def _edm_to_score(f, x, m, sigma):
    c_skip, c_out, _ = _edm_coefficients(m, sigma)
    denoised = c_skip * x / m + c_out * f
    return (m * denoised - x) / sigma**2


def _score_to_edm(s, x, m, sigma):
    c_skip, c_out, _ = _edm_coefficients(m, sigma)
    denoised = (x + sigma**2 * s) / m
    return (denoised - c_skip * x / m) / c_out


def _edm_input_scale(m, sigma):
    return _edm_coefficients(m, sigma)[2] / m


def _edm_loss_weight(m, sigma):
    # |sigma s + z|^2 = (c_out m / sigma)^2 |F - F*|^2 = sigma_data^2 / (u^2 + sigma_data^2) |F - F*|^2: this weight
    # makes the residual uniform in the network's output F, EDM's lambda(sigma) (Karras et al. 2022, eq. 8).
    return ((sigma / m) ** 2 + SIGMA_DATA**2) / SIGMA_DATA**2


# EDM's preconditioning (Karras et al. 2022, section 5, Table 1): the network F sees x_t scaled to unit variance and
# predicts D = c_skip x + c_out F, trained uniformly in F. With a VE SDE's raw x_t (std up to sigma_max) and a score
# output divided by sigma, a denoiser error is sigma times the network's, and lambda = sigma^2 lets it be: such a
# model samples well with the noisy predictor-corrector loop but drives the probability-flow ODE off the data.
PREDICTION_TYPES.register("edm", Parametrization(_edm_to_score, _score_to_edm, _edm_input_scale, _edm_loss_weight))


def _coefficients(sde, x: torch.Tensor, t: torch.Tensor):
    return append_dims(sde.marginal_mean_coeff(t), x.ndim), append_dims(sde.marginal_std(t), x.ndim)


def input_scale(sde, x: torch.Tensor, t: torch.Tensor, prediction_type: str):
    """The factor (broadcast to x) a model of `prediction_type` expects its input x_t multiplied by, or None."""
    scale = PREDICTION_TYPES.get(prediction_type).input_scale
    return None if scale is None else scale(*_coefficients(sde, x, t))


def loss_weight(sde, x: torch.Tensor, t: torch.Tensor, prediction_type: str):
    """The factor (shape (B,)) on the score-matching residual of a model of `prediction_type`, or None."""
    weight = PREDICTION_TYPES.get(prediction_type).loss_weight
    return None if weight is None else weight(sde.marginal_mean_coeff(t), sde.marginal_std(t))


def to_score(sde, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The score grad_x log p_t(x) that `model_output` stands for under `prediction_type` (t has shape (B,))."""
    return PREDICTION_TYPES.get(prediction_type).to_score(model_output, x, *_coefficients(sde, x, t))


def from_score(sde, score: torch.Tensor, x: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The model output under `prediction_type` that stands for `score` (the inverse of `to_score`)."""
    return PREDICTION_TYPES.get(prediction_type).from_score(score, x, *_coefficients(sde, x, t))
