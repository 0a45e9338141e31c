"""Exponential-integrator solvers of the probability-flow ODE: DPM-Solver++ multistep (orders 1-3) with an
optional UniPC-style corrector, EDM's Heun sampler, and a high-order last step to zero noise.

All SDEs in one ODE. With m = m(t), sigma = sigma(t), u = sigma / m (the noise level of y = x / m) and the denoiser
D(x, t) = E[x_0 | x_t = x] = (x + sigma^2 grad log p_t(x)) / m (Tweedie), the probability-flow ODE (Song et al.
2021, eq. 13) of every linear SDE, VE, VP and sub-VP alike, becomes (Karras et al. 2022, eq. 4 and App. B)

    dy/du = (y - D(m y, t)) / u.

Its exact solution from u_s to u_t, written in lambda = -log u (half of `SDE.log_snr`), is the variation of
constants formula of DPM-Solver++ (Lu et al. 2022b, eq. 9):

    y_t = (u_t / u_s) y_s + int_{lambda_s}^{lambda_t} exp(-(lambda_t - lambda)) D(lambda) dlambda.

A *k-step* solver replaces D by the polynomial in lambda through the last k denoiser values and integrates it
exactly (with phi-functions), which is DPM-Solver++(kM); k = 1 is DDIM. With ``corrector=True`` the value D at the
new point, which the next step needs anyway, is used once more to redo the step with k + 1 nodes (the UniC
corrector of UniPC, Zhao et al. 2023): one order more, no extra evaluation.

Best last step. Most samplers stop at a small time eps and leave the data smoothed by sigma(eps) (for VE by
sigma_min), or add one Tweedie step D(x_eps) (score_sde's ``denoise=True``). Here, with ``denoise_to_zero=True``,
the last step goes to u = 0 exactly: as u_t -> 0 the formula above tends to D extrapolated to u = 0, so the
final state is the polynomial through the last k denoiser values, in u^2 (along a trajectory D = y(0) + O(u^2)),
evaluated at 0. It costs one evaluation at ``t[-1]`` (k = 1 is the Tweedie step).

Solver signature. These are `ODE_SOLVERS` entries with the registry's signature plus two keywords::

    solver(func, y0, t, *, rtol, atol, callback=None, sde, denoiser=None, **options) -> ODESolution(y, nfe)

- `sde` (`SDE`, required): gives m(t), sigma(t) and log-SNR.
- `denoiser(t, x) -> x_0` (*optional*): the model's data prediction at a 0-dim time `t`. Without it, D is
  recovered from the vector field ``func`` (the probability-flow drift v = f x - g^2 s / 2, so
  s = 2 (f x - v) / g^2), which costs nothing extra; a pipeline should pass the denoiser directly.

Each such solver has the attribute ``requires_sde = True``, so a pipeline knows to pass those keywords.
`nfe` counts denoiser (or `func`) calls. Registered: ``dpm_solver_1``, ``dpm_solver_2m``, ``dpm_solver_3m``
(DPM-Solver++(kM)), ``unipc_2m``, ``unipc_3m`` (with corrector) and ``edm_heun``.
"""

import math
from functools import partial
from typing import Callable, List, Optional

import torch

from ..registry import ODE_SOLVERS
from ..utils import append_dims
from .ode_solvers import ODESolution, StepCallback, check_tolerances

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- the denoiser
class _CountedDenoiser:
    """Wraps a denoiser, or builds one from the probability-flow vector field, and counts its calls."""

    def __init__(self, sde, func: Optional[Callable], denoiser: Optional[Denoiser]):
        if denoiser is None and func is None:
            raise ValueError("Give a denoiser or a probability-flow vector field.")
        self.sde, self.func, self.denoiser = sde, func, denoiser
        self.nfe = 0

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.denoiser is not None:
            return self.denoiser(t, x)
        # Invert the probability-flow drift v = f(x, t) - g^2 s / 2 for the score, then Tweedie's formula.
        v = self.func(t, x)
        tb = t.expand(x.shape[0])
        g2 = append_dims(self.sde.diffusion(tb) ** 2, x.ndim)
        score = 2 * (self.sde.drift(x, tb) - v) / g2
        m = append_dims(self.sde.marginal_mean_coeff(tb), x.ndim)
        sigma = append_dims(self.sde.marginal_std(tb), x.ndim)
        return (x + sigma**2 * score) / m


