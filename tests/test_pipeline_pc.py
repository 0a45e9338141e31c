"""Tests of `ScoreSdePCPipeline` and `ScoreSdeAnnealedLangevinPipeline`."""

import pytest

import torch

from scoresde_diffusers import GaussianMixtureScoreModel, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeAnnealedLangevinPipeline, ScoreSdePCPipeline

from pipeline_test_mixin import PipelineCommonTest


class TestScoreSdePCPipelineCommon(PipelineCommonTest):
    pipeline_class = ScoreSdePCPipeline
    shared_pipeline_classes = (ScoreSdeAnnealedLangevinPipeline,)

    def get_dummy_components(self):
        scheduler = VESDEScheduler(sigma_max=10.0)
        return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

    def get_dummy_inputs(self, generator):
        return {"batch_size": 3, "num_inference_steps": 4, "generator": generator}


class TestScoreSdeAnnealedLangevinPipelineCommon(PipelineCommonTest):
    pipeline_class = ScoreSdeAnnealedLangevinPipeline
    shared_pipeline_classes = (ScoreSdePCPipeline,)

    def get_dummy_components(self):
        scheduler = VESDEScheduler(sigma_max=10.0)
        return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

    def get_dummy_inputs(self, generator):
        return {"batch_size": 3, "num_inference_steps": 4, "n_steps_each": 2, "generator": generator}


def four_gaussians_pipeline(scheduler, pipeline_class=ScoreSdePCPipeline, **model_config):
    pipe = pipeline_class(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler, **model_config), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def mixture_16d(scheduler):
    """4 components in 16-D: weights 0.1-0.4, means N(0, 2^2 I), covariances 0.3 A A^T + 0.05 I (A Gaussian / 4),
    fixed seed: anisotropic, correlated, well separated (closest means about 8 apart, component stds 0.2-1.1)."""
    g = torch.Generator().manual_seed(16)
    k, d = 4, 16
    means = 2.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64) / d**0.5
    covariances = 0.3 * a @ a.transpose(-1, -2) + 0.05 * torch.eye(d, dtype=torch.float64)
    return GaussianMixtureScoreModel.from_mixture([0.1, 0.2, 0.3, 0.4], means, covariances, scheduler=scheduler)


# ---------------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("scheduler_class", [VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler])
def test_every_predictor_and_corrector_runs_and_counts_nfe(scheduler_class):
    from scoresde_diffusers import CORRECTORS, PREDICTORS

    pipe = four_gaussians_pipeline(scheduler_class())
    for predictor in PREDICTORS.names():
        for corrector in CORRECTORS.names():
            if predictor == corrector == "none":
                continue
            out = pipe(batch_size=4, num_inference_steps=3, predictor=predictor, corrector=corrector, correct_steps=2, output_type="pt")
            assert out.images.shape == (4, 2) and torch.isfinite(out.images).all(), (predictor, corrector)
            assert out.nfe == 3 * (2 if corrector != "none" else 0) + 3 * (predictor != "none"), (predictor, corrector)


def test_overrides_hold_for_one_call_only():
    scheduler = VESDEScheduler(sigma_max=10.0)
    pipe = four_gaussians_pipeline(scheduler)
    config = dict(scheduler.config)
    out = pipe(batch_size=2, num_inference_steps=5, snr=0.3, correct_steps=3, predictor="euler_maruyama", corrector="ald", output_type="pt")
    assert out.nfe == 5 * 3 + 5
    assert pipe.scheduler is scheduler and dict(scheduler.config) == config
    assert pipe(batch_size=2, num_inference_steps=5, output_type="pt").nfe == 10
    assert scheduler.num_inference_steps == 5  # without overrides the pipeline's own scheduler runs the grid


@pytest.mark.parametrize("predictor, corrector", [("reverse_diffusion", "langevin"), ("none", "annealed_langevin")])
def test_pipeline_is_the_pc_loop_of_the_scheduler(predictor, corrector):
    """Algorithms 2-3 by hand: at each time, 2 corrector steps then the predictor step; the last step's mean."""
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = VESDEScheduler(sigma_max=10.0, predictor=predictor, corrector=corrector, correct_steps=2)
    pipe = four_gaussians_pipeline(scheduler)
    out = pipe(batch_size=5, num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="pt")
    model, generator = pipe.unet, torch.Generator().manual_seed(0)
    x = randn_tensor((5, 2), generator=generator) * scheduler.init_noise_sigma
    scheduler.set_timesteps(6)
    for i, t in enumerate(scheduler.timesteps):
        for _ in range(2):
            corrected = scheduler.step_correct(model(x, t).sample, x, t, generator=generator)
            x = corrected.prev_sample
        if predictor != "none":
            x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
        elif i == 5:
            x = corrected.prev_sample_mean
    assert torch.equal(out.images, x)
    assert out.nfe == 6 * 2 + (6 if predictor != "none" else 0)


