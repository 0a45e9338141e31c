"""Correctors: one step of score-based MCMC at a fixed time t (Song et al. 2021, Appendix G, Algorithms 4-5).

Every corrector has the signature ``corrector(sde, x, t, score, noise, snr) -> (x_next, x_mean)`` with `t` of
shape (B,), `score` = grad log p_t(x) and `noise` a standard normal tensor like `x`.
Register a new one with ``@CORRECTORS.register("name")``.
"""

import torch

from ..registry import CORRECTORS
from ..utils import append_dims, batch_norm


def _langevin_update(x, score, noise, step_size):
    step_size = append_dims(step_size, x.ndim)
    x_mean = x + step_size * score
    return x_mean + (2 * step_size).sqrt() * noise, x_mean


@CORRECTORS.register("langevin")
def langevin(sde, x, t, score, noise, snr):
    """Langevin MCMC with the step size set by a signal-to-noise ratio (Algorithms 4-5):
    eps = 2 alpha (snr ||z|| / ||s||)^2, x <- x + eps s + sqrt(2 eps) z.

    As in score_sde and diffusers, ||z|| and ||s|| are averaged over the batch before the ratio is taken. The
    algorithm's per-sample ratio is only stable in high dimension, where ||z|| concentrates at sqrt(D): in low
    dimension ||s|| vanishes at every mode and the per-sample step size explodes there.
    """
    ratio = snr * batch_norm(noise).mean() / batch_norm(score).mean().clamp_min(torch.finfo(x.dtype).tiny)
    return _langevin_update(x, score, noise, 2 * sde.langevin_alpha(t) * ratio**2)


@CORRECTORS.register("annealed_langevin")
def annealed_langevin(sde, x, t, score, noise, snr):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019, Algorithm 1): eps = 2 alpha (snr sigma(t))^2,
    the step size proportional to the noise variance (score_sde's `AnnealedLangevinDynamics`)."""
    return _langevin_update(x, score, noise, 2 * sde.langevin_alpha(t) * (snr * sde.marginal_std(t)) ** 2)


CORRECTORS.register("ald", annealed_langevin)  # score_sde's name for it


@CORRECTORS.register("none")
def no_corrector(sde, x, t, score, noise, snr):
    """No corrector: predictor-only sampling."""
    return x, x
