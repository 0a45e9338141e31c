"""Swapping our schedulers into existing diffusers code works, and the samples are right (issue 3, items 3 and 6).

- `VPSDEScheduler.from_config(DDPMScheduler(...).config)` maps the linear beta schedule (beta_min = beta_start N,
  beta_max = beta_end N) and keeps `prediction_type`, also for configs built in memory with defaults;
- the swapped scheduler runs unchanged in diffusers' own `DDPMPipeline` and in the standard loop of
  StableDiffusion-style pipelines, and `VESDEScheduler` in diffusers' `ScoreSdeVePipeline`;
- the other way, diffusers' DDPM-family schedulers load a VP config (ours, PC or ODE) with the same betas, and DDPM
  options the VP SDE cannot honour are an error (schedule) or a warning (x_0 clipping), naming them;
- `ScoreSdeVeScheduler` configs load into `VESDEScheduler`;
- a pipeline folder with our scheduler reloads it through `DiffusionPipeline.from_pretrained`.

Samples are checked against the exact Gaussian mixture the model scores: mode weights within 4 binomial standard
errors (+ 0.01), per-mode means and stds within a few standard errors of the component's.
"""

import inspect
import warnings

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from scoresde_diffusers import GaussianMixtureScoreModel, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.schedulers import ScoreSdeDPMSolverMultistepScheduler

Z = 4.0


def image_mixture(scheduler, low, high, std, sample_size=2, in_channels=3, seed=0, **config):
    """Three image-shaped Gaussian components with weights 0.2, 0.3, 0.5, means whose pixels are `low` or `high`."""
    g = torch.Generator().manual_seed(seed)
    dim = in_channels * sample_size**2
    pattern = torch.randint(0, 2, (3, dim), generator=g).double()
    pattern[0], pattern[1] = 0.0, 1.0  # distinct modes even in tiny dimension
    means = low + (high - low) * pattern
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    model = GaussianMixtureScoreModel.from_mixture(
        weights, means, torch.full((3,), std), scheduler=scheduler, sample_size=sample_size, in_channels=in_channels, **config
    )
    return model, weights, means


def check_mixture_samples(model, x, weights, means, std):
    """Mode weights, per-mode means and per-mode stds of flat samples x (n, D) against the mixture's."""
    n = x.shape[0]
    x = x.reshape(n, -1).double()
    post = model.double().component_posteriors(x)
    est = post.mean(0)
    allowed = Z * (weights * (1 - weights) / n).sqrt() + 0.01
    assert torch.all((est - weights).abs() <= allowed), f"weights {est.tolist()} vs {weights.tolist()}"
    labels = post.argmax(1)
    for k in range(len(weights)):
        xk = x[labels == k]
        nk, dim = xk.shape
        # mean of nk samples: SE std / sqrt(nk) per pixel; std: SE std / sqrt(2 nk) averaged over D pixels.
        assert (xk.mean(0) - means[k]).abs().max() <= Z * std / nk**0.5 + 1e-3, f"mode {k} mean"
        pixel_std = xk.std(0).mean()
        assert abs(pixel_std - std) <= Z * std / (2 * nk * dim) ** 0.5 + 0.05 * std, f"mode {k} std {pixel_std:.4f} vs {std}"


def images_to_samples(images):
    """diffusers' numpy output (B, H, W, C) back to (B, C, H, W) tensors."""
    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).double()


# ---------------------------------------------------------------------- DDPM config mapping
@pytest.mark.parametrize(
    "ddpm_kwargs, beta_min, beta_max, n",
    [
        ({}, 0.1, 20.0, 1000),
        ({"num_train_timesteps": 2000, "beta_start": 2e-4, "beta_end": 0.03}, 0.4, 60.0, 2000),
        ({"num_train_timesteps": 2000}, 0.2, 40.0, 2000),  # betas in memory as defaults (_use_default_values)
        ({"beta_end": 0.012}, 0.1, 12.0, 1000),
    ],
)
def test_ddpm_config_maps_to_vp(ddpm_kwargs, beta_min, beta_max, n, tmp_path):
    ddpm = DDPMScheduler(**ddpm_kwargs)
    from_memory = VPSDEScheduler.from_config(ddpm.config)
    ddpm.save_pretrained(tmp_path)
    from_folder = VPSDEScheduler.from_pretrained(tmp_path)
    for scheduler in (from_memory, from_folder):
        assert type(scheduler) is VPSDEScheduler
        assert scheduler.config.beta_min == pytest.approx(beta_min)
        assert scheduler.config.beta_max == pytest.approx(beta_max)
        assert scheduler.config.num_train_timesteps == n
        assert scheduler.config.prediction_type == "epsilon"
        assert scheduler.config.timestep_type == "discrete"
    # sub-VP takes the same mapping
    assert SubVPSDEScheduler.from_config(ddpm.config).config.beta_max == pytest.approx(beta_max)