def test_latents_and_generators():
    pipe = four_gaussians_pipeline(VPSDEScheduler())
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    a = pipe(batch_size=3, num_inference_steps=5, latents=noise, generator=torch.Generator().manual_seed(1), output_type="pt").images
    b = pipe(batch_size=3, num_inference_steps=5, latents=noise.clone(), generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert torch.equal(a, b)
    c = pipe(batch_size=3, num_inference_steps=5, generator=torch.Generator().manual_seed(5), output_type="pt").images
    d = pipe(batch_size=3, num_inference_steps=5, generator=[torch.Generator().manual_seed(i) for i in range(3)], output_type="pt").images
    assert c.shape == d.shape == (3, 2)


def test_float64_model_samples_in_float64():
    pipe = four_gaussians_pipeline(VESDEScheduler(sigma_max=10.0))
    x32 = pipe(batch_size=64, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipe.to(torch.float64)
    x64 = pipe(batch_size=64, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert x32.dtype == torch.float32 and x64.dtype == torch.float64
    assert pipe.scheduler.timesteps.device == pipe.device
    assert torch.isfinite(x64).all()  # (float32 and float64 draw different noise from one seed: not comparable)


def test_generic_loading_of_a_subclass_pipeline_file(tmp_path):
    from diffusers import DiffusionPipeline

    pipe = four_gaussians_pipeline(VESDEScheduler(sigma_max=10.0), ScoreSdeAnnealedLangevinPipeline)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "pipeline.py").read_text().count("import ScoreSdeAnnealedLangevinPipeline") == 1
    loaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded) is ScoreSdeAnnealedLangevinPipeline
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=3, num_inference_steps=4, n_steps_each=2, output_type="pt")
    a = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(a, loaded(generator=torch.Generator().manual_seed(0), **kwargs).images)
    # a class of ours loads the same folder without running pipeline.py, as any pipeline class of the library
    assert type(ScoreSdePCPipeline.from_pretrained(tmp_path)) is ScoreSdePCPipeline


