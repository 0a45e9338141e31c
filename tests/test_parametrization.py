"""Specification of the model-output parametrisations (`to_score` / `from_score`) and the timestep maps.

Specification: one model-output adapter for every prediction type; Tweedie's formula E[x_0 | x_t] = (x_t + sigma^2 s) / m;
Salimans & Ho (2022) for v; Ho et al. (2020) / diffusers' `DDPMScheduler` for the discrete DDPM chain.
"""

import pytest
import torch
from diffusers import DDPMScheduler

from scoresde_diffusers.sampling import (
    PREDICTION_TYPES,
    TIMESTEP_MAPS,
    from_score,
    t_to_timestep,
    timestep_to_t,
    to_score,
)
from scoresde_diffusers.sampling.parametrization import input_scale, loss_weight
from scoresde_diffusers.sdes import SubVPSDE, VESDE, VPSDE

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}
BUILT_IN_TYPES = ["score", "epsilon", "sample", "v_prediction", "edm"]


@pytest.fixture
def batch():
    """A batch of (B, C, H, W) points and times in [1e-3, 1] in float64."""
    x = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    score = torch.randn_like(x)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    return x, score, t


def test_built_in_prediction_types_are_registered():
    assert set(BUILT_IN_TYPES) <= set(PREDICTION_TYPES.names())


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("prediction_type", BUILT_IN_TYPES)
def test_to_score_inverts_from_score(batch, sde_name, prediction_type):
    # Exact algebra. Rounding (1e-16 |x|) is amplified by up to 1 / sigma^2 (the `sample` conversion divides by
    # sigma^2): at t = 1e-3 that is 1e4 for VP but 8e7 for sub-VP (sigma ~ beta_min t): atol 1e-14 / min sigma^2.
    x, score, t = batch
    sde = SDES[sde_name]
    output = from_score(sde, score, x, t, prediction_type)
    atol = 1e-14 / sde.marginal_std(t).min().item() ** 2
    torch.testing.assert_close(to_score(sde, output, x, t, prediction_type), score, rtol=1e-9, atol=atol)


def test_edm_is_karras_preconditioning_for_the_ve_sde(batch):
    # Karras et al. (2022), Table 1, with sigma_data = 0.5 and m = 1: D = c_skip x + c_out F,
    # c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), input c_in x = x / sqrt(sigma^2 + sd^2).
    x, f, t = batch
    sde, sd = SDES["ve"], 0.5
    sigma = sde.marginal_std(t)[:, None, None, None]
    denoised = sd**2 / (sigma**2 + sd**2) * x + sigma * sd / (sigma**2 + sd**2).sqrt() * f
    torch.testing.assert_close(x + sigma**2 * to_score(sde, f, x, t, "edm"), denoised, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(input_scale(sde, x, t, "edm"), 1 / (sigma**2 + sd**2).sqrt(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("sde_name", SDES)
def test_edm_input_has_unit_variance_for_data_of_std_sigma_data(sde_name):
    # x_t = m x_0 + sigma z with x_0 ~ N(0, 0.5^2): Var(c_in x_t / m) = (0.25 + u^2) / (u^2 + 0.25) = 1 at every t.
    sde = SDES[sde_name]
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.01, 0.3, 0.7, 1.0], dtype=torch.float64).repeat_interleave(50_000)
    x0, z = 0.5 * torch.randn(t.shape[0], 1, generator=g, dtype=torch.float64), torch.randn(t.shape[0], 1, generator=g, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    scaled = (mean + std[:, None] * z) * input_scale(sde, x0, t, "edm")
    variances = scaled.reshape(4, -1).var(dim=1)
    torch.testing.assert_close(variances, torch.ones(4, dtype=torch.float64), atol=0.02, rtol=0)  # 4 SE of a variance


@pytest.mark.parametrize("sde_name", SDES)
def test_edm_loss_weight_makes_the_residual_uniform_in_the_network_output(batch, sde_name):
    # The score-matching residual |sigma s + z|^2 of an output F differs from that of the target F* by
    # sigma (s(F) - s(F*)); weighted, it must be |F - F*|^2 at every t (EDM's lambda, Karras et al. 2022, eq. 8).
    x, f, t = batch
    sde = SDES[sde_name]
    f_star = torch.randn_like(f)
    sigma = sde.marginal_std(t)[:, None, None, None]
    difference = sigma * (to_score(sde, f, x, t, "edm") - to_score(sde, f_star, x, t, "edm"))
    weighted = loss_weight(sde, x, t, "edm") * difference.flatten(1).pow(2).sum(1)
    torch.testing.assert_close(weighted, (f - f_star).flatten(1).pow(2).sum(1), rtol=1e-10, atol=0)


@pytest.mark.parametrize("sde_name", SDES)
def test_epsilon_is_minus_sigma_times_score(batch, sde_name):
    x, score, t = batch
    sde = SDES[sde_name]
    sigma = sde.marginal_std(t)[:, None, None, None]
    torch.testing.assert_close(from_score(sde, score, x, t, "epsilon"), -sigma * score, rtol=1e-14, atol=0)


@pytest.mark.parametrize("sde_name", SDES)
def test_sample_and_v_agree_with_the_perturbation_kernel(sde_name):
    # Build x_t = m x_0 + sigma eps from known (x_0, eps); then the single-point score is -eps / sigma and the
    # `sample` output must be x_0 and `v_prediction` must be m eps - sigma x_0 (Salimans & Ho's v).
    sde = SDES[sde_name]
    x0 = torch.randn(4, 5, dtype=torch.float64)
    eps = torch.randn_like(x0)
    t = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=torch.float64)
    m, sigma = sde.marginal_mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
    xt = m * x0 + sigma * eps
    score = -eps / sigma
    torch.testing.assert_close(from_score(sde, score, xt, t, "sample"), x0, rtol=1e-10, atol=1e-10)
    v = from_score(sde, score, xt, t, "v_prediction")
    torch.testing.assert_close(v, m * eps - sigma * x0, rtol=1e-10, atol=1e-10)


def test_unknown_prediction_type_lists_the_registered_ones(batch):
    x, score, t = batch
    with pytest.raises(ValueError) as info:
        to_score(VPSDE(), score, x, t, "noise")
    for name in BUILT_IN_TYPES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="v_prediction"):
        from_score(VPSDE(), score, x, t, "velocity")


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("timestep_type", ["discrete", "scaled", "continuous", "sigma"])
def test_timestep_maps_are_inverse_pairs(sde_name, timestep_type):
    sde = SDES[sde_name]
    t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
    timestep = t_to_timestep(sde, t, timestep_type, 1000)
    torch.testing.assert_close(timestep_to_t(sde, timestep, timestep_type, 1000), t, rtol=1e-9, atol=0)


