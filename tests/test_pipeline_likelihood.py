"""Tests of `ScoreSdeLikelihoodPipeline` and `scoresde_diffusers.likelihood`: log-likelihoods against exact Gaussian
mixtures (exact divergence and Hutchinson), bits/dim of dequantized 8-bit images against a closed form, data
loading, and the error messages."""

import math

import datasets
import PIL.Image
import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.likelihood import (
    bits_per_dim,
    dequantized_log_likelihood,
    divergence_exact,
    divergence_hutchinson,
    sample_probes,
)
from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline, ScoreSdeODEPipeline, ScoreSdePCPipeline

from pipeline_test_mixin import PipelineCommonTest

SCHEDULERS = [VPSDEScheduler, VESDEScheduler, SubVPSDEScheduler]
EPS = 1e-5  # the pipeline's default likelihood eps (score_sde's)


def mixture_16d(scheduler, **config):
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 16, generator=g, dtype=torch.float64) * 1.5
    stds = 0.3 + 0.5 * torch.rand(3, 16, generator=g, dtype=torch.float64)
    return GaussianMixtureScoreModel.from_mixture([0.2, 0.3, 0.5], means, stds, scheduler=scheduler, **config)


def make_pipe(model, scheduler, **kwargs):
    pipe = ScoreSdeLikelihoodPipeline(unet=model, scheduler=scheduler, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------- the common checks
class TestScoreSdeLikelihoodPipelineCommon(PipelineCommonTest):
    pipeline_class = ScoreSdeLikelihoodPipeline
    output_types = ()
    callback_tensor = None
    shared_pipeline_classes = (ScoreSdeODEPipeline, ScoreSdePCPipeline)

    def get_dummy_components(self):
        scheduler = VPSDEScheduler()
        return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

    def get_dummy_inputs(self, generator):
        data = torch.tensor([[2.0, 2.0], [-2.0, 1.5], [0.5, -2.5]])
        # Hutchinson probes make the output depend on the generator (stochastic), reproducibly.
        return {"data": data, "divergence": "hutchinson", "num_probes": 2, "rtol": 1e-3, "atol": 1e-3, "generator": generator}

    def output_tensor(self, output):
        return output.log_likelihood


# ---------------------------------------------------------------------------- accuracy, exact divergence
@pytest.mark.parametrize("scheduler_class", SCHEDULERS)
@pytest.mark.parametrize("dim", [2, 16])
def test_exact_divergence_matches_exact_log_density(scheduler_class, dim):
    """The ODE gives log p_eps(x) (it starts at t = eps), so the target is `log_prob(x, t=eps)`, not t = 0; for VE
    both include the sigma_min smoothing of the data (sigma(0) = sigma_min), and they differ by O(eps) anyway.

    Two errors add up. (1) The solver's, held to rtol = atol = 1e-6. (2) The *prior mismatch*: the method uses
    log pi(z) of the prior N(0, prior_std^2 I) for the latent, while the true p_1 is the mixture pushed to t = 1;
    the gap log p_1(z) - log pi(z) is part of what the probability-flow likelihood is (the paper's numbers carry it
    too), here known in closed form: up to 0.03 nats/dim for VE (sigma_max = 50: the cross term mu.z / sigma_max^2)
    at the worst of 200 points, 0.008 for VP / sub-VP (m(1) = 0.0066). So: the mean error is within 0.01 nats/dim;
    with the mismatch taken out, every point is within 0.002 nats/dim.
    """
    scheduler = scheduler_class()
    model = (GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler) if dim == 2 else mixture_16d(scheduler)).double()
    pipe = make_pipe(model, scheduler)
    x = model.sample_data(200 if dim == 2 else 24, generator=torch.Generator().manual_seed(0))
    out = pipe(x, divergence="exact", rtol=1e-6, atol=1e-6)
    exact = model.log_prob(x, t=scheduler.resolve_sampling_eps(default=EPS))  # 1e-5, or 1/N for a discrete map
    error = out.log_likelihood - exact
    assert error.abs().mean() / dim < 0.01, error.abs().mean() / dim
    prior_mismatch = model.log_prob(out.latents, t=1.0) - out.prior_logp
    assert (error + prior_mismatch).abs().max() / dim < 2e-3, (error + prior_mismatch).abs().max() / dim
    assert torch.equal(out.stderr, torch.zeros_like(out.stderr))
    torch.testing.assert_close(out.bits_per_dim, -out.log_likelihood / (dim * math.log(2)))
    torch.testing.assert_close(out.prior_logp, scheduler.sde.prior_logp(out.latents))


