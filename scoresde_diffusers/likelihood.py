r"""Log-likelihoods by the augmented probability-flow ODE, divergence estimators and image dequantization.

Pure torch (no diffusers import). Sources: Song et al. (2021), Section 4.3 and Appendix D.2; Chen et al. (2018)
and Grathwohl et al. (2019, FFJORD) for the instantaneous change of variables and Hutchinson's estimator
(Hutchinson 1989; Skilling 1989); Song et al. (2021), eq. 13 and Appendix D.2, eqs. 39-40.

**The augmented ODE.** Along a trajectory of dx/dt = f~(x, t), the probability-flow drift
f~ = f - 1/2 g^2 grad log p_t (Song et al. eq. 13), the log-density obeys d log p_t(x_t)/dt = -div f~(x_t, t)
(Chen et al. 2018, Theorem 1). Integrating from t = eps to T,

    log p_eps(x) = log p_T(x_T) + \int_eps^T div f~(x_t, t) dt,                      (Song et al. 2021, eq. 40)

so one ODE solve of the state [x, Delta] with d[x, Delta]/dt = [f~(x, t), div f~(x, t)] from [x, 0] at eps gives
the latent z = x_T and log p_eps(x) = log p_T(z) + Delta(T). The divergence is the trace of the Jacobian of f~:
computed exactly with one backward pass per dimension (`divergence_exact`, for small D) or estimated without bias
by Hutchinson's trace trick tr(J) = E[v^T J v] for probes with E[v v^T] = I (`divergence_hutchinson`).

**The Hutchinson probes are drawn once per solve and held fixed along the trajectory** (FFJORD, score_sde's
`get_likelihood_fn`): the augmented ODE is then a deterministic ODE an adaptive solver can integrate, and the
result is the unbiased estimate v^T (\int J dt) v. With P probes we carry P accumulators Delta_1..Delta_P, one per
probe, so the spread of the P estimates gives the standard error of their mean *at no extra cost*:
stderr = std_p(Delta_p) / sqrt(P). For a symmetric matrix A = \int J dt (the Jacobian of a score is a Hessian,
symmetric, so the probability-flow drift's Jacobian is symmetric for f linear in x) the variance of one probe's
estimate is 2 ||A||_F^2 for Gaussian probes and 2 (||A||_F^2 - sum_i A_ii^2) for Rademacher probes (Hutchinson,
1990), never larger, which is why Rademacher probes are the default (as in score_sde).
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .sampling.ode_solvers import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerances, get_ode_solver, is_adaptive

DriftFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DIVERGENCE_METHODS = ("exact", "hutchinson")
PROBE_TYPES = ("rademacher", "gaussian")


# ---------------------------------------------------------------------------- divergence estimators
def divergence_exact(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), div fn(x)) with the exact divergence sum_i d fn_i / d x_i, shape (B,), by D backward passes.

    `fn` must treat the samples of a batch independently (no batch statistics), so that the gradient of the batch
    sum of output coordinate i is each sample's own row of the Jacobian. Cost: one forward and D backward passes;
    use it for small D (toy data), Hutchinson otherwise.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        flat_out = out.flatten(1)
        div = torch.zeros(x.shape[0], dtype=out.dtype, device=out.device)
        for i in range(flat_out.shape[1]):
            (grad,) = torch.autograd.grad(flat_out[:, i].sum(), x, retain_graph=i < flat_out.shape[1] - 1)
            div = div + grad.flatten(1)[:, i]
    return out.detach(), div.detach()


def divergence_hutchinson(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probes: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), v_p^T J v_p for each probe p), the second of shape (B, P): Hutchinson's unbiased estimates of
    div fn(x) = tr(J), one per probe, from one forward pass and P vector-Jacobian products.

    Args:
        fn: the vector field, treating samples independently.
        x (`torch.Tensor`): (B, ...) points.
        probes (`torch.Tensor`): (P, B, ...) probe vectors with E[v v^T] = I (see `sample_probes`).
    """
    if probes.shape[1:] != x.shape:
        raise ValueError(f"probes must have shape (P, *{tuple(x.shape)}), got {tuple(probes.shape)}.")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        estimates = []
        for p in range(probes.shape[0]):
            (vjp,) = torch.autograd.grad((out * probes[p]).sum(), x, retain_graph=p < probes.shape[0] - 1)
            estimates.append((vjp * probes[p]).flatten(1).sum(1))
    return out.detach(), torch.stack(estimates, dim=1).detach()