def test_converted_config_round_trips():
    # A converted config carries DDPM's leftover keys (variance_type, ...) and no _class_name in memory; loading it
    # again, or into sub-VP, keeps the mapped betas instead of falling back to our defaults.
    ddpm = DDPMScheduler(num_train_timesteps=2000, beta_start=2e-4, beta_end=0.03)
    vp = VPSDEScheduler.from_config(ddpm.config)
    for cls in (VPSDEScheduler, SubVPSDEScheduler):
        again = cls.from_config(vp.config)
        assert (again.config.beta_min, again.config.beta_max, again.config.num_train_timesteps) == (0.4, 60.0, 2000)
    plain = VPSDEScheduler(beta_max=10.0, sampling_eps=1e-4)
    assert SubVPSDEScheduler.from_config(plain.config).config.beta_max == 10.0
    assert VPSDEScheduler.from_config(plain.config).config.sampling_eps == 1e-4


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddpm_prediction_type_is_kept(prediction_type, tmp_path):
    ddpm = DDPMScheduler(prediction_type=prediction_type, beta_end=0.03)
    ddpm.save_pretrained(tmp_path)
    for scheduler in (VPSDEScheduler.from_config(ddpm.config), VPSDEScheduler.from_pretrained(tmp_path)):
        assert scheduler.config.prediction_type == prediction_type
        assert scheduler.config.beta_max == pytest.approx(30.0)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"rescale_betas_zero_snr": True}, r"rescale_betas_zero_snr=True cannot be mapped onto the VP SDE.*Allowed: "),
        ({"variance_type": "learned_range"}, r"variance_type='learned_range' cannot be mapped.*predicts no variance"),
        ({"beta_schedule": "scaled_linear"}, r"beta_schedule='scaled_linear' cannot be mapped"),
    ],
)
def test_ddpm_options_that_change_the_schedule_are_an_error(option, message):
    for cls in (VPSDEScheduler, ScoreSdeDPMSolverMultistepScheduler):
        with pytest.raises(ValueError, match=message):
            cls.from_config(DDPMScheduler(**option).config)


@pytest.mark.parametrize("option", ["clip_sample", "thresholding"])
def test_ddpm_sampler_options_the_vp_sampler_ignores_are_a_warning(option):
    ddpm = DDPMScheduler(**{"clip_sample": False, "thresholding": False, option: True})
    with pytest.warns(UserWarning, match=rf"does not honour the DDPM options {option}=True"):
        scheduler = VPSDEScheduler.from_config(ddpm.config)
    assert scheduler.config[option] is False  # the config says what the sampler does


def test_ddpm_config_without_clipping_loads_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VPSDEScheduler.from_config(DDPMScheduler(clip_sample=False).config)


def test_non_linear_ddpm_schedule_is_rejected(tmp_path):
    ddpm = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    with pytest.raises(ValueError, match=r"beta_schedule='squaredcos_cap_v2'.*Allowed: beta_schedule='linear'"):
        VPSDEScheduler.from_config(ddpm.config)
    ddpm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"beta_schedule='squaredcos_cap_v2'"):
        VPSDEScheduler.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trained_betas"):
        VPSDEScheduler.from_config(DDPMScheduler(trained_betas=np.linspace(1e-4, 0.02, 1000).tolist()).config)


# ---------------------------------------------------------------------- swaps the other way: our VP configs in diffusers
VP_SOURCES = {
    "VPSDEScheduler": lambda: VPSDEScheduler(beta_min=0.2, beta_max=10.0),
    "ScoreSdeDPMSolverMultistepScheduler": lambda: ScoreSdeDPMSolverMultistepScheduler(sde_type="vp", beta_min=0.2, beta_max=10.0),
}


