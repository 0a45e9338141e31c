"""Variance-preserving SDE (DDPM in continuous time)."""

import torch

from ..registry import SDES
from ..utils import append_dims
from .base import SDE


@SDES.register("vp")
class VPSDE(SDE):
    r"""Variance-preserving SDE, Song et al. (2021) eqs. (11), (32)-(33), Appendix B.

    - beta(t) = beta_min + t (beta_max - beta_min)
    - f(x, t) = -1/2 beta(t) x,  g(t) = sqrt(beta(t))
    - log m(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min,  sigma(t)^2 = 1 - m(t)^2
    - prior N(0, I)

    sigma(t) is computed as sqrt(-expm1(2 log m(t))), which stays accurate as t -> 0 where 1 - m^2 cancels.

    Args:
        beta_min (`float`, defaults to 0.1): beta(0); DDPM's beta_1 times the number of steps N.
        beta_max (`float`, defaults to 20.0): beta(1); DDPM's beta_N times N.
        N (`int`, defaults to 1000): number of discrete steps of the DDPM chain this SDE is the limit of; it only
            sets the Langevin corrector's alpha_i = 1 - beta(t) / N (Algorithm 5).
    """

    name = "vp"
    scheduler_class_names = ("VPSDEScheduler", "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler")

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"{type(self).__name__} needs 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}.")
        if int(N) < 1:
            raise ValueError(f"N must be a positive integer, got {N}.")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.N = int(N)

    def get_config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift(self, x, t):
        return -0.5 * append_dims(self.beta(t), x.ndim) * x

    def diffusion(self, t):
        return self.beta(t).sqrt()

    def log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def log_mean_ratio(self, t, s):
        # log m(t) - log m(s) = -(t - s) ((beta_max - beta_min) (t + s) / 4 + beta_min / 2): t - s is exact for close
        # times, so this keeps full relative precision where the difference of the two logs would cancel.
        return -(t - s) * (0.25 * (t + s) * (self.beta_max - self.beta_min) + 0.5 * self.beta_min)

    def marginal_std(self, t):
        return (-torch.expm1(2 * self.log_mean_coeff(t))).sqrt()

    def _t_from_log_mean_coeff(self, log_mean: torch.Tensor) -> torch.Tensor:
        # Positive root of (beta_max - beta_min)/4 t^2 + beta_min/2 t + log_mean = 0, written as
        # -2c / (b + sqrt(b^2 - 4ac)) so that it is exact for beta_max == beta_min and does not cancel.
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return -2 * log_mean / (b + (b**2 - 4 * a * log_mean).sqrt())

    def t_from_marginal_std(self, std):
        return self._t_from_log_mean_coeff(0.5 * torch.log1p(-(std**2)))

    def transition_var(self, t, s):
        # beta_i = 1 - alpha_bar(t) / alpha_bar(s): DDPM's beta on the grid, without cancellation.
        return -torch.expm1(2 * self.log_mean_ratio(t, s))

    def langevin_alpha(self, t):
        # score_sde's VPSDE.alphas[timestep] = 1 - beta_i with beta_i = beta(t) / N.
        return 1 - self.beta(t) / self.N