def sample_probes(
    num_probes: int,
    shape,
    probe_type: str = "rademacher",
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(num_probes, *shape) Hutchinson probes: Rademacher (+-1 with equal probability) or standard Gaussian.

    Drawn on the generator's device and moved to `device` (diffusers' `randn_tensor` convention), so a CPU
    generator gives the same probes on every device.
    """
    if isinstance(num_probes, bool) or int(num_probes) != num_probes or num_probes < 1:
        raise ValueError(f"num_probes must be an integer >= 1, got {num_probes!r}.")
    if probe_type not in PROBE_TYPES:
        raise ValueError(f"probe_type must be one of {PROBE_TYPES}, got {probe_type!r}.")
    full_shape = (int(num_probes), *shape)
    draw_device = generator.device if generator is not None else device
    if probe_type == "gaussian":
        probes = torch.randn(full_shape, generator=generator, device=draw_device, dtype=dtype)
    else:
        probes = torch.randint(0, 2, full_shape, generator=generator, device=draw_device).to(dtype) * 2 - 1
    return probes.to(device)


# ---------------------------------------------------------------------------- the augmented ODE
@dataclass
class ODELikelihood:
    """Result of `ode_log_likelihood` (all per sample, shape (B,) unless said otherwise).

    Args:
        log_likelihood: log p_eps(x) = prior_logp + delta_logp, in nats.
        prior_logp: log p_T(z) of the latent.
        delta_logp: \\int_eps^T div f~ dt (the mean over probes with Hutchinson).
        latent: z = x_T, shape of x.
        stderr: standard error of `log_likelihood` from the spread of the Hutchinson probes (zeros when exact or
            with a single probe, where it cannot be estimated).
        nfe: number of drift evaluations (each one model call).
    """

    log_likelihood: torch.Tensor
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor
    latent: torch.Tensor
    stderr: torch.Tensor
    nfe: int


def ode_log_likelihood(
    drift: DriftFn,
    prior_logp: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    T: float = 1.0,
    divergence: str = "exact",
    probe_type: str = "rademacher",
    num_probes: int = 1,
    solver: str = "dopri5",
    num_steps: Optional[int] = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    generator: Optional[torch.Generator] = None,
    probes: Optional[torch.Tensor] = None,
    **solver_options,
) -> ODELikelihood:
    """log p_eps(x) by integrating the augmented probability-flow ODE from t = eps to T (module docstring).

    Args:
        drift (`callable`): ``drift(x, t) -> f~(x, t)``, the probability-flow drift, `t` of shape (B,).
        prior_logp (`callable`): ``prior_logp(z) -> (B,)`` log-density of the prior p_T.
        x (`torch.Tensor`): (B, ...) data at time eps, in the model's space.
        eps (`float`): start time (score_sde: 1e-5).
        T (`float`, defaults to 1.0): end time.
        divergence (`str`, defaults to ``"exact"``): ``exact`` (autograd, D backward passes per evaluation) or
            ``hutchinson``.
        probe_type (`str`, defaults to ``"rademacher"``): ``rademacher`` or ``gaussian`` Hutchinson probes.
        num_probes (`int`, defaults to 1): probes per sample, averaged; with more than one the output has a
            standard error.
        solver (`str`, defaults to ``"dopri5"``): a name registered in `ODE_SOLVERS`.
        num_steps (`int`, *optional*): steps of a fixed-step solver on a uniform grid (required for those).
        rtol, atol (`float`, default 1e-5): tolerances of an adaptive solver; positive.
        generator (`torch.Generator`, *optional*): for the probes.
        probes (`torch.Tensor`, *optional*): (P, *x.shape) probes to use instead of drawing them.
        solver_options: passed to the solver.
    """
    check_tolerances(rtol, atol)
    if divergence not in DIVERGENCE_METHODS:
        raise ValueError(f"divergence must be one of {DIVERGENCE_METHODS}, got {divergence!r}.")
    if not 0 < eps < T:
        raise ValueError(f"eps must lie in (0, T={T}), got {eps!r}.")
    ode_solver = get_ode_solver(solver)
    if is_adaptive(ode_solver):
        if num_steps is not None:
            raise ValueError(f"Solver {solver!r} is adaptive: give rtol/atol, not num_steps.")
        t_grid = torch.tensor([eps, T], dtype=x.dtype, device=x.device)
    else:
        if num_steps is None:
            raise ValueError(f"Fixed-step solver {solver!r} needs num_steps.")
        t_grid = torch.linspace(eps, T, int(num_steps) + 1, dtype=x.dtype, device=x.device)

    shape, batch = x.shape, x.shape[0]
    dim = x[0].numel()
    if divergence == "hutchinson":
        if probes is None:
            probes = sample_probes(num_probes, shape, probe_type, generator=generator, device=x.device, dtype=x.dtype)
        elif probes.shape[1:] != shape:
            raise ValueError(f"probes must have shape (P, *{tuple(shape)}), got {tuple(probes.shape)}.")
        probes = probes.to(device=x.device, dtype=x.dtype)
        num_acc = probes.shape[0]
    else:
        num_acc = 1

    def augmented(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # state (B, D + P): the flattened x, then one divergence accumulator per probe.
        x_t = state[:, :dim].reshape(shape)
        t_b = t.expand(batch)
        fn = lambda y: drift(y, t_b)  # noqa: E731
        if divergence == "exact":
            dx, div = divergence_exact(fn, x_t)
            div = div[:, None]
        else:
            dx, div = divergence_hutchinson(fn, x_t, probes)
        return torch.cat([dx.flatten(1), div], dim=1)

    state0 = torch.cat([x.detach().flatten(1), x.new_zeros(batch, num_acc)], dim=1)
    with torch.no_grad():
        state, nfe = ode_solver(augmented, state0, t_grid, rtol=rtol, atol=atol, **solver_options)
    latent = state[:, :dim].reshape(shape)
    deltas = state[:, dim:]
    delta_logp = deltas.mean(dim=1)
    prior = prior_logp(latent)
    if num_acc > 1:
        stderr = deltas.std(dim=1) / math.sqrt(num_acc)
    else:
        stderr = torch.zeros_like(delta_logp)
    return ODELikelihood(prior + delta_logp, prior, delta_logp, latent, stderr, nfe)


# ---------------------------------------------------------------------------- images: dequantization and bits/dim
def dequantize(
    images: torch.Tensor,
    data_range: Tuple[float, float] = (-1.0, 1.0),
    num_bins: int = 256,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform dequantization: integer data u in {0, ..., num_bins - 1} to y = a + (b - a) (u + w) / num_bins,
    w ~ U[0, 1)^D, in the model's range [a, b] = `data_range` (score_sde: ``(x * 255 + rand) / 256``, then the
    data scaler). See `dequantized_log_likelihood` for the change of variables that goes with it."""
    a, b = data_range
    noise = torch.rand(images.shape, generator=generator, device=generator.device if generator is not None else images.device, dtype=dtype)
    v = (images.to(dtype) + noise.to(images.device)) / num_bins
    return a + (b - a) * v