@pytest.mark.parametrize("diffusers_class", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler], ids=lambda c: c.__name__)
@pytest.mark.parametrize("source", list(VP_SOURCES))
def test_diffusers_ddpm_family_reads_the_vp_betas(diffusers_class, source, tmp_path):
    ours = VP_SOURCES[source]()
    ours.save_pretrained(tmp_path)
    # DDPM's discrete chain of the VP SDE: beta_i linear from beta_min / N to beta_max / N (Song et al. 2021, App. B).
    expected = torch.linspace(0.2 / 1000, 10.0 / 1000, 1000, dtype=torch.float32)
    for theirs in (diffusers_class.from_config(ours.config), diffusers_class.from_pretrained(tmp_path)):
        torch.testing.assert_close(theirs.betas, expected)
        assert theirs.config.prediction_type == ours.config.prediction_type
        assert not theirs.config.thresholding and not theirs.config.get("clip_sample", False)


def test_vp_swap_round_trips_through_ddpm():
    vp = VPSDEScheduler(beta_min=0.2, beta_max=10.0, num_train_timesteps=500, prediction_type="v_prediction")
    back = VPSDEScheduler.from_config(DDPMScheduler.from_config(vp.config).config)
    assert back.sde == vp.sde and back.config.prediction_type == "v_prediction"
    # a DDPM scheduler's own betas win over the beta_min/beta_max it kept from the swap
    changed = VPSDEScheduler.from_config(DDPMScheduler.from_config(vp.config, beta_end=0.03).config)
    assert changed.config.beta_max == pytest.approx(15.0) and changed.config.beta_min == pytest.approx(0.2)


def test_vp_ddpm_keys_follow_overridden_betas():
    vp = VPSDEScheduler.from_config(VPSDEScheduler(beta_min=0.2, beta_max=10.0).config, beta_max=30.0)
    assert vp.config.beta_end == pytest.approx(0.03)
    assert DDPMScheduler.from_config(vp.config).betas[-1].item() == pytest.approx(0.03)


def test_edited_ddpm_key_that_disagrees_with_the_vp_betas_is_an_error(tmp_path):
    config = dict(VPSDEScheduler(beta_max=10.0).config, beta_end=0.03)
    with pytest.raises(ValueError, match=r"beta_end=0.03 disagrees with beta_min=0.1, beta_max=10.0.*remove beta_end"):
        VPSDEScheduler.from_config(config)


def test_sub_vp_config_carries_no_ddpm_betas():
    # DDPM's chain discretises the VP SDE, not sub-VP: no DDPM config describes a sub-VP model.
    config = SubVPSDEScheduler(beta_max=10.0).config
    assert not {"beta_start", "beta_end", "beta_schedule"} & set(config)
    assert "beta_end" not in ScoreSdeDPMSolverMultistepScheduler(sde_type="subvp").config


# ---------------------------------------------------------------------- diffusers' DDPMPipeline
def test_ddpm_pipeline_with_swapped_scheduler_recovers_mixture():
    ddpm = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    scheduler = VPSDEScheduler.from_config(ddpm.config)
    # The DDPM convention: epsilon prediction at integer timesteps; data in [-0.8, 0.8], since DDPMPipeline
    # returns (x / 2 + 0.5).clamp(0, 1).
    std = 0.05
    model, weights, means = image_mixture(scheduler, -0.5, 0.5, std)
    assert model.config.prediction_type == "epsilon" and model.config.timestep_type == "discrete"
    pipe = DDPMPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=1000, num_inference_steps=500, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1000, 2, 2, 3)
    x = images_to_samples(images) * 2 - 1
    check_mixture_samples(model, x, weights, means, std)


# ---------------------------------------------------------------------- the StableDiffusion-style loop
def prepare_extra_step_kwargs(scheduler, generator, eta):
    # As StableDiffusionPipeline.prepare_extra_step_kwargs: pass eta / generator only if `step` declares them.
    accepts_eta = "eta" in set(inspect.signature(scheduler.step).parameters.keys())
    extra_step_kwargs = {}
    if accepts_eta:
        extra_step_kwargs["eta"] = eta
    accepts_generator = "generator" in set(inspect.signature(scheduler.step).parameters.keys())
    if accepts_generator:
        extra_step_kwargs["generator"] = generator
    return extra_step_kwargs