def test_timestep_map_values():
    # The documented table in sampling/timesteps.py.
    sde = VPSDE()
    t = torch.tensor([1e-3, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(t_to_timestep(sde, t, "discrete", 1000), t * 1000 - 1)
    torch.testing.assert_close(t_to_timestep(sde, t, "scaled", 1000), t * 999)
    torch.testing.assert_close(t_to_timestep(sde, t, "continuous", 1000), t)
    torch.testing.assert_close(t_to_timestep(sde, t, "sigma", 1000), sde.marginal_std(t))
    assert set(["discrete", "scaled", "continuous", "sigma"]) <= set(TIMESTEP_MAPS.names())


def test_discrete_map_matches_ddpm_alphas_cumprod():
    # diffusers' default DDPMScheduler (linear betas 1e-4 .. 0.02, N = 1000) against the VP SDE with beta_min = N
    # beta_start = 0.1, beta_max = N beta_end = 20 at t = (k + 1) / N. Measured on sqrt(1 - alpha_bar_k), the noise
    # scale a DDPM epsilon-model divides by: 4.85% at k = 0, falling as ~1 / k to 0.35% at k = 100 and 1.4e-6 at
    # k = 999. The k = 0 gap is first order in 1/N, not a bug: over the first step the continuous beta(t) grows by
    # (beta_max - beta_min) / N, adding (beta_end - beta_start) / 2 ~ 1e-5 to DDPM's 1 - alpha_bar_0 = beta_start =
    # 1e-4 (10% in variance, 5% in std). Tolerances: 5e-2 over all k, 4e-3 for k >= 100.
    scheduler = DDPMScheduler()
    N = scheduler.config.num_train_timesteps
    k = torch.arange(N, dtype=torch.float64)
    t = timestep_to_t(VPSDE(0.1, 20), k, "discrete", N)
    torch.testing.assert_close(t, (k + 1) / N)
    alpha_bar = torch.exp(2 * VPSDE(0.1, 20).log_mean_coeff(t))
    ddpm_alpha_bar = scheduler.alphas_cumprod.double()
    noise_scale, ddpm_noise_scale = (1 - alpha_bar).sqrt(), (1 - ddpm_alpha_bar).sqrt()
    torch.testing.assert_close(noise_scale, ddpm_noise_scale, rtol=5e-2, atol=0)
    torch.testing.assert_close(noise_scale[100:], ddpm_noise_scale[100:], rtol=4e-3, atol=0)
    # and the signal scale sqrt(alpha_bar) to first order everywhere: 3.4% at k = 999, where alpha_bar ~ 4e-5 and the
    # dropped second-order sum of beta_i^2 / 2 ~ 0.067 shows (exp(-0.067 / 2) ~ 0.967).
    torch.testing.assert_close(alpha_bar.sqrt(), ddpm_alpha_bar.sqrt(), rtol=3.5e-2, atol=0)
