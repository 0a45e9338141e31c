"""The scheduler is the one door to the sampling maths (issue 13, item 1).

The pipelines call scheduler methods only (denoiser, drift, prior, grids, marginals, solvers), never
``scheduler.sde`` or a solver function directly. These tests check each door method against the closed forms of
the SDEs of Song et al. (2021), and that no pipeline module goes around the door.
"""

import ast
import math
from pathlib import Path

import pytest
import torch

from scoresde_diffusers import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.sampling.adaptive_sde import gotta_go_fast

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
BETA_MIN, BETA_MAX, SIGMA_MIN, SIGMA_MAX = 0.1, 20.0, 0.01, 50.0
SCHEDULERS = {"vp": VPSDEScheduler, "ve": VESDEScheduler, "subvp": SubVPSDEScheduler}


# ---------------------------------------------------------------------------- closed forms (Song et al. 2021, App. B)
def closed_forms(name, t):
    """m(t), sigma(t), f(x, t) / x and g(t)^2 of the three SDEs, in float64."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if name == "ve":
        sigma = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t
        return torch.ones_like(t), sigma, torch.zeros_like(t), 2 * math.log(SIGMA_MAX / SIGMA_MIN) * sigma**2
    integral = 0.5 * t**2 * (BETA_MAX - BETA_MIN) + t * BETA_MIN  # int_0^t beta
    beta = BETA_MIN + t * (BETA_MAX - BETA_MIN)
    m = torch.exp(-0.5 * integral)
    if name == "vp":
        return m, torch.sqrt(1 - torch.exp(-integral)), -0.5 * beta, beta
    return m, 1 - torch.exp(-integral), -0.5 * beta, beta * (1 - torch.exp(-2 * integral))


def expand(v, x):
    return v.reshape(-1, *([1] * (x.ndim - 1)))


TIMES = torch.tensor([1e-3, 0.1, 0.37, 0.8, 1.0], dtype=torch.float64)


@pytest.fixture(params=sorted(SCHEDULERS))
def name(request):
    return request.param


def test_end_time_and_sde_name(name):
    scheduler = SCHEDULERS[name]()
    assert scheduler.T == 1.0
    assert scheduler.sde_name == name


def test_marginals_match_the_closed_forms(name):
    scheduler = SCHEDULERS[name]()
    m, sigma, _, _ = closed_forms(name, TIMES)
    torch.testing.assert_close(scheduler.marginal_std(TIMES), sigma, rtol=1e-12, atol=1e-12)
    x = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean, std = scheduler.marginal_prob(x, TIMES)
    torch.testing.assert_close(mean, expand(m, x) * x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, sigma, rtol=1e-12, atol=1e-12)


def test_tweedie_and_model_output_match_the_closed_forms(name):
    x = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    m, sigma, _, _ = closed_forms(name, TIMES)
    scheduler = SCHEDULERS[name](prediction_type="epsilon")
    denoised = (x + expand(sigma**2, x) * s) / expand(m, x)
    torch.testing.assert_close(scheduler.score_to_denoised(s, x, TIMES), denoised, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(scheduler.score_to_model_output(s, x, TIMES), -expand(sigma, x) * s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(SCHEDULERS[name](prediction_type="score").score_to_model_output(s, x, TIMES), s)
    torch.testing.assert_close(SCHEDULERS[name](prediction_type="sample").score_to_model_output(s, x, TIMES), denoised, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "score", "v_prediction", "edm"])
def test_score_to_model_output_inverts_get_score(name, prediction_type):
    scheduler = SCHEDULERS[name](prediction_type=prediction_type)
    x = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = TIMES.clamp(min=0.05)  # away from t = 0, where sigma -> 0 makes some conversions ill-conditioned
    torch.testing.assert_close(scheduler.get_score(scheduler.score_to_model_output(s, x, t), x, t), s, rtol=1e-8, atol=1e-8)


def test_probability_flow_drift_is_eq_13(name):
    scheduler = SCHEDULERS[name]()
    x = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    s = torch.randn(len(TIMES), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    _, _, f, g2 = closed_forms(name, TIMES)
    expected = expand(f, x) * x - 0.5 * expand(g2, x) * s  # f - 1/2 g^2 s
    torch.testing.assert_close(scheduler.probability_flow_drift(x, TIMES, s), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("noise_level", [0.03, 0.5, 5.0])
def test_t_from_noise_level_inverts_the_noise_level(name, noise_level):
    scheduler = SCHEDULERS[name]()
    t = scheduler.t_from_noise_level(noise_level)
    m, sigma, _, _ = closed_forms(name, t)
    assert 0 < t < 1
    assert float(sigma / m) == pytest.approx(noise_level, rel=1e-6)


def test_time_grid(name):
    scheduler = SCHEDULERS[name]()
    torch.testing.assert_close(scheduler.time_grid("uniform", 4, t_min=0.1), torch.linspace(1.0, 0.1, 5, dtype=torch.float64))
    grid = scheduler.time_grid("log_snr", 6, t_min=1e-3, dtype=torch.float32)
    assert grid.dtype == torch.float32 and float(grid[0]) == 1.0 and float(grid[-1]) == pytest.approx(1e-3)
    m, sigma, _, _ = closed_forms(name, grid.double())
    log_snr = 2 * torch.log(m / sigma)
    steps = log_snr[1:] - log_snr[:-1]
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-3, atol=1e-4)  # uniform in lambda


# ---------------------------------------------------------------------------- solvers, on Gaussian data
# Data N(0, s0^2 I): p_t = N(0, v(t) I) with v = m^2 s0^2 + sigma^2, score -x / v, and the probability flow maps x_1
# to x_1 sqrt(v(t) / v(1)) (Song et al. 2021, eq. 13 is linear here).
S0 = 0.5


def variance(name, t):
    m, sigma, _, _ = closed_forms(name, t)
    return m**2 * S0**2 + sigma**2


def gaussian_score(name):
    return lambda x, t: -x / expand(variance(name, t).to(x.dtype), x)


@pytest.mark.parametrize("solver", ["dopri5", "rk4", "unipc_3m", "edm_heun"])
def test_solve_probability_flow_follows_the_gaussian_flow(name, solver):
    scheduler = SCHEDULERS[name]()
    score = gaussian_score(name)
    x1 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    eps = 0.01 if name == "ve" else 1e-3
    adaptive = solver == "dopri5"
    grid = torch.tensor([1.0, eps], dtype=torch.float64) if adaptive else scheduler.time_grid("log_snr", 200, t_min=eps)

    def func(t, x):
        tb = t.expand(x.shape[0])
        return scheduler.probability_flow_drift(x, tb, score(x, tb))

    def denoiser(t, x):  # only given to solvers that step in the SDE's coordinates; they also get its SDE
        tb = t.expand(x.shape[0])
        return scheduler.score_to_denoised(score(x, tb), x, tb)

    y, nfe = scheduler.solve_probability_flow(func, x1, grid, solver, rtol=1e-9, atol=1e-9, denoiser=denoiser)
    expected = x1 * torch.sqrt(variance(name, torch.tensor(eps)) / variance(name, torch.tensor(1.0)))
    tolerance = 2e-3 if solver == "edm_heun" else 1e-4  # second order in the noise level u
    torch.testing.assert_close(y, expected, rtol=tolerance, atol=tolerance / 10)
    assert nfe > 0


def test_probability_flow_log_likelihood_is_the_gaussian_density(name):
    scheduler = SCHEDULERS[name]()
    score = gaussian_score(name)
    x = S0 * torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    eps = 1e-3
    result = scheduler.probability_flow_log_likelihood(
        lambda y, t: scheduler.probability_flow_drift(y, t, score(y, t)), x, eps, divergence="exact", rtol=1e-8, atol=1e-8
    )
    v_eps, v_1 = variance(name, torch.tensor(eps)), variance(name, torch.tensor(1.0))
    # The flow ends at N(0, v(1)); the prior is N(0, prior_std^2). Its log-density at the latent, plus the exact
    # change of volume log(v(1) / v(eps)) D / 2, is log p_eps(x) up to the prior's mismatch (v(1) vs prior_std^2).
    z = x * torch.sqrt(v_1 / v_eps)
    torch.testing.assert_close(result.latent, z, rtol=1e-5, atol=1e-6)
    prior = torch.distributions.Normal(0.0, scheduler.init_noise_sigma).log_prob(result.latent).sum(1)
    torch.testing.assert_close(result.prior_logp, prior, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(result.delta_logp, torch.full((6,), float(torch.log(v_1 / v_eps)), dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_solve_reverse_sde_is_the_adaptive_solver_with_the_schedulers_sde(name):
    scheduler = SCHEDULERS[name]()
    score = gaussian_score(name)
    x1 = scheduler.init_noise_sigma * torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    eps = 1e-3
    ours = scheduler.solve_reverse_sde(score, x1, eps, solver="ggf", generator=torch.Generator().manual_seed(10))
    direct = gotta_go_fast(scheduler.sde, score, x1, t_start=1.0, t_end=eps, generator=torch.Generator().manual_seed(10))
    assert torch.equal(ours.x, direct.x)
    # The reverse SDE lands on p_0 = N(0, S0^2) (denoised), up to sampling error and the solver's tolerance.
    assert float(ours.x.var()) == pytest.approx(S0**2, rel=0.1)


# ---------------------------------------------------------------------------- no pipeline goes around the door
def _pipeline_modules():
    files = sorted(PIPELINES.rglob("*.py"))
    assert files
    return files


@pytest.mark.parametrize("path", _pipeline_modules(), ids=lambda p: str(p.relative_to(PIPELINES)))
def test_no_pipeline_reaches_the_sde(path):
    """``x.sde`` anywhere in a pipeline's code (docstrings and comments are not code) bypasses the scheduler."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    uses = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "sde"]
    uses += [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant) and node.args[1].value == "sde"
    ]
    assert not uses, f"{path.name} reads `.sde` at lines {uses}: call a scheduler method instead"


