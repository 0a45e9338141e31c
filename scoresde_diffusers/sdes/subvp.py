"""Sub-variance-preserving SDE."""

import torch

from ..registry import SDES
from .vp import VPSDE


@SDES.register("subvp")
class SubVPSDE(VPSDE):
    r"""Sub-VP SDE, Song et al. (2021) eq. (17) and Appendix B.

    The drift of the VP SDE with a smaller diffusion, so that its variance stays below VP's:

    - f(x, t) = -1/2 beta(t) x,  g(t) = sqrt(beta(t) (1 - exp(-2 beta_min t - (beta_max - beta_min) t^2)))
    - m(t) as for VP,  sigma(t) = 1 - m(t)^2 (the std, not the variance)
    - prior N(0, I)

    The Langevin corrector uses VP's alpha_i (same drift, hence the same signal decay per step); score_sde
    crashes there because its sub-VP class has no `alphas`.

    Args:
        beta_min (`float`, defaults to 0.1): beta(0).
        beta_max (`float`, defaults to 20.0): beta(1).
        N (`int`, defaults to 1000): discrete steps behind alpha_i of the Langevin corrector.
    """

    name = "subvp"
    scheduler_class_names = ("SubVPSDEScheduler",)

    def diffusion(self, t):
        # -2 beta_min t - (beta_max - beta_min) t^2 = 4 log m(t)
        return (self.beta(t) * -torch.expm1(4 * self.log_mean_coeff(t))).sqrt()

    def marginal_std(self, t):
        return -torch.expm1(2 * self.log_mean_coeff(t))

    def t_from_marginal_std(self, std):
        return self._t_from_log_mean_coeff(0.5 * torch.log1p(-std))

    def transition_var(self, t, s):
        # With u = m(t)^2, v = m(s)^2: (1-u)^2 - (u/v)(1-v)^2 = (1 - u/v)(1 - u v).
        # u / v - 1 through `log_mean_ratio`, which keeps its precision for s close to t.
        log_sum = self.log_mean_coeff(t) + self.log_mean_coeff(s)
        return torch.expm1(2 * self.log_mean_ratio(t, s)) * torch.expm1(2 * log_sum)
