"""Time grids for fixed-step samplers, registered by name in `TIME_GRIDS` (the idea of diffusers draft #10146:
sigma schedules as functions, not as flags copied into every scheduler).

Every grid is a function with one signature::

    grid(sde, num_steps, t_max, t_min, **options) -> torch.Tensor

returning ``num_steps + 1`` strictly decreasing continuous times in float64 from `t_max` down to `t_min` (both
exact). Use `time_grid(name, sde, num_steps, t_min, ...)` to build one by name. Built in:

| name         | uniform in                                             | source                                   |
|--------------|--------------------------------------------------------|------------------------------------------|
| `uniform`    | t                                                      | score_sde; Song et al. (2021)            |
| `quadratic`  | sqrt(t)                                                | DPM-Solver's ``time_quadratic`` grid     |
| `log_sigma`  | log sigma(t), the marginal std                         | SMLD's geometric noise levels            |
| `log_snr`    | lambda(t) = log(m(t)^2 / sigma(t)^2)                   | DPM-Solver (Lu et al. 2022), ``logSNR``  |
| `edm`        | u^(1/rho), u = sigma(t) / m(t), rho = 7                | Karras et al. (2022), eq. (5)            |

u = sigma / m is the noise level of the "VE-normalised" sample x / m (EDM's sigma; for VE it is sigma itself), and
lambda = -2 log u. Grids defined in u or lambda need the time of a given log-SNR: `t_from_log_snr` uses the SDE's
own ``t_from_log_snr`` when it has one and otherwise bisection on the (decreasing) `sde.log_snr`, so a plugin SDE
gets every grid for free. Register a new grid with ``@TIME_GRIDS.register("name")``.
"""

import math

import torch

from ..registry import Registry

TIME_GRIDS = Registry("time grid", "scoresde_diffusers.time_grids")


def t_from_log_snr(sde, log_snr: torch.Tensor, t_low: float = 0.0, t_high: float = None, iterations: int = 80) -> torch.Tensor:
    """The time t in [`t_low`, `t_high`] with ``sde.log_snr(t) = log_snr`` (float64).

    Uses ``sde.t_from_log_snr`` if the SDE defines it, else bisection (the log-SNR decreases with t for every
    forward SDE: the signal fades, the noise grows). Values outside the bracket are clamped to its ends.
    """
    log_snr = torch.as_tensor(log_snr, dtype=torch.float64)
    if hasattr(sde, "t_from_log_snr"):
        return sde.t_from_log_snr(log_snr)
    low = torch.full_like(log_snr, float(t_low))
    high = torch.full_like(log_snr, float(sde.T if t_high is None else t_high))
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        above = sde.log_snr(mid) > log_snr  # still too much signal: the time is later
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    return 0.5 * (low + high)


def t_from_noise_level(sde, noise_level: float) -> float:
    """The time t at which u(t) = sigma(t) / m(t) equals `noise_level` (the EDM sigma of the SDE at t).

    Ending a grid at a noise level rather than at a time makes one setting fit every SDE: VP's u(t) grows like
    sqrt(t) near 0, sub-VP's like t, VE's is sigma(t) itself (at least sigma_min; then t = 0 is returned)."""
    lam = torch.tensor(-2 * math.log(noise_level), dtype=torch.float64)
    if lam >= sde.log_snr(torch.tensor(0.0, dtype=torch.float64)):
        return 0.0
    return float(t_from_log_snr(sde, lam))


def _ends(sde, t_max: float, t_min: float) -> torch.Tensor:
    return torch.tensor([t_max, t_min], dtype=torch.float64)


def _from_log_snr_values(sde, values: torch.Tensor, t_max: float, t_min: float) -> torch.Tensor:
    grid = t_from_log_snr(sde, values, t_low=t_min, t_high=t_max)
    grid[0], grid[-1] = t_max, t_min  # exact end points despite round-off of the inverse
    return grid


@TIME_GRIDS.register("uniform")
def uniform_grid(sde, num_steps: int, t_max: float, t_min: float) -> torch.Tensor:
    """Uniform in t: score_sde's ``linspace(T, eps, N)``."""
    return torch.linspace(t_max, t_min, num_steps + 1, dtype=torch.float64)


@TIME_GRIDS.register("quadratic")
def quadratic_grid(sde, num_steps: int, t_max: float, t_min: float) -> torch.Tensor:
    """Uniform in sqrt(t) (DPM-Solver's ``time_quadratic``): denser near the data."""
    grid = torch.linspace(math.sqrt(t_max), math.sqrt(t_min), num_steps + 1, dtype=torch.float64) ** 2
    grid[0], grid[-1] = t_max, t_min
    return grid