#: Functions of the sampling maths that take the SDE: pipelines reach them through scheduler methods.
SDE_FUNCTIONS = {
    "from_score", "to_score", "t_from_noise_level", "time_grid", "ode_time_grid", "t_from_log_snr", "ode_log_likelihood",
    "gotta_go_fast", "dpm_solver_multistep", "edm_heun", "impute", "t_to_timestep", "timestep_to_t",
}


@pytest.mark.parametrize("path", _pipeline_modules(), ids=lambda p: str(p.relative_to(PIPELINES)))
def test_no_pipeline_imports_the_sde_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scoresde_diffusers")
        for alias in node.names
    }
    assert not imported & SDE_FUNCTIONS, f"{path.name} imports {sorted(imported & SDE_FUNCTIONS)}: use the scheduler's methods"


def test_imputation_takes_the_scheduler(name):
    """`Imputation` reads m(t) and sigma(t) from the scheduler (the pipelines' door) exactly as from its SDE."""
    from scoresde_diffusers import Imputation

    scheduler = SCHEDULERS[name]()
    observation = torch.randn(4, 2, generator=torch.Generator().manual_seed(11))
    mask = torch.tensor([0.0, 1.0])
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(12))
    t = torch.full((4,), 0.3)
    through_door = Imputation(observation, mask, scheduler).condition_sample(x, t, torch.Generator().manual_seed(13))
    through_sde = Imputation(observation, mask, scheduler.sde).condition_sample(x, t, torch.Generator().manual_seed(13))
    assert torch.equal(through_door, through_sde)
