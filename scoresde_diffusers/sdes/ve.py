"""Variance-exploding SDE (SMLD / NCSN in continuous time)."""

import math

import torch

from ..registry import SDES
from .base import SDE


@SDES.register("ve")
class VESDE(SDE):
    r"""Variance-exploding SDE, Song et al. (2021) eqs. (9) and (30), Appendix B.

    - sigma(t) = sigma_min (sigma_max / sigma_min)^t
    - f(x, t) = 0,  g(t) = sqrt(d sigma(t)^2 / dt) = sigma(t) sqrt(2 log(sigma_max / sigma_min))
    - p_0t(x_t | x_0) = N(x_0, sigma(t)^2 I)  (m(t) = 1); prior N(0, sigma_max^2 I)

    As in the paper and score_sde, sigma(0) = sigma_min is not 0: time 0 is the data smoothed by sigma_min.

    Args:
        sigma_min (`float`, defaults to 0.01): noise level at t = 0.
        sigma_max (`float`, defaults to 50.0): noise level at t = 1 (the paper uses 50 for CIFAR-10, 348 or
            1348 for larger images, by the largest pairwise distance of the data).
    """

    name = "ve"
    # NCSN++ models predict the score from sigma(t) (it divides its output by sigma); score_sde stops VE at 1e-5.
    default_prediction_type = "score"
    default_timestep_type = "sigma"
    default_sampling_eps = 1e-5
    scheduler_class_names = ("VESDEScheduler", "ScoreSdeVeScheduler")

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VE SDE needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def get_config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.marginal_std(t) * math.sqrt(2 * self._log_ratio)

    def log_mean_coeff(self, t):
        return torch.zeros_like(t)

    def marginal_std(self, t):
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def t_from_marginal_std(self, std):
        return torch.log(std / self.sigma_min) / self._log_ratio

    def transition_var(self, t, s):
        # sigma_t^2 - sigma_s^2 = -sigma_t^2 expm1(2 (s - t) log(sigma_max / sigma_min)), exact for s close to t.
        return -(self.marginal_std(t) ** 2) * torch.expm1(2 * (s - t) * self._log_ratio)

    def discretize(self, x, t, t_next):
        # SMLD's chain (eq. 8): no drift, G_i = sqrt(sigma_i^2 - sigma_{i-1}^2).
        return torch.zeros_like(x), self.transition_var(t, t_next).sqrt()
