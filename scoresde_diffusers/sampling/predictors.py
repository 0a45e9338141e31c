"""Predictors: one step of a numerical solver of the reverse-time SDE (eq. 6) or probability-flow ODE (eq. 13).

Every predictor has the signature ``predictor(sde, x, t, t_next, score, noise) -> (x_next, x_mean)``:
`x` is the sample at time t, `t` and `t_next < t` have shape (B,), `score` is grad log p_t(x), `noise` is a
standard normal tensor like `x`, and `x_mean` is the step without its noise (score_sde's `update_fn`).
Register a new one with ``@PREDICTORS.register("name")``.
"""

from ..registry import PREDICTORS
from ..utils import append_dims


@PREDICTORS.register("euler_maruyama")
def euler_maruyama(sde, x, t, t_next, score, noise):
    """Euler-Maruyama on the reverse-time SDE (eq. 6): x <- x - [f - g^2 s] dt + g sqrt(dt) z, dt = t - t_next."""
    dt = append_dims(t_next - t, x.ndim)  # negative: time runs backwards
    x_mean = x + sde.reverse_drift(x, t, score) * dt
    return x_mean + append_dims(sde.diffusion(t), x.ndim) * (-dt).sqrt() * noise, x_mean


@PREDICTORS.register("reverse_diffusion")
def reverse_diffusion(sde, x, t, t_next, score, noise):
    """The reverse-diffusion predictor (eq. 46-47): x <- x - f_i + G_i^2 s + G_i z with (f_i, G_i) = `sde.discretize`."""
    f, G = sde.discretize(x, t, t_next)
    G = append_dims(G, x.ndim)
    x_mean = x - f + G**2 * score
    return x_mean + G * noise, x_mean


@PREDICTORS.register("ancestral_sampling")
def ancestral_sampling(sde, x, t, t_next, score, noise):
    """Ancestral sampling of the discrete chain (eqs. 8-9 and Appendix F of Song et al.).

    With the exact forward transition x_t = a x_s + b z (s = t_next), Tweedie's formula gives the mean
    E[x_s | x_t] = (x_t + b^2 s) / a, and the noise uses the posterior variance b^2 sigma(s)^2 / sigma(t)^2.
    This is score_sde's VE ancestral step exactly, and DDPM's step with the posterior ("fixed small") variance
    for VP, where score_sde uses beta_i; both agree as the grid is refined.
    """
    a, b = sde.transition(t, t_next)
    a, b2 = append_dims(a, x.ndim), append_dims(b**2, x.ndim)
    x_mean = (x + b2 * score) / a
    std = (b2 * append_dims(sde.marginal_std(t_next) ** 2 / sde.marginal_std(t) ** 2, x.ndim)).sqrt()
    return x_mean + std * noise, x_mean


@PREDICTORS.register("probability_flow_euler")
def probability_flow_euler(sde, x, t, t_next, score, noise):
    """Euler step of the probability-flow ODE (eq. 13): x <- x + [f - 1/2 g^2 s] (t_next - t); deterministic."""
    x_mean = x + sde.reverse_drift(x, t, score, probability_flow=True) * append_dims(t_next - t, x.ndim)
    return x_mean, x_mean


@PREDICTORS.register("none")
def no_predictor(sde, x, t, t_next, score, noise):
    """No predictor: corrector-only sampling (annealed Langevin dynamics of NCSN, Song & Ermon 2019)."""
    return x, x
