"""Model-output parametrisations: what a network predicts, and how that becomes a score.

With x_t = m(t) x_0 + sigma(t) eps (the perturbation kernel of the SDE) and Tweedie's formula
E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / m, the four usual outputs are equivalent:

- ``score``:        s = grad_x log p_t(x)
- ``epsilon``:      eps = -sigma s                       (Ho et al. 2020; score_sde's VP models)
- ``sample``:       x_0 = (x + sigma^2 s) / m
- ``v_prediction``: v = m eps - sigma x_0                 (Salimans & Ho 2022, with diffusers' alpha_t = m, sigma_t = sigma)

Each is registered in `PREDICTION_TYPES` as a `Parametrization(to_score, from_score)`, functions of
``(output_or_score, x, m, sigma)`` where m and sigma are already broadcast to x's shape.
"""

from typing import Callable, NamedTuple

import torch

from ..registry import Registry
from ..utils import append_dims

PREDICTION_TYPES = Registry("prediction type", "scoresde_diffusers.prediction_types")


class Parametrization(NamedTuple):
    to_score: Callable
    from_score: Callable


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


def _coefficients(sde, x: torch.Tensor, t: torch.Tensor):
    return append_dims(sde.marginal_mean_coeff(t), x.ndim), append_dims(sde.marginal_std(t), x.ndim)


def to_score(sde, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The score grad_x log p_t(x) that `model_output` stands for under `prediction_type` (t has shape (B,))."""
    return PREDICTION_TYPES.get(prediction_type).to_score(model_output, x, *_coefficients(sde, x, t))


def from_score(sde, score: torch.Tensor, x: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The model output under `prediction_type` that stands for `score` (the inverse of `to_score`)."""
    return PREDICTION_TYPES.get(prediction_type).from_score(score, x, *_coefficients(sde, x, t))
