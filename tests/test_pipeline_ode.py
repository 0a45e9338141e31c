"""Tests of `ScoreSdeODEPipeline`: the common pipeline checks, accuracy of probability-flow ODE sampling against
exact Gaussian mixtures, encode/decode round trips, the fixed-step solvers and the error messages."""


import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from scoresde_diffusers import GaussianMixtureScoreModel, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline, ScoreSdeODEPipeline, ScoreSdePCPipeline

from pipeline_test_mixin import PipelineCommonTest

SCHEDULERS = [VPSDEScheduler, VESDEScheduler, SubVPSDEScheduler]


def mixture_16d(scheduler, **config):
    """3 unequal, well separated components in 16-D with diagonal covariances (fixed seed)."""
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 16, generator=g, dtype=torch.float64) * 1.5
    stds = 0.3 + 0.5 * torch.rand(3, 16, generator=g, dtype=torch.float64)
    return GaussianMixtureScoreModel.from_mixture([0.2, 0.3, 0.5], means, stds, scheduler=scheduler, **config)


def make_pipe(model, scheduler):
    pipe = ScoreSdeODEPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------- the common checks
class TestScoreSdeODEPipelineFixedStep(PipelineCommonTest):
    pipeline_class = ScoreSdeODEPipeline
    shared_pipeline_classes = (ScoreSdePCPipeline, ScoreSdeLikelihoodPipeline)

    def get_dummy_components(self):
        scheduler = VESDEScheduler(sigma_max=10.0)
        return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

    def get_dummy_inputs(self, generator):
        return {"batch_size": 3, "num_inference_steps": 4, "solver": "heun", "generator": generator}


class TestScoreSdeODEPipelineAdaptive(PipelineCommonTest):
    pipeline_class = ScoreSdeODEPipeline
    callback_tensor = None  # adaptive solvers pick their own steps: no per-step callback (tested below)

    def get_dummy_components(self):
        scheduler = VPSDEScheduler()
        return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

    def get_dummy_inputs(self, generator):
        return {"batch_size": 3, "generator": generator, "rtol": 1e-3, "atol": 1e-3}


# ---------------------------------------------------------------------------- accuracy against exact mixtures
def check_samples(model, samples, num_exact, weight_tol, logp_tol, std_rtol):
    """Mode weights, mean exact log-density and per-dimension spread of `samples` against the mixture."""
    exact = model.sample_data(num_exact, generator=torch.Generator().manual_seed(123))
    weights = torch.bincount(model.component_posteriors(samples).argmax(1), minlength=model.config.num_components) / len(samples)
    assert (weights - model.weights).abs().max() < weight_tol, (weights, model.weights)
    mean_logp, exact_logp = model.log_prob(samples).mean(), model.log_prob(exact).mean()
    assert abs(mean_logp - exact_logp) < logp_tol, (mean_logp, exact_logp)
    std, exact_std = samples.flatten(1).std(0), exact.flatten(1).std(0)
    assert ((std - exact_std).abs() / exact_std).max() < std_rtol, (std, exact_std)


