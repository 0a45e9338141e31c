"""Specification of `GaussianMixtureScoreModel`, the exact ground truth behind the sampler and likelihood tests.

p_0 = sum_k w_k N(mu_k, Sigma_k) pushed through an SDE with kernel N(m(t) x_0, sigma(t)^2 I) is exactly
p_t = sum_k w_k N(m(t) mu_k, m(t)^2 Sigma_k + sigma(t)^2 I). Each test checks one consequence of that sentence
against an independent computation (autograd, scipy, a numerical integral, Monte Carlo, Bayes' rule).
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from scoresde_diffusers.models import GaussianMixtureScoreModel
from scoresde_diffusers.sampling import t_to_timestep, to_score

SDE_NAMES = ["ve", "vp", "subvp"]
TIMES = [1e-3, 0.1, 0.5, 1.0]


def four_gaussians(sde: str, **config) -> GaussianMixtureScoreModel:
    """The four-Gaussian demo model in float64 (its parameters are float32-rounded at construction; every reference
    below reads the model's own float64 parameters, so that rounding is not a source of disagreement)."""
    return GaussianMixtureScoreModel.four_gaussians(sde=sde, **config).to(torch.float64)


def mixture_at(model: GaussianMixtureScoreModel, t: float):
    """(weights, means, covariances) of p_t as numpy float64, from the closed form in the module docstring."""
    tt = torch.tensor([t], dtype=torch.float64)
    m, std = model.sde.marginal_mean_coeff(tt).item(), model.sde.marginal_std(tt).item()
    w = model.weights.detach().numpy()
    w = w / w.sum()  # the mixture's weights are normalised by definition; float32 storage leaves sum - 1 ~ 2e-8
    mu = m * model.means.detach().numpy()
    cov = m**2 * model.covariances.detach().numpy() + std**2 * np.eye(model.config.dim)
    return w, mu, cov


def scipy_log_prob(model, x: torch.Tensor, t: float) -> np.ndarray:
    w, mu, cov = mixture_at(model, t)
    x = x.reshape(x.shape[0], -1).numpy()
    comps = np.stack([multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(len(w))], axis=1) + np.log(w)
    return np.logaddexp.reduce(comps, axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# Density and score
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDE_NAMES)
@pytest.mark.parametrize("t", TIMES)
def test_log_prob_matches_scipy_mixture(sde, t):
    # Same closed form, independent code (scipy's Cholesky-based logpdf): float64 rounding only, rtol 1e-10.
    model = four_gaussians(sde)
    x = 3 * torch.randn(64, 2, dtype=torch.float64)
    expected = torch.from_numpy(scipy_log_prob(model, x, t))
    torch.testing.assert_close(model.log_prob(x, t), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde, t", [("vp", 0.0), ("vp", 0.3), ("subvp", 0.3), ("ve", 0.3)])
def test_density_integrates_to_one(sde, t):
    # Trapezoid rule on [-8, 8]^2 with spacing h = 0.1. The integrand is smooth with component stds >= 0.3, so the
    # rule is spectrally accurate (error ~ exp(-2 pi^2 0.3^2 / h^2) ~ 1e-77), and the mass outside the box is < 1e-12
    # (means at +-2 m(t), stds <= 1): |1 - mass| < 1e-10 leaves room for rounding alone.
    model = four_gaussians(sde)
    grid = torch.linspace(-8, 8, 161, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    density = model.log_prob(torch.stack([xx.flatten(), yy.flatten()], dim=1), t).exp().reshape(xx.shape)
    mass = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid)
    assert abs(mass.item() - 1) < 1e-10


@pytest.mark.parametrize("sde", SDE_NAMES)
def test_score_is_gradient_of_log_prob(sde):
    # autograd through log_prob vs the closed-form score, float64: rounding only, rtol 1e-8.
    model = four_gaussians(sde)
    x = 3 * torch.randn(32, 2, dtype=torch.float64)
    for t in TIMES:
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.log_prob(xg, t).sum(), xg)
        torch.testing.assert_close(model.score(x, t), grad, rtol=1e-8, atol=1e-10)


def test_per_sample_times_equal_scalar_times():
    model = four_gaussians("vp")
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.1, 0.2, 0.5, 1.0], dtype=torch.float64)
    per_sample = model.score(x, t)
    for i in range(4):
        torch.testing.assert_close(per_sample[i : i + 1], model.score(x[i : i + 1], t[i].item()), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDE_NAMES)