def test_data_range_is_saved(tmp_path):
    scheduler = VESDEScheduler(sigma_max=10.0)
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    pipe = ScoreSdePCPipeline(unet=model, scheduler=scheduler, data_range=(-4, 4))
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    loaded = ScoreSdePCPipeline.from_pretrained(tmp_path)
    assert loaded.data_range == (-4.0, 4.0)
    x = pipe(batch_size=8, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="pt").images
    y = loaded(batch_size=8, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    torch.testing.assert_close(torch.from_numpy(y), ((x + 4) / 8).clamp(0, 1))
    with pytest.raises(ValueError, match="data_range"):
        ScoreSdePCPipeline(unet=model, scheduler=scheduler, data_range=(1, -1))


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_error():
    scheduler = VESDEScheduler(sigma_max=10.0)
    pipe = four_gaussians_pipeline(scheduler)
    image_pipe = four_gaussians_pipeline(scheduler, sample_size=1, in_channels=2)
    cases = [
        (pipe, dict(latents=torch.randn(2, 3)), r"shape \(B, 2\)"),
        (pipe, dict(latents=torch.randn(3, 2)), "batch_size"),
        (image_pipe, dict(latents=torch.randn(2, 3, 1, 1)), r"\(B, 2, 1, 1\).*channels"),
        (image_pipe, dict(latents=torch.randn(2, 2)), r"\(B, 2, 1, 1\)"),
        (pipe, dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
        (pipe, dict(num_inference_steps=2.5), "num_inference_steps"),
        (pipe, dict(batch_size=0), "batch_size"),
        (pipe, dict(output_type="jpeg"), "output_type must be one of"),
        (pipe, dict(predictor="heun-ish"), "Unknown predictor 'heun-ish'. Registered predictors: .*euler_maruyama"),
        (pipe, dict(corrector="mala"), "Unknown corrector 'mala'. Registered correctors: .*langevin"),
        (pipe, dict(predictor="none", corrector="none"), "nothing to sample"),
        (pipe, dict(correct_steps=-1), "correct_steps"),
        (pipe, dict(snr=-0.1), "snr must be positive"),
    ]
    for target, kwargs, message in cases:
        arguments = {"batch_size": 2, "num_inference_steps": 3, "output_type": "pt", **kwargs}
        with pytest.raises(ValueError, match=message):
            target(**arguments)
    ald = four_gaussians_pipeline(scheduler, ScoreSdeAnnealedLangevinPipeline)
    with pytest.raises(ValueError, match="either step_lr"):
        ald(batch_size=2, num_inference_steps=3, step_lr=1e-5, snr=0.1)
    with pytest.raises(ValueError, match="n_steps_each"):
        ald(batch_size=2, num_inference_steps=3, n_steps_each=0)
    with pytest.raises(ValueError, match="step_lr must be positive"):
        ald(batch_size=2, num_inference_steps=3, step_lr=0.0)


# ---------------------------------------------------------------------------------------------- accuracy
# Samplers against the exact mixture, in float64, 2000 samples, compared with 20000 exact samples:
#   weights: max_k |mean_x p(k | x) - w_k|; its sampling error is sqrt(w (1 - w) / 2000) <= 0.011.
#   log_p:   mean exact log p_0 of the samples minus that of exact samples; standard error about 0.025 in 2-D
#            (sd of log p about 1.1) and 0.065 in 16-D (about 2.9).
#   spread:  max_d |std_d(samples) / std_d(exact) - 1|; standard error about 0.016 per dimension.
# Measured over seeds 0-3 (2-D, 1000 steps; ALD 100 levels x 10 steps):
#   VE PC      weights <= 0.015, log_p in [-0.051, -0.022], spread <= 0.017
#   VP EM      weights <= 0.021, log_p in [-0.013, 0.004],  spread <= 0.015
#   sub-VP EM  weights <= 0.022, log_p in [-0.024, 0.003],  spread <= 0.014
#   16-D VE PC weights <= 0.020, log_p in [-0.24, -0.15],   spread <= 0.053  (the PC bias: ~0.013 nats/dim)
#   16-D VP EM weights <= 0.020, log_p in [-0.07, 0.05],     spread <= 0.054
# Tolerances: weights 0.05 (4.5 standard errors); log_p 0.12 in 2-D and 0.45 in 16-D (the measured bias plus
# 4 standard errors); spread 0.06 in 2-D and 0.1 in 16-D. A sampler with a wrong weight, a missing mode, or a
# step that is off by a factor sqrt(2) in its noise fails them by a wide margin.
# Annealed Langevin mixes the modes less well than PC at 1000 evaluations (weights off by up to 0.037 over
# seeds 0-3, log_p in [-0.072, -0.032], spread <= 0.031): its own tolerances 0.06, 0.15, 0.06.
TOLERANCES = {2: (0.05, 0.12, 0.06), 16: (0.05, 0.45, 0.1), "ald": (0.06, 0.15, 0.06)}


def check_recovers_mixture(model, samples, seed=0, tolerances=None):
    tol_weights, tol_log_p, tol_spread = tolerances or TOLERANCES[model.config.dim]
    exact = model.sample_data(20000, generator=torch.Generator().manual_seed(1000 + seed))
    weights = (model.component_posteriors(samples).mean(0) - model.weights).abs().max().item()
    log_p = (model.log_prob(samples).mean() - model.log_prob(exact).mean()).item()
    spread = (samples.std(0) / exact.std(0) - 1).abs().max().item()
    assert torch.isfinite(samples).all()
    assert weights < tol_weights, f"mode weights off by {weights:.3f}"
    assert abs(log_p) < tol_log_p, f"mean log-density off by {log_p:.3f}"
    assert spread < tol_spread, f"per-dimension spread off by {spread:.3f}"


@pytest.mark.parametrize(
    "dim, scheduler_class, predictor, corrector",
    [
        (2, VESDEScheduler, "reverse_diffusion", "langevin"),  # PC, Algorithm 2 (VE)
        (2, VPSDEScheduler, "euler_maruyama", "none"),  # EM
        (2, SubVPSDEScheduler, "euler_maruyama", "none"),
        (16, VESDEScheduler, "reverse_diffusion", "langevin"),
        (16, VPSDEScheduler, "euler_maruyama", "none"),
    ],
    ids=["2d-ve-pc", "2d-vp-em", "2d-subvp-em", "16d-ve-pc", "16d-vp-em"],
)
def test_sampling_recovers_the_mixture(dim, scheduler_class, predictor, corrector):
    scheduler = scheduler_class(predictor=predictor, corrector=corrector)
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler) if dim == 2 else mixture_16d(scheduler)
    pipe = ScoreSdePCPipeline(unet=model, scheduler=scheduler).to(torch.float64)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2000, num_inference_steps=1000, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.dtype == torch.float64
    assert out.nfe == 1000 * (2 if corrector != "none" else 1)
    check_recovers_mixture(pipe.unet, out.images)


def test_annealed_langevin_recovers_the_mixture():
    """Annealed Langevin dynamics with the VE SDE (sigma 0.01 -> 50): 100 noise levels x 10 steps, snr 0.4."""
    scheduler = VESDEScheduler()
    pipe = four_gaussians_pipeline(scheduler, ScoreSdeAnnealedLangevinPipeline).to(torch.float64)
    out = pipe(batch_size=2000, num_inference_steps=100, n_steps_each=10, snr=0.4, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.nfe == 1000
    check_recovers_mixture(pipe.unet, out.images, tolerances=TOLERANCES["ald"])
