"""Adaptive-step solvers of the reverse-time SDE, registered by name in `SDE_SOLVERS`.

``ggf`` is the "Gotta Go Fast" sampler of Jolicoeur-Martineau et al. (2021), "Gotta Go Fast When Generating Data
with Score-Based Models", Algorithm 1: every step makes an Euler-Maruyama proposal x' and an improved-Euler
(stochastic Heun) proposal x'' from the *same* Brownian increment, uses their difference as the local error
estimate in a mixed absolute/relative norm, accepts the step when the error is below 1, and sets the next step
size with the usual controller h <- min(t - eps, safety h E^(-r)). Time runs backwards, from T to eps:

    x'  = x - h [f - g^2 s](x, t) + g(t) sqrt(h) z                          (Euler-Maruyama)
    x~  = x - h [f - g^2 s](x', t - h) + g(t - h) sqrt(h) z
    x'' = (x' + x~) / 2                                                    (improved Euler)
    delta = max(atol, rtol max(|x'|, |x'_prev|))                           (elementwise)
    E = ||(x' - x'') / delta||_2 / sqrt(n)                                 (scaled l2 norm per sample)

accepted: x <- x'' (``extrapolation=True``, the paper's choice) or x', t <- t - h, x'_prev <- x'. Two score
evaluations per attempt, accepted or not. With ``batch_reduce="none"`` (default) every sample has its own time
and step size, as in the paper's code; ``"max"`` uses one step size for the batch, set by its worst sample.
Finished samples are no longer evaluated. `nfe` counts batched score-model calls.

A solver has the signature::

    solver(sde, score_fn, x, *, t_start, t_end, generator=None, **options) -> AdaptiveSDESolution

with ``score_fn(x, t)`` the score at samples `x` and times `t` of shape (B,).
"""

import math
from typing import Callable, NamedTuple, Optional

import torch

from ..registry import Registry
from ..utils import append_dims

SDE_SOLVERS = Registry("SDE solver", "scoresde_diffusers.sde_solvers")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AdaptiveSDESolution(NamedTuple):
    """The final samples, the number of batched score evaluations, and the accepted and rejected step counts."""

    x: torch.Tensor
    nfe: int
    accepted: int
    rejected: int


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}.")