def _check_sde(sde, name: str) -> None:
    if sde is None:
        raise ValueError(
            f"ODE solver {name!r} is an exponential integrator and needs the SDE: call it through "
            f"`scheduler.solve_probability_flow(func, x, t, {name!r}, denoiser=...)`, which passes the scheduler's SDE to "
            f"solvers with `requires_sde` (as `ScoreSdeODEPipeline` does), or pass sde=... yourself."
        )


def _schedule(sde, t: torch.Tensor):
    """m(t), and lambda = -log(sigma / m) of the grid, in float64 on the CPU."""
    t64 = t.detach().to("cpu", torch.float64)
    return sde.marginal_mean_coeff(t64), 0.5 * sde.log_snr(t64)


# ---------------------------------------------------------------------------- quadrature weights
def exponential_weights(nodes: torch.Tensor, h: float) -> torch.Tensor:
    """Weights w_j with int_0^h exp(-tau) P(h - tau) dtau = sum_j w_j P(delta_j) for every polynomial P of degree
    < len(nodes), where delta_j = lambda_j - lambda_s are the node offsets (float64, any sign).

    In the Taylor basis P = sum_k c_k delta^k the integral is sum_k c_k k! psi_k(h) with
    psi_k(h) = int_0^h exp(-tau) (h - tau)^k / k! dtau, psi_0 = 1 - e^{-h}, psi_k = h^k / k! - psi_{k-1}
    (the phi-functions of DPM-Solver, Lu et al. 2022a, eq. 3.5); then w = V^{-T} b with V_jk = delta_j^k.
    """
    p = nodes.numel()
    psi = [-math.expm1(-h)]
    for k in range(1, p):
        psi.append(h**k / math.factorial(k) - psi[-1])
    b = torch.tensor([math.factorial(k) * psi[k] for k in range(p)], dtype=torch.float64)
    vandermonde = nodes[:, None] ** torch.arange(p, dtype=torch.float64)[None]
    return torch.linalg.solve(vandermonde.T, b)


def extrapolation_weights(nodes: torch.Tensor) -> torch.Tensor:
    """Lagrange weights w_j with P(0) = sum_j w_j P(nodes_j) for polynomials of degree < len(nodes)."""
    weights = torch.ones_like(nodes)
    for j in range(nodes.numel()):
        for l in range(nodes.numel()):
            if l != j:
                weights[j] *= -nodes[l] / (nodes[j] - nodes[l])
    return weights


def _combine(weights: torch.Tensor, values: List[torch.Tensor]) -> torch.Tensor:
    out = values[0] * float(weights[0])
    for w, v in zip(weights[1:], values[1:]):
        out = out + v * float(w)
    return out