@pytest.mark.parametrize("t", [None, 0.3, 1.0])
def test_sample_data_has_marginal_mean_and_covariance(sde, t):
    # Mean m sum w_k mu_k; covariance sum w_k (m^2 Sigma_k + sigma^2 I + m^2 mu_k mu_k^T) - mean mean^T.
    # 2e5 samples; tolerance 5 Monte-Carlo standard errors per entry, each estimated from the samples themselves
    # (std of x_i, and of (x_i - mean_i)(x_j - mean_j), over sqrt(n)), since the mixture is not Gaussian.
    model = four_gaussians(sde)
    n = 200_000
    x = model.sample_data(n, generator=torch.Generator().manual_seed(0), t=t)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    w, mu, cov = (torch.from_numpy(a) for a in mixture_at(model, 0.0 if t is None else t))
    if t is None:  # p_0 itself, without VE's sigma_min smoothing
        cov = model.covariances.detach()
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    covariance = second - mean[:, None] * mean[None, :]
    centred = x - mean
    products = centred[:, :, None] * centred[:, None, :]
    assert torch.all((x.mean(0) - mean).abs() <= 5 * x.std(0) / math.sqrt(n))
    assert torch.all((products.mean(0) - covariance).abs() <= 5 * products.std(0) / math.sqrt(n))


def test_sample_data_labels_follow_weights():
    # Label frequencies vs weights (0.1, 0.2, 0.3, 0.4): binomial standard error sqrt(w (1 - w) / n), 5 of them.
    model = four_gaussians("vp")
    n = 100_000
    _, labels = model.sample_data(n, generator=torch.Generator().manual_seed(1), return_labels=True)
    freq = torch.bincount(labels, minlength=4).double() / n
    w = model.weights.detach()
    assert torch.all((freq - w).abs() <= 5 * (w * (1 - w) / n).sqrt())


def test_sample_data_is_reproducible_with_a_generator():
    model = four_gaussians("ve")
    a = model.sample_data(10, generator=torch.Generator().manual_seed(3), t=0.5)
    b = model.sample_data(10, generator=torch.Generator().manual_seed(3), t=0.5)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------------
# The diffusers model interface
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDE_NAMES)
@pytest.mark.parametrize("prediction_type", ["score", "epsilon", "sample", "v_prediction"])
def test_output_converts_back_to_the_score(sde, prediction_type):
    model = four_gaussians(sde, prediction_type=prediction_type)
    x = 2 * torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    output = model(x, t).sample
    score = to_score(model.sde, output, x, t, prediction_type)
    torch.testing.assert_close(score, model.score(x, t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDE_NAMES)
def test_epsilon_output_is_minus_sigma_times_score(sde):
    model = four_gaussians(sde, prediction_type="epsilon")
    x = 2 * torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    expected = -model.sde.marginal_std(t)[:, None] * model.score(x, t)
    torch.testing.assert_close(model(x, t, return_dict=False)[0], expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("sde", SDE_NAMES)
@pytest.mark.parametrize("timestep_type", ["discrete", "scaled", "continuous", "sigma"])
def test_timestep_is_mapped_to_continuous_time(sde, timestep_type):
    # forward(x, timestep) must be the score at the continuous t the map sends `timestep` to.
    model = four_gaussians(sde, timestep_type=timestep_type)
    x = 2 * torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.01, 0.25, 0.5, 1.0], dtype=torch.float64)
    timestep = t_to_timestep(model.sde, t, timestep_type, model.config.num_train_timesteps)
    # rtol 1e-9: the round trip t -> timestep -> t is exact to rounding (the sigma map goes through a square root).
    torch.testing.assert_close(model(x, timestep).sample, model.score(x, t), rtol=1e-9, atol=1e-12)