@TIME_GRIDS.register("log_sigma")
def log_sigma_grid(sde, num_steps: int, t_max: float, t_min: float) -> torch.Tensor:
    """Uniform in log sigma(t) (geometric noise levels, as SMLD's); for VE the same as ``uniform``."""
    log_sigma = torch.log(sde.marginal_std(_ends(sde, t_max, t_min)))
    values = torch.exp(torch.linspace(float(log_sigma[0]), float(log_sigma[1]), num_steps + 1, dtype=torch.float64))
    grid = sde.t_from_marginal_std(values)
    grid[0], grid[-1] = t_max, t_min
    return grid


@TIME_GRIDS.register("log_snr")
def log_snr_grid(sde, num_steps: int, t_max: float, t_min: float, max_noise: float = None) -> torch.Tensor:
    """Uniform in the log signal-to-noise ratio lambda(t) (DPM-Solver's ``logSNR`` grid, Lu et al. 2022, sec. 3.3);
    for VE uniform in log sigma, i.e. the same as ``uniform``.

    With `max_noise` (a noise level u = sigma / m, e.g. 10 for data of unit scale), the first step jumps from
    `t_max` straight to that level and the other steps are uniform in lambda below it: above a few times the
    data scale the denoiser is nearly constant and an exponential integrator crosses that range in one step
    (VP's u(T) is about 150), so the steps are spent where the modes form. Ignored when u(t_max) <= max_noise."""
    lam = sde.log_snr(_ends(sde, t_max, t_min))
    start = float(lam[0])
    if max_noise is not None and num_steps > 1 and -2 * math.log(max_noise) > start:
        values = torch.linspace(-2 * math.log(max_noise), float(lam[1]), num_steps, dtype=torch.float64)
        values = torch.cat([torch.tensor([start], dtype=torch.float64), values])
    else:
        values = torch.linspace(start, float(lam[1]), num_steps + 1, dtype=torch.float64)
    return _from_log_snr_values(sde, values, t_max, t_min)


@TIME_GRIDS.register("edm")
def edm_grid(sde, num_steps: int, t_max: float, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. (5): u_i = (u_max^(1/rho) + i / N (u_min^(1/rho) - u_max^(1/rho)))^rho in the
    VE-normalised noise level u = sigma / m, with rho = 7 (their choice for every model)."""
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}.")
    u = torch.exp(-0.5 * sde.log_snr(_ends(sde, t_max, t_min)))
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    values = (u[0] ** (1 / rho) + ramp * (u[1] ** (1 / rho) - u[0] ** (1 / rho))) ** rho
    return _from_log_snr_values(sde, -2 * torch.log(values), t_max, t_min)


def time_grid(
    name: str,
    sde,
    num_steps: int,
    t_min: float,
    t_max: float = None,
    device=None,
    dtype: torch.dtype = torch.float64,
    **options,
) -> torch.Tensor:
    """The registered grid `name` with ``num_steps + 1`` decreasing times from `t_max` (default ``sde.T``) to `t_min`.

    Args:
        name (`str`): a name in `TIME_GRIDS` (``uniform``, ``quadratic``, ``log_sigma``, ``log_snr``, ``edm``).
        sde (`SDE`): the forward SDE.
        num_steps (`int`): number of intervals, >= 1.
        t_min (`float`): the last time, in (0, t_max).
        t_max (`float`, *optional*): the first time; ``sde.T`` by default.
        device (`torch.device`, *optional*): where the grid lives.
        dtype (`torch.dtype`, defaults to `torch.float64`): its dtype (computed in float64 either way).
        options: keywords of the grid function (e.g. ``rho`` of ``edm``).

    Examples:

    ```py
    >>> from scoresde_diffusers import VPSDE
    >>> from scoresde_diffusers.sampling.time_grids import time_grid
    >>> grid = time_grid("log_snr", VPSDE(), 4, t_min=1e-3)
    >>> grid.shape, float(grid[0]), float(grid[-1])
    (torch.Size([5]), 1.0, 0.001)

    ```
    """
    function = TIME_GRIDS.get(name)
    t_max = float(sde.T if t_max is None else t_max)
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}.")
    if not 0 < t_min < t_max:
        raise ValueError(f"The grid needs 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}.")
    grid = function(sde, int(num_steps), t_max, float(t_min), **options)
    if not torch.all(grid[1:] < grid[:-1]):
        raise ValueError(f"Time grid {name!r} is not strictly decreasing for {num_steps} steps on [{t_min}, {t_max}].")
    return grid.to(device=device, dtype=dtype)


__all__ = ["TIME_GRIDS", "t_from_noise_level", "edm_grid", "log_sigma_grid", "log_snr_grid", "quadratic_grid", "t_from_log_snr", "time_grid", "uniform_grid"]