@SDE_SOLVERS.register("ggf")
def gotta_go_fast(
    sde,
    score_fn: ScoreFn,
    x: torch.Tensor,
    *,
    t_start: Optional[float] = None,
    t_end: float = 1e-3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    extrapolation: bool = True,
    batch_reduce: str = "none",
    denoise: bool = True,
    memory: bool = True,
    max_iterations: int = 10_000,
    generator: Optional[torch.Generator] = None,
    progress: Optional[Callable[[float], None]] = None,
) -> AdaptiveSDESolution:
    """Sample the reverse-time SDE from `x` at `t_start` to `t_end` with error-controlled steps (module docstring).

    Args:
        sde (`SDE`): the forward SDE.
        score_fn (`Callable`): ``score_fn(x, t)``, the score at samples `x` and times `t` of shape (B,).
        x (`torch.Tensor`): the samples at `t_start` (a prior draw).
        t_start (`float`, *optional*): start time, ``sde.T`` by default.
        t_end (`float`, defaults to 1e-3): end time eps.
        rtol (`float`, defaults to 0.05): relative tolerance (the paper's eps_rel; 0.01-0.1 in its experiments).
        atol (`float`, defaults to 0.0078): absolute tolerance (the paper's eps_abs = 1/128: about half a pixel
            level of images in [-1, 1]; scale it with your data).
        h_init (`float`, defaults to 0.01): first step size.
        safety (`float`, defaults to 0.9): theta of the step-size controller.
        exponent (`float`, defaults to 0.9): r of the controller, h <- theta h E^(-r).
        extrapolation (`bool`, defaults to `True`): continue from the improved-Euler proposal x'' (else x').
        batch_reduce (`str`, defaults to ``"none"``): ``"none"``: a step size per sample; ``"max"``: one for the
            batch, from the largest error.
        denoise (`bool`, defaults to `True`): finish with Tweedie's step x_0 = (x + sigma^2 s) / m at `t_end`
            (one more evaluation), as score_sde's samplers do.
        memory (`bool`, defaults to `True`): keep the Brownian increment of a rejected step and refine it with a
            Brownian bridge instead of drawing a new one (rejection sampling with memory, Rackauckas & Nie 2017,
            with a one-segment memory). Redrawing, as the paper's Algorithm 1 does, biases the noise towards
            increments that pass the error test: measurably wrong log-densities on sharp data.
        max_iterations (`int`, defaults to 10000): a `RuntimeError` beyond this many attempts.
        generator (`torch.Generator`, *optional*): random number generator of the Brownian increments.
        progress (`Callable`, *optional*): called after every attempt with the fraction of the time span that the
            slowest sample has covered (for progress bars).

    Returns:
        `AdaptiveSDESolution(x, nfe, accepted, rejected)`; accepted / rejected count per-sample steps summed over the batch.
    """
    t_start = float(sde.T if t_start is None else t_start)
    _check_positive("rtol", rtol, allow_zero=True)
    _check_positive("atol", atol, allow_zero=True)
    if rtol == 0 and atol == 0:
        raise ValueError("At least one of rtol and atol must be positive.")
    for name, value in (("h_init", h_init), ("safety", safety), ("exponent", exponent)):
        _check_positive(name, value)
    if not 0 < t_end < t_start:
        raise ValueError(f"Need 0 < t_end < t_start, got t_end={t_end}, t_start={t_start}.")
    if batch_reduce not in ("none", "max"):
        raise ValueError(f"batch_reduce must be 'none' or 'max', got {batch_reduce!r}.")

    x = x.clone()
    batch, dims = x.shape[0], x[0].numel()
    t = torch.full((batch,), t_start, dtype=torch.float64, device=x.device)
    h = torch.full((batch,), min(h_init, t_start - t_end), dtype=torch.float64, device=x.device)
    x_prev = x.clone()  # x'_prev of the relative tolerance: the previous Euler-Maruyama proposal
    # Brownian memory: the part of the path already drawn but not yet stepped over, (length, increment) per sample.
    pending_h = torch.zeros(batch, dtype=torch.float64, device=x.device)
    pending_w = torch.zeros_like(x)
    nfe = accepted = rejected = 0
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    noise_device = x.device if generator is not None and generator.device.type != "cpu" else "cpu"
    for _ in range(max_iterations):
        if not active.any():
            break
        idx = active.nonzero().squeeze(1)
        # Normals for the whole batch, so that a sample's path does not depend on the others' progress.
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device).to(x.device)[idx]
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=noise_device).to(x.device)[idx] if memory else None
        xa, ta, ha = x[idx], t[idx], h[idx]
        # 1. The Brownian increment w over [t - h, t]: fresh, or the pending one (whole, or split by a Brownian bridge).
        w = append_dims(ha.to(x.dtype), x.ndim).sqrt() * z
        rest_h = torch.zeros_like(ha)
        rest_w = torch.zeros_like(xa)
        if memory:
            ph, pw = pending_h[idx], pending_w[idx]
            whole = (ph > 0) & (ha >= ph)
            split = (ph > 0) & (ha < ph)
            ha = torch.where(whole, ph, ha)
            frac = append_dims((ha / ph.clamp_min(1e-300)).to(x.dtype), x.ndim)
            bridge = frac * pw + (frac * append_dims((ph - ha).clamp_min(0).to(x.dtype), x.ndim)).sqrt() * xi
            w = torch.where(append_dims(whole, x.ndim), pw, torch.where(append_dims(split, x.ndim), bridge, w))
            rest_h = torch.where(split, ph - ha, rest_h)
            rest_w = torch.where(append_dims(split, x.ndim), pw - bridge, rest_w)
        ta_x, tn_x = ta.to(x.dtype), (ta - ha).to(x.dtype)
        hx = append_dims(ha.to(x.dtype), x.ndim)
        # 2. Euler-Maruyama proposal x' and the improved-Euler proposal x'' from the same increment.
        drift = sde.reverse_drift(xa, ta_x, score_fn(xa, ta_x))
        x_em = xa - hx * drift + append_dims(sde.diffusion(ta_x), x.ndim) * w
        drift_next = sde.reverse_drift(x_em, tn_x, score_fn(x_em, tn_x))
        x_tilde = xa - hx * drift_next + append_dims(sde.diffusion(tn_x), x.ndim) * w
        x_heun = 0.5 * (x_em + x_tilde)
        nfe += 2
        # 3. Mixed absolute / relative error in the scaled l2 norm.
        delta = torch.maximum(torch.full_like(x_em, atol), rtol * torch.maximum(x_em.abs(), x_prev[idx].abs()))
        error = ((x_em - x_heun) / delta).flatten(1).pow(2).sum(1).div(dims).sqrt().to(torch.float64)
        if batch_reduce == "max":
            error = error.max().expand_as(error)
        ok = error <= 1
        # 4. Accept where the error is small enough; a rejected increment is kept (merged with what follows it).
        take = idx[ok]
        x[take] = (x_heun if extrapolation else x_em)[ok]
        x_prev[take] = x_em[ok]
        t[take] = ta[ok] - ha[ok]
        if memory:
            okd = append_dims(ok, x.ndim)
            pending_h[idx] = torch.where(ok, rest_h, rest_h + ha)
            pending_w[idx] = torch.where(okd, rest_w, rest_w + w)
        accepted += int(ok.sum())
        rejected += int((~ok).sum())
        # 5. Next step size: h <- min(t - eps, theta h E^(-r)).
        remaining = t[idx] - t_end
        h[idx] = torch.minimum(remaining, safety * ha * error.clamp_min(1e-10) ** (-exponent))
        active[idx[remaining <= 1e-12 * max(1.0, t_end)]] = False
        if progress is not None:
            progress(float((t_start - t.max()) / (t_start - t_end)))
    else:
        raise RuntimeError(f"The adaptive SDE solver did not reach t_end={t_end} in {max_iterations} iterations; loosen rtol/atol.")
    t_final = torch.full((batch,), t_end, dtype=x.dtype, device=x.device)
    if denoise:
        score = score_fn(x, t_final)
        nfe += 1
        m = append_dims(sde.marginal_mean_coeff(t_final), x.ndim)
        sigma = append_dims(sde.marginal_std(t_final), x.ndim)
        x = (x + sigma**2 * score) / m
    return AdaptiveSDESolution(x, nfe, accepted, rejected)


gotta_go_fast.adaptive = True


def get_sde_solver(name: str) -> Callable:
    """The SDE solver registered as `name`; a `ValueError` listing the registered ones if there is none."""
    return SDE_SOLVERS.get(name)


__all__ = ["AdaptiveSDESolution", "SDE_SOLVERS", "get_sde_solver", "gotta_go_fast"]
