"""Tests of the ODE solver registry (`scoresde_diffusers.sampling.ode_solvers`): orders of convergence on linear
ODEs with closed-form solutions, exact NFE counts, the adaptive solvers' tolerances and the error messages."""

import math

import pytest
import torch

from scoresde_diffusers import ODE_SOLVERS
from scoresde_diffusers.sampling.ode_solvers import check_tolerances, get_ode_solver, is_adaptive, ode_time_grid
from scoresde_diffusers.sdes import VESDE, VPSDE

FIXED = {"euler": (1, 1), "heun": (2, 2), "rk4": (4, 4)}  # name: (order, evaluations per step)
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")

# dy/dt = A y with A a damped rotation: y(t) = expm(A (t - t0)) y0.
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


def linear(t, y):
    return y @ A.T


def linear_solution(y0, t0, t1):
    return y0 @ torch.linalg.matrix_exp(A * (t1 - t0)).T


# dy/dt = t y (non-autonomous, catches stage times evaluated at the wrong t): y(t) = y0 exp((t^2 - t0^2) / 2).
def time_dependent(t, y):
    return t * y


def time_dependent_solution(y0, t0, t1):
    return y0 * math.exp((t1**2 - t0**2) / 2)


Y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)


def test_registry_holds_every_solver():
    for name in (*FIXED, *ADAPTIVE):
        assert name in ODE_SOLVERS
        assert is_adaptive(get_ode_solver(name)) == (name in ADAPTIVE)
    with pytest.raises(ValueError, match="Registered ODE solvers: .*dopri5.*euler"):
        get_ode_solver("runge_kutta_42")


@pytest.mark.parametrize("name", list(FIXED))
@pytest.mark.parametrize("problem", ["linear", "time_dependent"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_fixed_step_order_of_convergence(name, problem, direction):
    func, solution = (linear, linear_solution) if problem == "linear" else (time_dependent, time_dependent_solution)
    t0, t1 = (0.1, 1.1) if direction == "forward" else (1.1, 0.1)
    order, stages = FIXED[name]
    solver = get_ode_solver(name)
    exact = solution(Y0, t0, t1)
    errors = []
    for n in (16, 32, 64):
        y, nfe = solver(func, Y0, torch.linspace(t0, t1, n + 1, dtype=torch.float64))
        assert nfe == stages * n  # NFE counted exactly
        errors.append((y - exact).abs().max().item())
    observed = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    # Halving the step divides the error by 2^order; 0.25 of slack for the pre-asymptotic regime.
    assert all(abs(p - order) < 0.25 for p in observed), (name, errors, observed)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_solvers_meet_their_tolerance(name):
    solver = get_ode_solver(name)
    exact = linear_solution(Y0, 1.0, 0.0)
    errors, nfes = [], []
    for tol in (1e-4, 1e-6):
        y, nfe = solver(linear, Y0, torch.tensor([1.0, 0.0], dtype=torch.float64), rtol=tol, atol=tol)
        errors.append((y - exact).abs().max().item())
        nfes.append(nfe)
    # The global error falls with the tolerance (100x tighter: at least 20x smaller; measured 70-100x) at the
    # cost of more evaluations. Dormand-Prince (score_sde's RK45) keeps it within 10x the tolerance; the
    # low-order pairs (fehlberg2: 800x) only track it.
    assert errors[1] < errors[0] / 20 and nfes[1] > nfes[0], (errors, nfes)
    if name in ("dopri5", "dopri8"):
        assert errors[1] < 10 * 1e-6, errors


def test_adaptive_nfe_is_exact_and_stays_inside_the_interval():
    times = []

    def func(t, y):
        times.append(float(t))
        return linear(t, y)

    y, nfe = get_ode_solver("dopri5")(func, Y0, torch.tensor([1.0, 1e-3], dtype=torch.float64))
    assert nfe == len(times) > 0
    # torchdiffeq would step past the end and interpolate; we make it land on it (the score is undefined for t < 0).
    assert min(times) >= 1e-3 - 1e-12 and max(times) <= 1.0 + 1e-12


def test_fixed_step_callback_sees_and_replaces_the_state():
    seen = []

    def callback(i, t_next, y):
        seen.append((i, float(t_next)))
        return torch.zeros_like(y) if i == 2 else None

    y, _ = get_ode_solver("euler")(lambda t, y: torch.zeros_like(y) + 1, Y0, torch.linspace(0, 1, 4, dtype=torch.float64), callback=callback)
    assert [i for i, _ in seen] == [0, 1, 2]
    assert seen[-1][1] == pytest.approx(1.0)
    assert torch.equal(y, torch.zeros_like(Y0))


@pytest.mark.parametrize("name", ["euler", "dopri5"])
@pytest.mark.parametrize("bad", [0.0, -1e-5, float("nan"), "1e-5", True])
def test_tolerances_must_be_positive(name, bad):
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="rtol must be a positive number"):
        get_ode_solver(name)(linear, Y0, t, rtol=bad)
    with pytest.raises(ValueError, match="atol must be a positive number"):
        get_ode_solver(name)(linear, Y0, t, atol=bad)
    check_tolerances(1e-5, 1e-5)


def test_bad_grids_and_options():
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        get_ode_solver("rk4")(linear, Y0, torch.tensor([0.0, 0.5, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 times"):
        get_ode_solver("rk4")(linear, Y0, torch.tensor([0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="takes no options"):
        get_ode_solver("heun")(linear, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), first_step=0.1)
    with pytest.raises(ValueError, match="no per-step callback"):
        get_ode_solver("dopri5")(linear, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), callback=lambda *a: None)


def test_float32_state_and_options_pass_through():
    y0 = Y0.float()
    func = lambda t, y: y @ A.T.float()  # noqa: E731
    y, nfe = get_ode_solver("dopri5")(func, y0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5, first_step=0.01, max_num_steps=1000)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, linear_solution(Y0, 0.0, 1.0).float(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("spacing", ["uniform", "log_sigma", "log_snr", "edm"])
def test_time_grid(spacing):
    for sde in (VPSDE(), VESDE()):
        grid = ode_time_grid(sde, 10, 1e-3, spacing)
        assert grid.shape == (11,) and grid[0] == 1.0 and grid[-1] == 1e-3
        assert torch.all(grid[1:] < grid[:-1])
        if spacing == "log_sigma":
            log_sigma = torch.log(sde.marginal_std(grid))
            torch.testing.assert_close(log_sigma[1:] - log_sigma[:-1], (log_sigma[1] - log_sigma[0]).expand(10), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="Unknown time grid 'cosine'. Registered time grids: .*log_sigma"):
        ode_time_grid(VPSDE(), 10, 1e-3, "cosine")
    with pytest.raises(ValueError, match="num_inference_steps"):
        ode_time_grid(VPSDE(), 0, 1e-3)