def test_latent_is_the_encoding():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    x = model.sample_data(8, generator=torch.Generator().manual_seed(0))
    out = make_pipe(model, scheduler)(x, divergence="exact", rtol=1e-7, atol=1e-7)
    ode = ScoreSdeODEPipeline(unet=model, scheduler=scheduler)
    ode.set_progress_bar_config(disable=True)
    z = ode.encode(x, sampling_eps=scheduler.resolve_sampling_eps(default=EPS), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(out.latents, z, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------- accuracy, Hutchinson
def test_hutchinson_is_within_its_estimated_error():
    """Hutchinson with P probes per point, held fixed along the trajectory, estimates the integrated divergence
    without bias; the spread of the P per-probe estimates gives its standard error (`stderr`). Against the
    exact-divergence result (same ODE, same tolerance: the solver and prior errors cancel), the standardised
    errors err / stderr must look roughly like draws of a t-distribution with P - 1 = 7 degrees of freedom
    (variance 1.4; heavier-tailed in truth, since one probe's estimate is a weighted chi-square, not a Gaussian):
    their mean square within [0.3, 3] over 24 points, at least 85% within 3 (t_7: 98%), none beyond 12, and the
    mean error within 4 standard errors of zero. The estimated error, stated: for this 16-D VP mixture with 8 probes per point,
    the standard error is about 1.2 nats (0.08 nats/dim) with Gaussian probes and 0.37 nats (0.023 nats/dim) with
    Rademacher probes, whose variance 2 (||A||_F^2 - sum A_ii^2) lacks the diagonal of A = int J dt, the larger
    part here (J = -beta/2 I - g^2/2 Hessian), against 2 ||A||_F^2 for Gaussian probes. It falls as 1/sqrt(P)."""
    scheduler = VPSDEScheduler()
    model = mixture_16d(scheduler).double()
    pipe = make_pipe(model, scheduler)
    x = model.sample_data(24, generator=torch.Generator().manual_seed(0))
    exact = pipe(x, divergence="exact").log_likelihood
    mean_stderr = {}
    for probe_type in ("gaussian", "rademacher"):
        out = pipe(x, divergence="hutchinson", probe_type=probe_type, num_probes=8, generator=torch.Generator().manual_seed(1))
        error = out.log_likelihood - exact
        z = error / out.stderr
        assert 0.3 < z.pow(2).mean() < 3.0, (probe_type, z)
        assert (z.abs() < 3).double().mean() >= 0.85 and z.abs().max() < 12, (probe_type, z)
        assert error.mean().abs() < 4 * out.stderr.pow(2).sum().sqrt() / len(x), (probe_type, error.mean())
        mean_stderr[probe_type] = out.stderr.mean().item()
    assert mean_stderr["gaussian"] / 16 < 0.15 and mean_stderr["rademacher"] / 16 < 0.04, mean_stderr
    assert mean_stderr["rademacher"] < 0.5 * mean_stderr["gaussian"], mean_stderr


def test_divergence_estimators_on_a_linear_map():
    # fn(x) = x M^T has divergence tr(M); Hutchinson's mean over many probes converges to it.
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=g, dtype=torch.float64)
    fn = lambda x: x @ m.T  # noqa: E731
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    out, div = divergence_exact(fn, x)
    torch.testing.assert_close(out, fn(x))
    torch.testing.assert_close(div, torch.full((3,), m.trace().item(), dtype=torch.float64))
    for probe_type in ("gaussian", "rademacher"):
        probes = sample_probes(4000, x.shape, probe_type, generator=g, dtype=torch.float64)
        assert torch.all(probes.abs() == 1) if probe_type == "rademacher" else probes.std().sub(1).abs() < 0.05
        _, estimates = divergence_hutchinson(fn, x, probes)
        assert estimates.shape == (3, 4000)
        assert (estimates.mean(1) - m.trace()).abs().max() < 5 * estimates.std(1).max() / math.sqrt(4000)


# ---------------------------------------------------------------------------- images: dequantization, bits/dim
def test_dequantization_offsets():
    # bits/dim = nll_bits(y) - log2(b - a) + 8: +7 for [-1, 1] (score_sde's offset 7 - inverse_scaler(-1)), +8 for [0, 1].
    log_p = torch.tensor([-10.0])
    for data_range, offset in (((-1.0, 1.0), 7.0), ((0.0, 1.0), 8.0), ((0.0, 255.0), 8 - math.log2(255))):
        bpd = bits_per_dim(dequantized_log_likelihood(log_p, 4, data_range), 4)
        torch.testing.assert_close(bpd, bits_per_dim(log_p, 4) + offset)


@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_bits_per_dim_of_a_gaussian_image_model_is_the_closed_form(data_range):
    """A model that is exactly N(mu, s^2 I) on 1x2x2 images in the model's range [a, b]. For u in {0..255}^D, with
    y = a + (b - a)(u + w) / 256, w ~ U[0,1)^D, the expected model log-density has the closed form
    E_w[log N(y; m mu, v)] = -D/2 log(2 pi v) - sum((ybar - m mu)^2 + delta^2 / 12) / (2 v), where ybar is y at
    w = 1/2, delta = (b - a) / 256, and m, v = m^2 s^2 + sigma^2 are the mean coefficient and variance at t = eps
    (the ODE gives log p_eps). Then bits/dim = -(E_w[log p(y)] + D log((b - a) / 256)) / (D ln 2). With 64
    dequantization draws the Monte-Carlo error of the mean is about 1e-3 bits/dim; tolerance 5e-3."""
    a, b = data_range
    scheduler = VPSDEScheduler()
    mu, s = a + 0.55 * (b - a), 0.25 * (b - a)
    model = GaussianMixtureScoreModel.from_mixture([1.0], [[mu] * 4], [s], scheduler=scheduler, sample_size=2, in_channels=1).double()
    pipe = make_pipe(model, scheduler, data_range=data_range)
    u = torch.tensor([[[[0, 255], [128, 77]]], [[[200, 201], [30, 140]]], [[[128, 128], [128, 128]]]], dtype=torch.uint8)
    out = pipe(u, num_dequantization_draws=64, generator=torch.Generator().manual_seed(0))
    assert out.latents.shape == (64, 3, 1, 2, 2)

    d = 4
    t = torch.tensor([EPS], dtype=torch.float64)
    m, sigma = scheduler.sde.marginal_mean_coeff(t).item(), scheduler.sde.marginal_std(t).item()
    var = m**2 * s**2 + sigma**2
    delta = (b - a) / 256
    ybar = a + (b - a) * (u.double() + 0.5) / 256
    expected_log_p = -0.5 * d * math.log(2 * math.pi * var) - ((ybar - m * mu) ** 2 + delta**2 / 12).flatten(1).sum(1) / (2 * var)
    expected_bpd = -(expected_log_p + d * math.log((b - a) / 256)) / (d * math.log(2))
    torch.testing.assert_close(out.bits_per_dim, expected_bpd, atol=5e-3, rtol=0)
    torch.testing.assert_close(out.log_likelihood, -expected_bpd * d * math.log(2), atol=5e-3 * d * math.log(2), rtol=0)


def test_image_data_formats_agree():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture([1.0], [[0.1, -0.2, 0.0, 0.3]], [0.4], scheduler=scheduler, sample_size=2, in_channels=1)
    pipe = make_pipe(model, scheduler)
    u = torch.tensor([[[[0, 255], [128, 77]]], [[[200, 201], [30, 140]]]], dtype=torch.uint8)
    kwargs = {"rtol": 1e-4, "atol": 1e-4}
    reference = pipe(u, generator=torch.Generator().manual_seed(0), **kwargs).bits_per_dim
    as_numpy_hw = u[:, 0].numpy()  # (B, H, W) uint8, as grey images come from datasets
    as_pil = [PIL.Image.fromarray(image) for image in as_numpy_hw]
    as_float = u.double()  # integer-valued floats, dequantized on request
    for data, extra in ((as_numpy_hw, {}), (as_numpy_hw[..., None], {}), (as_pil, {}), (as_float, {"dequantize": True})):
        out = pipe(data, generator=torch.Generator().manual_seed(0), **extra, **kwargs)
        torch.testing.assert_close(out.bits_per_dim, reference)
    # Continuous data in [-1, 1] is not dequantized: plain continuous bits/dim in the model's space.
    y = u.double() / 127.5 - 1
    out = pipe(y, **kwargs)
    torch.testing.assert_close(out.bits_per_dim, -out.log_likelihood / (4 * math.log(2)))


# ---------------------------------------------------------------------------- whole data sets
def test_evaluate_over_datasets_and_dataloaders():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture([1.0], [[0.1, -0.2, 0.0, 0.3]], [0.4], scheduler=scheduler, sample_size=2, in_channels=1)
    pipe = make_pipe(model, scheduler)
    images = torch.randint(0, 256, (5, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pil = [PIL.Image.fromarray(image[0].numpy()) for image in images]
    dataset = datasets.Dataset.from_dict({"image": pil, "label": [0, 1, 0, 1, 0]}).cast_column("image", datasets.Image())
    kwargs = {"rtol": 1e-4, "atol": 1e-4}

    result = pipe.evaluate(dataset, batch_size=2, generator=torch.Generator().manual_seed(0), **kwargs)
    assert result.num_samples == 5 and result.per_sample_bits_per_dim.shape == (5,) and result.nfe > 0
    assert result.bits_per_dim == pytest.approx(result.per_sample_bits_per_dim.mean().item())
    assert result.bits_per_dim_stderr == pytest.approx(result.per_sample_bits_per_dim.std().item() / math.sqrt(5))

    # The same data through a DataLoader of (images, labels), same batches and generator: the same numbers.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(5)), batch_size=2)
    from_loader = pipe.evaluate(loader, generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(from_loader.per_sample_bits_per_dim, result.per_sample_bits_per_dim)

    # Dict batches, and max_samples.
    dict_batches = [{"pixels": images[:3]}, {"pixels": images[3:]}]
    limited = pipe.evaluate(dict_batches, image_column="pixels", max_samples=4, **kwargs)
    assert limited.num_samples == 4

    with pytest.raises(ValueError, match="no column 'img'"):
        pipe.evaluate(dataset, image_column="img")
    with pytest.raises(ValueError, match="no samples"):
        pipe.evaluate([], **kwargs)


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def image_pipe():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture([1.0], [[0.1, -0.2, 0.0, 0.3]], [0.4], scheduler=scheduler, sample_size=2, in_channels=1)
    return make_pipe(model, scheduler)


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        (torch.full((2, 1, 2, 2), 1.5), {}, r"data must lie in the model's data range \[-1.0, 1.0\]; 8 of 8 entries are outside .* Pass 8-bit images as integers"),
        (torch.full((2, 1, 2, 2), 300, dtype=torch.int64), {}, r"integer values in \{0, ..., 255\}"),
        (torch.full((2, 1, 2, 2), 0.5), {"dequantize": True}, "not integers"),
        (torch.full((2, 1, 2, 2), 3, dtype=torch.int64), {"num_levels": 1}, "num_levels must be an integer >= 2"),
        (torch.zeros(2, 3, 2, 2), {}, r"Expected samples of shape \(B, 1, 2, 2\)"),
        (torch.zeros(2, 1, 4, 4), {}, r"Expected samples of shape \(B, 1, 2, 2\)"),
        (torch.zeros(2, 1, 2, 2), {"num_dequantization_draws": 4}, "discrete \\(integer\\) data only"),
        (torch.zeros(2, 1, 2, 2), {"rtol": 0.0}, "rtol must be a positive number"),
        (torch.zeros(2, 1, 2, 2), {"atol": -1.0}, "atol must be a positive number"),
        (torch.zeros(2, 1, 2, 2), {"divergence": "trace"}, "divergence must be one of"),
        (torch.zeros(2, 1, 2, 2), {"divergence": "hutchinson", "probe_type": "sphere"}, "probe_type"),
        (torch.zeros(2, 1, 2, 2), {"divergence": "hutchinson", "num_probes": 0}, "num_probes"),
        (torch.zeros(2, 1, 2, 2), {"solver": "rk4"}, "needs num_inference_steps"),
        (torch.zeros(2, 1, 2, 2), {"sampling_eps": 1.0}, "sampling_eps"),
        ("not data", {}, "torch.Tensor, numpy array, PIL image"),
    ],
)
def test_bad_input(image_pipe, data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_pipe(data, **kwargs)


def test_vector_data_is_not_range_checked_unless_asked():
    scheduler = VPSDEScheduler()
    pipe = make_pipe(GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler)
    x = torch.tensor([[2.0, -2.0]])
    assert torch.isfinite(pipe(x, rtol=1e-3, atol=1e-3).log_likelihood).all()
    with pytest.raises(ValueError, match="model.s data range"):
        pipe(x, check_range=True)


def test_fixed_step_solver_and_float32():
    scheduler = VESDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    x = model.sample_data(16, generator=torch.Generator().manual_seed(0))
    pipe = make_pipe(model, scheduler)
    out = pipe(x, solver="rk4", num_inference_steps=100)
    assert out.nfe == 400 and out.log_likelihood.dtype == torch.float32
    exact = model.double().log_prob(x.double(), t=EPS)
    assert (out.log_likelihood.double() - exact).abs().mean() / 2 < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_device_clean():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture([1.0], [[0.1, -0.2, 0.0, 0.3]], [0.4], scheduler=scheduler, sample_size=2, in_channels=1)
    pipe = make_pipe(model, scheduler).to("cuda")
    u = torch.randint(0, 256, (3, 1, 2, 2), dtype=torch.uint8)
    for divergence in ("exact", "hutchinson"):
        out = pipe(u, divergence=divergence, num_dequantization_draws=2, generator=torch.Generator().manual_seed(0))
        assert out.log_likelihood.device.type == "cuda" and torch.isfinite(out.bits_per_dim).all()