def stable_diffusion_loop(unet, scheduler, shape, num_inference_steps, generator, device="cpu", dtype=torch.float32):
    """The denoising loop of diffusers' StableDiffusionPipeline.__call__, without text conditioning and guidance."""
    scheduler.set_timesteps(num_inference_steps, device=device)  # retrieve_timesteps
    timesteps = scheduler.timesteps
    latents = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)
    latents = latents * scheduler.init_noise_sigma
    extra_step_kwargs = prepare_extra_step_kwargs(scheduler, generator, eta=0.0)
    num_warmup_steps = len(timesteps) - num_inference_steps * scheduler.order
    assert num_warmup_steps == 0
    for i, t in enumerate(timesteps):
        latent_model_input = scheduler.scale_model_input(latents, t)
        noise_pred = unet(latent_model_input, t, return_dict=False)[0]
        latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
    return latents


@pytest.mark.parametrize("scheduler_class", [VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler], ids=lambda c: c.__name__)
def test_stable_diffusion_loop_recovers_mixture(scheduler_class):
    scheduler = scheduler_class()
    assert "generator" in inspect.signature(scheduler.step).parameters
    std = 0.2
    model, weights, means = image_mixture(scheduler, -1.0, 1.0, std, sample_size=1, in_channels=4)
    latents = stable_diffusion_loop(model, scheduler, (1000, 4, 1, 1), 500, torch.Generator().manual_seed(0))
    assert latents.shape == (1000, 4, 1, 1) and latents.dtype == torch.float32
    check_mixture_samples(model, latents, weights, means, std)


# ---------------------------------------------------------------------- diffusers' ScoreSdeVePipeline
def test_score_sde_ve_pipeline_with_ve_scheduler_recovers_mixture():
    scheduler = VESDEScheduler(sigma_max=10.0, correct_steps=1)
    std = 0.03
    # ScoreSdeVePipeline calls the model with sigma and reads a score: the NCSN convention.
    model, weights, means = image_mixture(scheduler, 0.3, 0.7, std, timestep_type="sigma", prediction_type="score")
    pipe = ScoreSdeVePipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=600, num_inference_steps=400, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (600, 2, 2, 3)
    check_mixture_samples(model, images_to_samples(images), weights, means, std)


@pytest.mark.parametrize(
    "ve_kwargs", [{}, {"sigma_max": 348.0, "snr": 0.17, "correct_steps": 2, "sampling_eps": 1e-4, "num_train_timesteps": 1000}]
)
def test_score_sde_ve_config_loads(ve_kwargs, tmp_path):
    theirs = ScoreSdeVeScheduler(**ve_kwargs)
    theirs.save_pretrained(tmp_path)
    keys = ("sigma_min", "sigma_max", "snr", "sampling_eps", "correct_steps", "num_train_timesteps")
    for ours in (VESDEScheduler.from_config(theirs.config), VESDEScheduler.from_pretrained(tmp_path)):
        assert type(ours) is VESDEScheduler
        for key in keys:
            assert ours.config[key] == pytest.approx(theirs.config[key]), key
        assert ours.init_noise_sigma == pytest.approx(theirs.init_noise_sigma)
    if not ve_kwargs:  # diffusers' default, built in memory with every key in _use_default_values
        assert VESDEScheduler.from_config(theirs.config).config.sigma_max == 1348.0
    # and the grids agree: same times, same sigmas
    ours = VESDEScheduler.from_config(theirs.config)
    ours.set_sigmas(50)
    theirs.set_timesteps(50)
    theirs.set_sigmas(50)
    torch.testing.assert_close(ours.t_grid.float(), theirs.timesteps.float())
    torch.testing.assert_close(ours.sigmas, theirs.sigmas.float(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- pipeline folders
def test_pipeline_folder_reloads_our_scheduler(tmp_path):
    pipe = DDPMPipeline(unet=GaussianMixtureScoreModel.four_gaussians(sample_size=1, in_channels=2), scheduler=DDPMScheduler())
    pipe.scheduler = VPSDEScheduler.from_config(pipe.scheduler.config, predictor="reverse_diffusion")
    pipe.save_pretrained(tmp_path)
    reloaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(reloaded) is DDPMPipeline
    assert type(reloaded.scheduler) is VPSDEScheduler
    assert dict(reloaded.scheduler.config)["predictor"] == "reverse_diffusion"
    assert reloaded.scheduler.sde == pipe.scheduler.sde
    assert type(reloaded.unet) is GaussianMixtureScoreModel
    # and it samples the same with the same generator
    out = [
        p(batch_size=4, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
        for p in (pipe, reloaded)
    ]
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-6)
