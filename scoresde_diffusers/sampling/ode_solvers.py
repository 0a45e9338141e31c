"""ODE solvers for the probability-flow ODE, registered by name in `ODE_SOLVERS`.

Every solver is a function with one signature (k-diffusion's idea of one signature for every sampler)::

    solver(func, y0, t, *, rtol=1e-5, atol=1e-5, callback=None, **options) -> ODESolution(y, nfe)

- `func(t, y) -> dy/dt`: the vector field; `t` is a 0-dim tensor of `y`'s dtype and device, `y` has `y0`'s shape.
- `y0` (`torch.Tensor`): the state at ``t[0]``, any shape (a batch is just part of the state).
- `t` (`torch.Tensor`): a 1-D, strictly monotone grid of times, increasing or decreasing (integrating backwards
  in time, from 1 to eps, is how the probability-flow ODE samples). Fixed-step solvers take one step per
  interval of the grid; adaptive solvers only read ``t[0]`` and ``t[-1]`` and pick their own steps.
- `rtol`, `atol` (`float`): relative and absolute tolerances of the adaptive solvers (defaults 1e-5, as
  score_sde's `get_ode_sampler` and `get_likelihood_fn`); must be positive. Fixed-step solvers check and ignore them.
- `callback(i, t_next, y) -> Optional[torch.Tensor]`: fixed-step solvers call it after step `i` with the new state;
  a returned tensor replaces the state (this is how a pipeline's `callback_on_step_end` may edit latents).
  Adaptive solvers do not take it (a `ValueError`).
- `options`: solver-specific keywords (for the torchdiffeq methods, its ``options`` dict, e.g. ``first_step``,
  ``max_num_steps``).

The result is `ODESolution(y, nfe)`: the state at ``t[-1]`` and the exact number of calls of `func`. Each solver
has an attribute ``adaptive`` (`bool`) that tells pipelines whether it needs a grid of steps.

Registered here: fixed-step ``euler`` (order 1), ``heun`` (explicit trapezoidal rule, order 2), ``rk4`` (classical
Runge-Kutta, order 4); adaptive ``dopri5`` (Dormand-Prince 5(4), the RK45 of score_sde's scipy call), ``dopri8``,
``bosh3``, ``fehlberg2`` and ``adaptive_heun`` through torchdiffeq (Chen et al., 2018). A plugin registers its own
with ``@ODE_SOLVERS.register("name")`` or the ``scoresde_diffusers.ode_solvers`` entry-point group.
"""

import math
from typing import Callable, NamedTuple, Optional

import torch

from ..registry import ODE_SOLVERS
from ..utils import check_num_steps
from .time_grids import time_grid

ODEFunc = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]

#: Default tolerances of the adaptive solvers (score_sde's `rtol=1e-5, atol=1e-5`).
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-5


class ODESolution(NamedTuple):
    """What every solver returns: the state at the last time and the number of vector-field evaluations."""

    y: torch.Tensor
    nfe: int