def dequantized_log_likelihood(
    log_p_model: torch.Tensor, dim: int, data_range: Tuple[float, float] = (-1.0, 1.0), num_bins: int = 256
) -> torch.Tensor:
    r"""The variational lower bound on the discrete log-likelihood log P(u) of integer data, in nats, from the model's
    log-density log p(y) at dequantized points y (averaged over dequantization draws by the caller).

    Derivation (Theis et al., 2016; Ho et al., 2019; the evaluation of Song et al., 2021, Table 2). Let u in
    {0..K-1}^D (K = `num_bins`), v = (u + w) / K with w ~ U[0,1)^D, and y = a + (b - a) v the model's input.
    The model's density of v is p_v(v) = p(y) |dy/dv| = p(y) (b - a)^D. The probability the model gives to u is
    the mass of the cube of side 1/K around it, so by Jensen

        log P(u) = log \int_{[0,1)^D} p_v((u + w)/K) K^{-D} dw  >=  E_w[log p(y)] + D log(b - a) - D log K.

    In bits per dimension, -log P(u) / (D ln 2) <= -E_w[log p(y)] / (D ln 2) - log2(b - a) + log2(K): for
    [a, b] = [-1, 1] and K = 256 that is nll_bits(y) - 1 + 8 = nll_bits(y) + 7, score_sde's ``offset = 7 -
    inverse_scaler(-1)``, and for [0, 1] it is nll_bits(y) + 8.
    """
    a, b = data_range
    return log_p_model + dim * (math.log(b - a) - math.log(num_bins))


def bits_per_dim(log_likelihood: torch.Tensor, dim: int) -> torch.Tensor:
    """-log_likelihood / (D ln 2): nats per sample to bits per dimension."""
    return -log_likelihood / (dim * math.log(2))


__all__ = [
    "DIVERGENCE_METHODS",
    "ODELikelihood",
    "PROBE_TYPES",
    "bits_per_dim",
    "dequantize",
    "dequantized_log_likelihood",
    "divergence_exact",
    "divergence_hutchinson",
    "ode_log_likelihood",
    "sample_probes",
]