# ---------------------------------------------------------------------------- the steppers
class MultistepExponentialIntegrator:
    """DPM-Solver++(kM) with an optional UniC corrector, one step at a time along one trajectory.

    The state of the multistep method (the last k denoiser values and their lambdas) lives here, so that the
    solver function `dpm_solver_multistep` and the scheduler `ScoreSdeDPMSolverMultistepScheduler` run the same
    maths. Call ``step(i, x, d)`` for i = 0, 1, ... in order, with x the state at ``t[i]`` and d = D(x, t[i]).

    The corrector (UniC, Zhao et al. 2023, sec. 3.2) redoes the previous step with d as an extra node. Both the
    predictor and the corrector are exp(-h) y_prev + (weighted sum of denoiser values), so the correction is the
    *difference* of the two weighted sums and does not depend on y_prev: it is added to the state that is passed
    in. A state edited between steps (inpainting's replacement, a pipeline callback) keeps its edit and is
    corrected all the same.

    Args:
        sde (`SDE`): the forward SDE (m(t) and the log-SNR).
        t (`torch.Tensor`): the grid t_0, ..., t_n (either direction, strictly monotone).
        order (`int`, defaults to 2): k, the number of denoiser values in a step (1, 2 or 3).
        corrector (`bool`, defaults to `False`): apply UniC (order k + 1, no extra evaluation).
        final_order (`int`, *optional*): number of denoiser values extrapolated to zero noise by ``step(n, ...)``.
    """

    def __init__(self, sde, t: torch.Tensor, order: int = 2, corrector: bool = False, final_order: Optional[int] = None):
        if isinstance(order, bool) or int(order) != order or not 1 <= order <= 3:
            raise ValueError(f"order must be 1, 2 or 3, got {order!r}.")
        final_order = order if final_order is None else final_order
        if isinstance(final_order, bool) or int(final_order) != final_order or not 1 <= final_order <= 4:
            raise ValueError(f"final_order must be between 1 and 4, got {final_order!r}.")
        _check_monotone(t)
        self.order, self.corrector, self.final_order = int(order), bool(corrector), int(final_order)
        self.m, self.lam = _schedule(sde, t)
        self.n = t.numel() - 1
        self._d: List[torch.Tensor] = []  # denoiser values, newest last
        self._lam: List[float] = []
        self._predicted = None  # (the weighted sum of the last predictor step, its step size h, its order k)
        self._next = 0

    def step(self, i: int, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """The state at ``t[i + 1]`` from the state `x` at ``t[i]`` and its denoiser value `d`; for ``i = n`` (one
        more evaluation at the last time) the sample at zero noise, the denoiser extrapolated to u = 0."""
        if i != self._next or i > self.n:
            raise ValueError(f"Steps must be taken in order 0..{self.n}: expected step {self._next}, got {i}.")
        self._next = i + 1
        y = x / float(self.m[i])
        self._d.append(d)
        self._lam.append(float(self.lam[i]))
        if self.corrector and self._predicted is not None:
            predicted, h, k = self._predicted
            k = min(k + 1, len(self._d))
            nodes = torch.tensor(self._lam[-k:], dtype=torch.float64) - self._lam[-2]
            y = y + (_combine(exponential_weights(nodes, h), self._d[-k:]) - predicted)
        if i == self.n:
            # Last step to zero noise: along a trajectory D = y(0) + O(u^2), so extrapolate D to u = 0 in u^2.
            k = min(self.final_order, len(self._d))
            nodes = torch.exp(-2 * torch.tensor(self._lam[-k:], dtype=torch.float64))
            return _combine(extrapolation_weights(nodes), self._d[-k:])
        k = min(self.order, len(self._d))
        h = float(self.lam[i + 1]) - self._lam[-1]
        nodes = torch.tensor(self._lam[-k:], dtype=torch.float64) - self._lam[-1]
        predicted = _combine(exponential_weights(nodes, h), self._d[-k:])
        self._predicted = (predicted, h, k)
        if len(self._d) > 3:  # the corrector of order 3 + 1 needs the last four values
            self._d.pop(0), self._lam.pop(0)
        return (math.exp(-h) * y + predicted) * float(self.m[i + 1])


class HeunIntegrator:
    """EDM's Heun step on dy/du = (y - D) / u (Karras et al. 2022, Algorithm 1 without churn), split into its two
    evaluations so that a scheduler can take them as two calls of ``step``; shared with `edm_heun`.

    ``predict(i, x, d)`` is the Euler step from ``t[i]`` to ``t[i + 1]`` (d = D(x, t[i])); ``correct(i, x_euler,
    d_next)`` averages the two slopes (d_next = D(x_euler, t[i + 1])). With ``to_zero=True`` the grid gets a last
    node at zero noise, u = 0, reached by the Euler step alone: y + (0 - u) (y - D) / u = D, EDM's last step.
    """

    def __init__(self, sde, t: torch.Tensor, to_zero: bool = False):
        _check_monotone(t)
        m, lam = _schedule(sde, t)
        self.m, self.u = m.tolist(), torch.exp(-lam).tolist()
        if to_zero:
            self.m.append(1.0)  # at zero noise x = y = x_0
            self.u.append(0.0)
        self._y = self._slope = None

    def predict(self, i: int, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if self.u[i + 1] == 0.0:
            return d
        y = x / self.m[i]
        self._y, self._slope = y, (y - d) / self.u[i]
        return (y + (self.u[i + 1] - self.u[i]) * self._slope) * self.m[i + 1]

    def correct(self, i: int, x_euler: torch.Tensor, d_next: torch.Tensor) -> torch.Tensor:
        if self._y is None:
            raise ValueError("Heun's correction needs its Euler prediction first (call `predict`).")
        slope_next = (x_euler / self.m[i + 1] - d_next) / self.u[i + 1]
        y = self._y + 0.5 * (self.u[i + 1] - self.u[i]) * (self._slope + slope_next)
        self._y = self._slope = None
        return y * self.m[i + 1]


def _check_monotone(t: torch.Tensor) -> None:
    if t.ndim != 1 or t.numel() < 1:
        raise ValueError(f"The time grid must be a non-empty 1-D tensor, got shape {tuple(t.shape)}.")
    steps = (t[1:] - t[:-1]).detach().cpu()
    if not (torch.all(steps > 0) or torch.all(steps < 0)):
        raise ValueError("The time grid must be strictly increasing or strictly decreasing.")


# ---------------------------------------------------------------------------- DPM-Solver++ / UniPC
def dpm_solver_multistep(
    func,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    callback: Optional[StepCallback] = None,
    sde=None,
    denoiser: Optional[Denoiser] = None,
    order: int = 2,
    corrector: bool = False,
    denoise_to_zero: bool = False,
    final_order: Optional[int] = None,
) -> ODESolution:
    """DPM-Solver++(kM) in data-prediction form (Lu et al. 2022b, Algorithm 2 generalised to order k by exact
    integration of the interpolating polynomial in lambda), with an optional UniC corrector (Zhao et al. 2023).
    The steps are those of `MultistepExponentialIntegrator`.

    Args:
        func (`Callable`): the probability-flow vector field ``func(t, x)``; only used when `denoiser` is None.
        y0 (`torch.Tensor`): x at ``t[0]``.
        t (`torch.Tensor`): 1-D monotone grid of times (decreasing to sample, increasing to encode).
        rtol, atol (`float`): checked and ignored (fixed-step solver).
        callback (`Callable`, *optional*): ``callback(i, t_next, x)`` after every step; may return a replacement.
        sde (`SDE`): the forward SDE.
        denoiser (`Callable`, *optional*): ``denoiser(t, x) -> x_0`` (see the module docstring).
        order (`int`, defaults to 2): k, the number of denoiser values in each step (1, 2 or 3; the first steps
            use fewer, as DPM-Solver's warm-up).
        corrector (`bool`, defaults to `False`): redo each step with the denoiser at its end point (UniC).
        denoise_to_zero (`bool`, defaults to `False`): after ``t[-1]``, one more evaluation and a last step to
            zero noise (sigma = 0, x = y); the result is then the sample at noise level 0, not at ``t[-1]``.
        final_order (`int`, *optional*): number of denoiser values extrapolated to zero noise (defaults to `order`).

    Returns:
        `ODESolution(y, nfe)`: nfe is ``len(t) - 1``, plus one with `denoise_to_zero`.
    """
    check_tolerances(rtol, atol)
    _check_sde(sde, "dpm_solver")
    if t.numel() < 2:
        raise ValueError("The time grid needs at least 2 times.")
    integrator = MultistepExponentialIntegrator(sde, t, order=order, corrector=corrector, final_order=final_order)
    if denoise_to_zero and not bool(t[-1] < t[0]):
        raise ValueError("denoise_to_zero needs a decreasing grid (sampling, not encoding).")
    D = _CountedDenoiser(sde, func, denoiser)
    x_dtype = y0.dtype
    x = y0
    n = t.numel() - 1
    for i in range(n + (1 if denoise_to_zero else 0)):
        x = integrator.step(i, x, D(t[i], x.to(x_dtype)))
        if callback is not None and i < n:
            replaced = callback(i, t[i + 1], x.to(x_dtype))
            x = x if replaced is None else replaced.to(x.dtype)
    return ODESolution(x.to(x_dtype), D.nfe)


def _registered(name: str, doc: str, **preset):
    solver = partial(dpm_solver_multistep, **preset)
    solver.__name__ = solver.__qualname__ = name
    solver.__doc__ = doc
    solver.adaptive = False
    solver.requires_sde = True
    return ODE_SOLVERS.register(name, solver)


dpm_solver_1 = _registered("dpm_solver_1", "DPM-Solver++(1) = DDIM: order 1, one evaluation per step.", order=1)
dpm_solver_2m = _registered("dpm_solver_2m", "DPM-Solver++(2M): two-step, order 2, one evaluation per step.", order=2)
dpm_solver_3m = _registered("dpm_solver_3m", "DPM-Solver++(3M): three-step, order 3, one evaluation per step.", order=3)
unipc_2m = _registered("unipc_2m", "DPM-Solver++(2M) + UniC corrector: order 3, one evaluation per step.", order=2, corrector=True)
unipc_3m = _registered("unipc_3m", "DPM-Solver++(3M) + UniC corrector: order 4, one evaluation per step.", order=3, corrector=True)


# ---------------------------------------------------------------------------- EDM's Heun sampler
def edm_heun(
    func,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    callback: Optional[StepCallback] = None,
    sde=None,
    denoiser: Optional[Denoiser] = None,
    denoise_to_zero: bool = False,
) -> ODESolution:
    """Heun's method on dy/du = (y - D) / u (Karras et al. 2022, Algorithm 1 without churn; `HeunIntegrator`), on
    any time grid (use the ``edm`` grid for their rho = 7 schedule). Two evaluations per step; with
    `denoise_to_zero` a last Euler step to u = 0, which is y = D(y) (one more evaluation), as EDM's sampler ends."""
    check_tolerances(rtol, atol)
    _check_sde(sde, "edm_heun")
    D = _CountedDenoiser(sde, func, denoiser)
    heun = HeunIntegrator(sde, t, to_zero=denoise_to_zero)
    x_dtype = y0.dtype
    x = y0
    n = t.numel() - 1
    for i in range(n):
        x_euler = heun.predict(i, x, D(t[i], x.to(x_dtype)))
        x = heun.correct(i, x_euler, D(t[i + 1], x_euler.to(x_dtype)))
        if callback is not None:
            replaced = callback(i, t[i + 1], x.to(x_dtype))
            x = x if replaced is None else replaced.to(x.dtype)
    if denoise_to_zero:
        x = heun.predict(n, x, D(t[n], x.to(x_dtype)))
    return ODESolution(x.to(x_dtype), D.nfe)


edm_heun.adaptive = False
edm_heun.requires_sde = True
ODE_SOLVERS.register("edm_heun", edm_heun)


def requires_sde(solver: Callable) -> bool:
    """Whether `solver` needs the ``sde`` (and takes ``denoiser`` and ``denoise_to_zero``) keywords."""
    return bool(getattr(solver, "requires_sde", False))


__all__ = [
    "HeunIntegrator",
    "MultistepExponentialIntegrator",
    "dpm_solver_1",
    "dpm_solver_2m",
    "dpm_solver_3m",
    "dpm_solver_multistep",
    "edm_heun",
    "exponential_weights",
    "extrapolation_weights",
    "requires_sde",
    "unipc_2m",
    "unipc_3m",
]