def check_tolerances(rtol: float, atol: float) -> None:
    """A `ValueError` unless both tolerances are positive finite numbers."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}.")


def _check_grid(t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"The time grid must be a 1-D tensor of at least 2 times, got shape {tuple(t.shape)}.")
    t = t.to(device=y0.device, dtype=y0.dtype)
    steps = t[1:] - t[:-1]
    if not (torch.all(steps > 0) or torch.all(steps < 0)):
        raise ValueError("The time grid must be strictly increasing or strictly decreasing.")
    return t


class _Counted:
    """Wraps `func` to count its calls exactly."""

    def __init__(self, func: ODEFunc):
        self.func = func
        self.nfe = 0

    def __call__(self, t, y):
        self.nfe += 1
        return self.func(t, y)


def _fixed_step(step_fn, adaptive: bool = False):
    """Turn a one-step rule ``step_fn(f, t, h, y) -> y_next`` into a registered-signature solver."""

    def solver(func, y0, t, *, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, callback: Optional[StepCallback] = None, **options):
        check_tolerances(rtol, atol)
        if options:
            raise ValueError(f"Fixed-step solver {step_fn.__name__!r} takes no options, got {sorted(options)}.")
        t = _check_grid(t, y0)
        f = _Counted(func)
        y = y0
        for i in range(t.numel() - 1):
            y = step_fn(f, t[i], t[i + 1] - t[i], y)
            if callback is not None:
                replaced = callback(i, t[i + 1], y)
                y = y if replaced is None else replaced
        return ODESolution(y, f.nfe)

    solver.__name__ = step_fn.__name__
    solver.__qualname__ = step_fn.__name__
    solver.__doc__ = step_fn.__doc__
    solver.adaptive = adaptive
    return solver


def _euler(f, t, h, y):
    """Explicit Euler: y + h f(t, y). Order 1, one evaluation per step."""
    return y + h * f(t, y)


def _heun(f, t, h, y):
    """Heun's method (explicit trapezoidal rule; EDM's second-order step without churn): an Euler predictor, then
    the average of the slopes at both ends. Order 2, two evaluations per step."""
    k1 = f(t, y)
    k2 = f(t + h, y + h * k1)
    return y + 0.5 * h * (k1 + k2)


def _rk4(f, t, h, y):
    """The classical fourth-order Runge-Kutta method. Order 4, four evaluations per step."""
    k1 = f(t, y)
    k2 = f(t + 0.5 * h, y + 0.5 * h * k1)
    k3 = f(t + 0.5 * h, y + 0.5 * h * k2)
    k4 = f(t + h, y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


_euler.__name__, _heun.__name__, _rk4.__name__ = "euler", "heun", "rk4"
euler = ODE_SOLVERS.register("euler", _fixed_step(_euler))
heun = ODE_SOLVERS.register("heun", _fixed_step(_heun))
rk4 = ODE_SOLVERS.register("rk4", _fixed_step(_rk4))


def _torchdiffeq_solver(method: str):
    """An adaptive solver of the registered signature backed by ``torchdiffeq.odeint(method=method)``."""

    def solver(func, y0, t, *, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, callback: Optional[StepCallback] = None, **options):
        check_tolerances(rtol, atol)
        if callback is not None:
            raise ValueError(
                f"The adaptive solver {method!r} chooses its own steps and takes no per-step callback; "
                f"use a fixed-step solver (euler, heun, rk4) with a time grid for callbacks."
            )
        from torchdiffeq import odeint  # imported here so that importing the library does not need it

        t = _check_grid(t, y0)
        f = _Counted(func)
        # Only the end points: the solver picks its steps, and we need the state at t[-1] only. torchdiffeq steps
        # past the end and interpolates back; `step_t` makes it land on t[-1] instead, so the vector field is never
        # evaluated outside [t[0], t[-1]] (the score is undefined below t = 0, e.g. VP's sigma(t) for t < 0).
        options = {"step_t": t[[-1]], **options}
        y = odeint(f, y0, t[[0, -1]], rtol=rtol, atol=atol, method=method, options=options)[-1]
        return ODESolution(y, f.nfe)

    solver.__name__ = solver.__qualname__ = method
    solver.__doc__ = f"Adaptive torchdiffeq solver ``{method}`` with tolerances `rtol`, `atol` (module docstring)."
    solver.adaptive = True
    return solver


dopri5 = ODE_SOLVERS.register("dopri5", _torchdiffeq_solver("dopri5"))
for _method in ("dopri8", "bosh3", "fehlberg2", "adaptive_heun"):
    ODE_SOLVERS.register(_method, _torchdiffeq_solver(_method))


def get_ode_solver(name: str) -> Callable:
    """The solver registered as `name`; a `ValueError` listing the registered ones if there is none."""
    return ODE_SOLVERS.get(name)


def is_adaptive(solver: Callable) -> bool:
    """Whether `solver` picks its own steps (plugins without an ``adaptive`` attribute count as fixed-step)."""
    return bool(getattr(solver, "adaptive", False))


def ode_time_grid(
    sde,
    num_steps: int,
    eps: float,
    spacing: str = "uniform",
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A decreasing grid of ``num_steps + 1`` times from ``sde.T`` to `eps` for fixed-step solvers: the grid
    registered as `spacing` in `TIME_GRIDS` (`scoresde_diffusers.sampling.time_grids`).

    Args:
        sde (`SDE`): the forward SDE.
        num_steps (`int`): number of solver steps (intervals of the grid).
        eps (`float`): the last time, in (0, T).
        spacing (`str`, defaults to ``"uniform"``): a registered time grid: ``uniform`` in t (score_sde's grid),
            ``quadratic``, ``log_sigma``, ``log_snr``, ``edm`` or a plugin's. Which is best depends on the model;
            for the exact VP mixture of the tests the uniform grid beats ``log_sigma``, which starves the early,
            strongly contracting part of the trajectory.
        device (`torch.device`, *optional*): where the grid lives.
        dtype (`torch.dtype`, defaults to `torch.float64`): dtype of the grid.
    """
    num_steps = check_num_steps(num_steps)
    if not 0 < eps < sde.T:
        raise ValueError(f"sampling_eps must lie in (0, {sde.T}), got {eps}.")
    return time_grid(spacing, sde, int(num_steps), t_min=eps, device=device, dtype=dtype)


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "ODESolution",
    "ODE_SOLVERS",
    "check_tolerances",
    "dopri5",
    "euler",
    "get_ode_solver",
    "heun",
    "is_adaptive",
    "ode_time_grid",
    "rk4",
]