def test_integer_discrete_timesteps_like_ddpm():
    # A DDPM loop hands integer steps k = 0..N-1; the discrete map sends k to t = (k + 1) / N.
    model = four_gaussians("vp", timestep_type="discrete")
    x = torch.randn(3, 2, dtype=torch.float64)
    k = torch.tensor([0, 499, 999])
    t = (k.double() + 1) / 1000
    torch.testing.assert_close(model(x, k).sample, model.score(x, t), rtol=1e-12, atol=0)
    torch.testing.assert_close(model(x, 999).sample, model.score(x, 1.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("prediction_type", ["score", "epsilon"])
def test_image_shaped_input_gives_the_flat_numbers(prediction_type):
    # A 4-D mixture seen as (B, 1, 2, 2) images and as (B, 4) vectors: the same numbers, reshaped.
    weights = [0.3, 0.7]
    means = [[1.0, -1.0, 0.5, 0.0], [-1.0, 0.5, 0.0, 2.0]]
    stds = [[0.5, 0.4, 0.3, 0.6], [0.7, 0.2, 0.5, 0.4]]
    flat = GaussianMixtureScoreModel.from_mixture(weights, means, stds, sde="vp", prediction_type=prediction_type)
    image = GaussianMixtureScoreModel.from_mixture(
        weights, means, stds, sde="vp", prediction_type=prediction_type, sample_size=2, in_channels=1
    )
    flat, image = flat.to(torch.float64), image.to(torch.float64)
    assert flat.data_shape == (4,) and image.data_shape == (1, 2, 2)
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.linspace(0.1, 1.0, 6, dtype=torch.float64)
    x_img = x.reshape(6, 1, 2, 2)
    assert torch.equal(image(x_img, t).sample, flat(x, t).sample.reshape(6, 1, 2, 2))
    assert torch.equal(image.log_prob(x_img, 0.5), flat.log_prob(x, 0.5))
    assert image.sample_data(3).shape == (3, 1, 2, 2)
    with pytest.raises(ValueError, match="Expected samples"):
        image(torch.randn(2, 5, dtype=torch.float64), t[:2])


def test_float32_model_keeps_float32():
    model = GaussianMixtureScoreModel.four_gaussians(sde="vp")
    x = torch.randn(3, 2)
    out = model(x, torch.tensor([0.1, 0.5, 1.0])).sample
    assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))
    assert model.sample_data(4).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_and_load_round_trip(tmp_path, dtype):
    model = GaussianMixtureScoreModel.four_gaussians(
        sde="ve", sde_config={"sigma_min": 0.02, "sigma_max": 30.0}, prediction_type="epsilon", timestep_type="sigma"
    ).to(dtype)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "config.json").is_file()
    loaded = GaussianMixtureScoreModel.from_pretrained(tmp_path, torch_dtype=dtype)
    assert loaded.sde == model.sde and loaded.config.timestep_type == "sigma"
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    x = torch.randn(4, 2, dtype=dtype)
    timestep = torch.tensor([0.05, 0.5, 2.0, 30.0], dtype=dtype)
    assert torch.equal(loaded(x, timestep).sample, model(x, timestep).sample)


# ---------------------------------------------------------------------------------------------------------------------
# Component posteriors and input validation
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDE_NAMES)
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_component_posteriors_are_bayes_posteriors(sde, t):
    # p_t(k | x) = w_k N_k(x) / sum_j w_j N_j(x) with scipy's component densities; rows sum to 1.
    model = four_gaussians(sde)
    x = 3 * torch.randn(50, 2, dtype=torch.float64)
    w, mu, cov = mixture_at(model, t)
    joint = np.stack([w[k] * multivariate_normal(mu[k], cov[k]).pdf(x.numpy()) for k in range(4)], axis=1)
    posteriors = model.component_posteriors(x, t)
    torch.testing.assert_close(posteriors.sum(1), torch.ones(50, dtype=torch.float64), rtol=1e-14, atol=1e-14)
    bayes = torch.from_numpy(joint / joint.sum(1, keepdims=True))
    torch.testing.assert_close(posteriors, bayes, rtol=1e-9, atol=1e-12)


MEANS = [[0.0, 0.0], [1.0, 1.0]]
EYE = [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    "weights, means, covariances, match",
    [
        ([0.5, 0.5], MEANS, [[[1.0, 2.0], [2.0, 1.0]], EYE], "positive definite"),
        ([0.5, 0.5], MEANS, [[[1.0, 0.5], [0.0, 1.0]], EYE], "symmetric"),
        ([0.5, 0.5], MEANS, [[[0.0, 0.0], [0.0, 1.0]], EYE], "positive definite"),
        ([0.5, -0.5], MEANS, [1.0, 1.0], "positive"),
        ([0.5, 0.0], MEANS, [1.0, 1.0], "positive"),
        ([0.5, 0.5, 0.1], MEANS, [1.0, 1.0], "weights must be"),
        ([0.5, 0.5], [0.0, 1.0], [1.0, 1.0], "weights must be"),
        ([0.5, 0.5], MEANS, [1.0, 1.0, 1.0], "covariances must be"),
        ([0.5, 0.5], MEANS, [[[1.0, 0.0, 0.0]] * 3] * 2, "covariances must be"),
    ],
    ids=["indefinite", "asymmetric", "singular", "negative-weight", "zero-weight", "weights-vs-means", "flat-means",
         "std-count", "cov-shape"],
)
def test_bad_mixture_raises_value_error(weights, means, covariances, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixtureScoreModel.from_mixture(weights, means, covariances)


def test_bad_model_config_raises_value_error():
    with pytest.raises(ValueError, match="prediction type"):
        GaussianMixtureScoreModel(num_components=1, dim=2, prediction_type="noise")
    with pytest.raises(ValueError, match="sample_size and in_channels"):
        GaussianMixtureScoreModel(num_components=1, dim=4, sample_size=2)
    with pytest.raises(ValueError, match="must equal dim"):
        GaussianMixtureScoreModel(num_components=1, dim=5, sample_size=2, in_channels=1)
    with pytest.raises(ValueError, match="Unknown SDE"):
        GaussianMixtureScoreModel(num_components=1, dim=2, sde="ou")
