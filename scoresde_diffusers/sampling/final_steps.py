"""Final steps of a predictor-corrector sampler: the map from the last grid time eps to noise level zero.

The PC grid ends at t = eps, where x_eps = m x_0 + sigma z with sigma = sigma(eps) (for VE sigma(eps) ~ sigma_min:
the VE marginal at t = 0 is still the data smoothed by sigma_min). In the normalised variables y = x / m, noise level
u = sigma / m, the score of y is m s, and every rule below is written in them, so VE (m = 1, u = sigma) and VP /
sub-VP (u = sigma / m) are the same. For a Gaussian mode N(mu, v) in one direction (v = mode variance along it) and
r = u^2 / v, y_eps - mu has variance v (1 + r) and the score is -(y - mu) / (v + u^2); each rule's variance
(docs/benchmarks.md, "The last step of the PC samplers"):

| name | y_0 | Var(y_0) / v | error |
|---|---|---|---|
| ``score_sde`` | Tweedie's mean y + u^2 s_y (score_sde's ``denoise=True``, via the predictor) | 1 / (1 + r) | -r |
| ``keep_noise`` | y (no denoising) | 1 + r | +r |
| ``probability_flow`` | y + u^2 / 2 s_y (Euler step of the probability-flow ODE, u^2 -> 0) | 1 + r^2 / (4 (1 + r)) | +r^2 / 4 |
| ``tweedie_noise`` | y + u^2 s_y + u z (Tweedie's mean plus fresh noise of std u) | 1 + r^2 / (1 + r) | +r^2 |

Among the one-evaluation linear rules y + a u^2 s_y + b u z, the variance is v [1 + r (1 - 2a + b^2) + a^2 r^2 / (1 + r)]:
first-order exact needs b^2 = 2a - 1 (so a >= 1/2), and the second-order error a^2 r^2 / (1 + r) is smallest at
a = 1/2, b = 0: the probability-flow Euler step.

Every final step has the signature ``final_step(sde, x, t, score, noise, predictor) -> (x_0, x_0_mean)`` with `t`
(B,) the last grid time, `score` = grad log p_t(x), `noise` a standard normal tensor like `x` and `predictor` the
scheduler's predictor (a `PREDICTORS` entry); `x_0_mean` is the step without its noise. Register a new one with
``@FINAL_STEPS.register("name")`` and select it with the scheduler's ``final_step`` config key.
"""

import torch

from ..registry import FINAL_STEPS
from ..utils import append_dims


def _levels(sde, x, t):
    """m(t) and sigma(t)^2 shaped to broadcast against `x`."""
    return append_dims(sde.marginal_mean_coeff(t), x.ndim), append_dims(sde.marginal_std(t) ** 2, x.ndim)


@FINAL_STEPS.register("score_sde")
def score_sde_final_step(sde, x, t, score, noise, predictor):
    """score_sde's last step (``denoise=True``): the predictor's noise-free step from eps to t = 0, plus
    sigma(0)^2 s for VE's remaining sigma(0) = sigma_min (zero for VP and sub-VP). In total about Tweedie's mean."""
    t_zero = torch.zeros_like(t)
    _, x_mean = predictor(sde, x, t, t_zero, score, noise)
    x_mean = x_mean + append_dims(sde.marginal_std(t_zero) ** 2, x.ndim) * score
    return x_mean, x_mean


@FINAL_STEPS.register("keep_noise")
def keep_noise_final_step(sde, x, t, score, noise, predictor):
    """No denoising: x_eps / m(eps), which keeps noise of std u = sigma / m."""
    m, _ = _levels(sde, x, t)
    return x / m, x / m


@FINAL_STEPS.register("probability_flow")
def probability_flow_final_step(sde, x, t, score, noise, predictor):
    """An Euler step of the probability-flow ODE from noise level u to 0 in the variable u^2:
    (x + sigma^2 / 2 s) / m. Variance exact to first order in u^2 / v."""
    m, sigma2 = _levels(sde, x, t)
    x_mean = (x + 0.5 * sigma2 * score) / m
    return x_mean, x_mean


@FINAL_STEPS.register("tweedie_noise")
def tweedie_noise_final_step(sde, x, t, score, noise, predictor):
    """Tweedie's mean (x + sigma^2 s) / m plus fresh noise u z, u = sigma / m: the prior-free stand-in for the
    posterior spread (exactly u^2 v / (v + u^2) per Gaussian mode, unknown for a network). Variance exact to first
    order in u^2 / v."""
    m, sigma2 = _levels(sde, x, t)
    x_mean = (x + sigma2 * score) / m
    return x_mean + sigma2.sqrt() / m * noise, x_mean