@pytest.mark.parametrize("scheduler_class", SCHEDULERS)
def test_adaptive_sampler_recovers_2d_mixture(scheduler_class):
    # 2000 samples: weight std <= sqrt(0.25 / 2000) = 0.011 (tolerance 0.04, 3.5 sigma); log-density std about 1.1
    # per sample, so the mean is known to 0.025 (tolerance 0.1); per-dimension std to 1.6% (tolerance 5%).
    scheduler = scheduler_class()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    output = make_pipe(model, scheduler)(batch_size=2000, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert output.images.dtype == torch.float64 and output.nfe < 300
    check_samples(model, output.images, 20000, weight_tol=0.04, logp_tol=0.1, std_rtol=0.05)


def test_adaptive_sampler_recovers_16d_mixture():
    # 1000 samples: weight std <= 0.016 (tolerance 0.06); log-density std about 3 per sample, mean known to 0.1
    # (tolerance 0.4); sample std of each dimension to 2.2% (tolerance 10% for the max over 16 dimensions).
    scheduler = VPSDEScheduler()
    model = mixture_16d(scheduler).double()
    output = make_pipe(model, scheduler)(batch_size=1000, generator=torch.Generator().manual_seed(0), output_type="pt")
    check_samples(model, output.images, 20000, weight_tol=0.06, logp_tol=0.4, std_rtol=0.1)


# ---------------------------------------------------------------------------- encode / decode
@pytest.mark.parametrize("scheduler_class", SCHEDULERS)
def test_decode_encode_round_trip_2d(scheduler_class):
    scheduler = scheduler_class()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    pipe = make_pipe(model, scheduler)
    x = model.sample_data(64, generator=torch.Generator().manual_seed(1))
    z = pipe.encode(x)
    assert pipe.nfe > 0
    # The latent is on the prior's scale: N(0, init_noise_sigma^2) to first order.
    assert 0.7 < float(z.std() / scheduler.init_noise_sigma) < 1.3
    x_back = pipe.decode(z)
    relative = (x_back - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert relative.max() < 1e-3, relative.max()


def test_decode_encode_round_trip_16d_images():
    scheduler = VPSDEScheduler()
    model = mixture_16d(scheduler, sample_size=4, in_channels=1).double()
    pipe = make_pipe(model, scheduler)
    x = model.sample_data(32, generator=torch.Generator().manual_seed(1))
    assert x.shape == (32, 1, 4, 4)
    x_back = pipe.decode(pipe.encode(x))
    relative = (x_back - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert relative.max() < 1e-3, relative.max()
    # Sampling from given latents is decoding them: __call__(latents=noise) == decode(init_noise_sigma * noise).
    noise = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sampled = pipe(batch_size=4, latents=noise, output_type="pt").images
    torch.testing.assert_close(sampled, pipe.decode(noise * scheduler.init_noise_sigma))


def test_encoding_is_identifiable():
    # The latent of a point depends on the data distribution only: two pipelines (float32 and float64 models,
    # different solvers) give the same encoding.
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    x = model.sample_data(16, generator=torch.Generator().manual_seed(1))
    z32 = make_pipe(model, scheduler).encode(x, solver="rk4", num_inference_steps=200)
    model64 = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    z64 = make_pipe(model64, scheduler).encode(x.double(), rtol=1e-7, atol=1e-7)
    assert z32.dtype == torch.float32 and z64.dtype == torch.float64
    torch.testing.assert_close(z32.double(), z64, atol=2e-3, rtol=0)


# ---------------------------------------------------------------------------- fixed-step solvers and grids
def test_fixed_step_solvers_converge_to_the_adaptive_solution():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    pipe = make_pipe(model, scheduler)
    noise = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = pipe(batch_size=32, latents=noise, rtol=1e-9, atol=1e-9, output_type="pt").images
    errors = {}
    for solver, stages in (("euler", 1), ("heun", 2), ("rk4", 4)):
        out = pipe(batch_size=32, latents=noise, solver=solver, num_inference_steps=100, output_type="pt")
        assert out.nfe == stages * 100
        errors[solver] = (out.images - reference).abs().max().item()
    assert errors["rk4"] < errors["heun"] < errors["euler"], errors
    assert errors["rk4"] < 1e-3, errors
    # The log-sigma grid runs at the same cost; for VP it starves the early, strongly contracting part of the
    # trajectory (beta(t) up to 20), so it is *less* accurate here: a grid is a choice, not a free win.
    log_sigma = pipe(batch_size=32, latents=noise, solver="heun", num_inference_steps=100, time_spacing="log_sigma", output_type="pt")
    assert log_sigma.nfe == 200 and (log_sigma.images - reference).abs().max().item() < 0.5


def test_custom_time_grid_and_denoise():
    scheduler = VESDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    pipe = make_pipe(model, scheduler)
    grid = torch.linspace(1.0, 1e-5, 21).tolist()
    out = pipe(batch_size=4, timesteps=grid, solver="euler", generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.nfe == 20
    denoised = pipe(batch_size=4, timesteps=grid, solver="euler", denoise=True, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert denoised.nfe == 21  # one more evaluation for the Tweedie step
    assert pipe(batch_size=4, timesteps=grid, output_type="pt").nfe == 40  # heun is the default with a grid
    # At eps = 1e-5 the VE data is smoothed by sigma_min = 0.01 only: denoising moves it by about that much.
    assert (denoised.images - out.images).abs().max() < 0.05


def test_callback_receives_model_timesteps():
    scheduler = VPSDEScheduler()
    pipe = make_pipe(GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler)
    seen = []
    pipe(batch_size=2, num_inference_steps=5, solver="euler", output_type="pt", callback_on_step_end=lambda p, i, t, kw: seen.append(float(t)) or kw)
    grid = torch.linspace(1.0, scheduler.config.sampling_eps, 6, dtype=torch.float64)
    expected = scheduler.t_to_timestep(grid[:-1]).tolist()
    assert seen == pytest.approx(expected, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_device_clean():
    scheduler = VPSDEScheduler()
    pipe = make_pipe(GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler).to("cuda")
    cpu = make_pipe(GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler)
    for solver, steps in (("heun", 10), ("dopri5", None)):
        out = pipe(batch_size=4, num_inference_steps=steps, solver=solver, generator=torch.Generator().manual_seed(0), output_type="pt")
        assert out.images.device.type == "cuda"
        ref = cpu(batch_size=4, num_inference_steps=steps, solver=solver, generator=torch.Generator().manual_seed(0), output_type="pt")
        torch.testing.assert_close(out.images.cpu(), ref.images, atol=1e-3, rtol=0)
    x = torch.zeros(2, 2, device="cuda")
    assert pipe.decode(pipe.encode(x)).device.type == "cuda"


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def pipe():
    scheduler = VPSDEScheduler()
    return make_pipe(GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rtol": 0.0}, "rtol must be a positive number"),
        ({"atol": -1e-5}, "atol must be a positive number"),
        ({"solver": "dopri5", "num_inference_steps": 10}, "adaptive"),
        ({"solver": "rk4"}, "needs num_inference_steps"),
        ({"solver": "nope"}, "Registered ODE solvers"),
        ({"sampling_eps": 0.0}, "sampling_eps"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"time_spacing": "cosine", "num_inference_steps": 3}, "Registered time grids"),
        ({"timesteps": [0.5, 0.9], "solver": "euler"}, "strictly decreasing"),
        ({"timesteps": [1.0, 0.5], "num_inference_steps": 3}, "either num_inference_steps or timesteps"),
        ({"callback_on_step_end": lambda *a: {}}, "fixed-step solver"),
        ({"latents": torch.randn(2, 3)}, r"Expected samples of shape \(B, 2\)"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(**{"batch_size": 2, "output_type": "pt", **kwargs})


def test_bad_encode_decode_input(pipe):
    with pytest.raises(ValueError, match=r"Expected samples of shape \(B, 2\)"):
        pipe.encode(torch.randn(4, 3))
    with pytest.raises(ValueError, match="rtol must be a positive number"):
        pipe.decode(torch.randn(4, 2), rtol=-1.0)
    scheduler = VPSDEScheduler()
    image_pipe = make_pipe(mixture_16d(scheduler, sample_size=4, in_channels=1), scheduler)
    with pytest.raises(ValueError, match=r"Expected samples of shape \(B, 1, 4, 4\).*channels"):
        image_pipe.encode(torch.randn(2, 3, 4, 4))  # wrong channel count
    with pytest.raises(ValueError, match=r"Expected samples of shape \(B, 1, 4, 4\)"):
        image_pipe.decode(torch.randn(2, 1, 8, 8))  # wrong size
    pipe.scheduler = DDPMScheduler()
    with pytest.raises(ValueError, match="needs a ScoreSdeSchedulerMixin scheduler"):
        pipe.encode(torch.randn(4, 2))


@pytest.mark.parametrize("scheduler_class", [VPSDEScheduler, SubVPSDEScheduler])
def test_the_default_is_the_ode_scheduler_in_diffusers_own_loop(scheduler_class):
    """`ScoreSdeODEPipeline`'s default and `ScoreSdeDPMSolverMultistepScheduler.from_config(...)` swapped into
    diffusers' `DDPMPipeline`, told the data range and levels the pipeline knows, are one sampler: same generator,
    same samples. (Not VE: `DDPMPipeline` draws its prior with unit variance, ignoring `init_noise_sigma`.)"""
    from diffusers import DDPMPipeline

    from scoresde_diffusers import ScoreSdeDPMSolverMultistepScheduler

    scheduler = scheduler_class()
    # modes inside [-1, 1], where DDPMPipeline's clamp to the data range changes nothing
    model = GaussianMixtureScoreModel.from_mixture(
        [0.3, 0.7], [[-0.5, 0.4], [0.5, -0.3]], [[[0.02, 0.0], [0.0, 0.01]]] * 2, scheduler=scheduler, sample_size=1, in_channels=2
    )
    ours = make_pipe(model, scheduler)(batch_size=6, num_inference_steps=12, generator=torch.Generator().manual_seed(3), output_type="pt")
    ode_scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(scheduler.config, data_range=(-1.0, 1.0), num_levels=256)
    diffusers_pipe = DDPMPipeline(unet=model, scheduler=ode_scheduler)
    diffusers_pipe.set_progress_bar_config(disable=True)
    theirs = diffusers_pipe(batch_size=6, num_inference_steps=12, generator=torch.Generator().manual_seed(3), output_type="np").images
    expected = (ours.images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # DDPMPipeline's [-1, 1] -> [0, 1]
    assert ours.nfe == 12
    np.testing.assert_allclose(theirs, expected, atol=1e-6)


@pytest.mark.parametrize("data_range, num_levels", [((-1.0, 1.0), 256), ((0.0, 1.0), 17)])
def test_the_pipeline_tells_its_ode_scheduler_the_data_range_and_levels(data_range, num_levels):
    from scoresde_diffusers import ScoreSdeDPMSolverMultistepScheduler

    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    pipe = ScoreSdeODEPipeline(unet=model, scheduler=scheduler, data_range=data_range, num_levels=num_levels)
    ode_scheduler = pipe.ode_scheduler()
    assert (tuple(ode_scheduler.config.data_range), ode_scheduler.config.num_levels) == (data_range, num_levels)
    assert ode_scheduler.end_noise_level == max(ode_scheduler.trained_noise_level, (data_range[1] - data_range[0]) / (num_levels - 1))
    # an ODE scheduler's own settings are kept; only what it leaves None is filled in
    pipe.scheduler = ScoreSdeDPMSolverMultistepScheduler(num_levels=7)
    assert (tuple(pipe.ode_scheduler().config.data_range), pipe.ode_scheduler().config.num_levels) == (data_range, 7)
    pipe.scheduler = ScoreSdeDPMSolverMultistepScheduler(num_levels=7, data_range=(0.0, 2.0))
    assert pipe.ode_scheduler() is pipe.scheduler


def test_from_pipe_carries_the_data_range_and_levels():
    scheduler = VPSDEScheduler()
    pc = ScoreSdePCPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler, data_range=(0.0, 1.0), num_levels=17)
    ode = ScoreSdeODEPipeline.from_pipe(pc)
    assert (ode.unet, ode.scheduler, ode.data_range, ode.num_levels) == (pc.unet, pc.scheduler, (0.0, 1.0), 17)


def test_from_pipe_keeps_the_model_dtype_without_a_cast_warning(capsys):
    scheduler = VPSDEScheduler()
    pc = ScoreSdePCPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double(), scheduler=scheduler)
    ode = ScoreSdeODEPipeline.from_pipe(pc)
    assert ode.unet.dtype == torch.float64
    assert "float32" not in capsys.readouterr().err
    assert ScoreSdeODEPipeline.from_pipe(pc, dtype=torch.float32).unet.dtype == torch.float32


def test_from_pipe_takes_either_name_of_the_dtype_whatever_the_diffusers_version():
    scheduler = VPSDEScheduler()
    pc = ScoreSdePCPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler)
    assert ScoreSdeODEPipeline.from_pipe(pc, torch_dtype=torch.float64).unet.dtype == torch.float64
    assert ScoreSdeODEPipeline.from_pipe(pc, dtype=torch.float64).unet.dtype == torch.float64
    with pytest.raises(ValueError, match="both `dtype` and `torch_dtype`"):
        ScoreSdeODEPipeline.from_pipe(pc, dtype=torch.float64, torch_dtype=torch.float64)


def test_num_levels_is_saved_with_the_pipeline(tmp_path):
    scheduler = VPSDEScheduler()
    pipe = ScoreSdeODEPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler, num_levels=17)
    pipe.save_pretrained(tmp_path)
    assert ScoreSdeODEPipeline.from_pretrained(tmp_path).num_levels == 17
    with pytest.raises(ValueError, match="num_levels must be an integer >= 2"):
        ScoreSdeODEPipeline(unet=pipe.unet, scheduler=scheduler, num_levels=1)


@pytest.mark.parametrize("num_levels", [256, 17])
def test_exponential_solvers_run_on_the_ode_scheduler_grid(num_levels):
    # `solver="unipc_3m"` (and any exponential integrator without a grid of its own) steps through the very times
    # of the ODE scheduler: its spacing, from the prior to its derived end.
    from scoresde_diffusers.sampling.ode_solvers import get_ode_solver

    scheduler = VPSDEScheduler()
    pipe = ScoreSdeODEPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler, num_levels=num_levels)
    ode_scheduler = pipe.ode_scheduler()
    ode_scheduler.set_timesteps(12)
    eps = pipe.default_exponential_eps(None)
    grid = pipe.time_grid("unipc_3m", get_ode_solver("unipc_3m"), 11, eps, None, None, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(grid, ode_scheduler.t_grid.double(), rtol=1e-9, atol=1e-12)
    u_end = float(torch.exp(-0.5 * scheduler.sde.log_snr(grid[-1:])))
    assert u_end == pytest.approx(max(ode_scheduler.trained_noise_level, 2.0 / (num_levels - 1)), rel=1e-6)
