"""Folders of diffusers' own score-SDE and DDPM pipelines load into ours with no hand swap (issue 11, item 4).

The Hub's ``google/ncsnpp-*`` repos are `ScoreSdeVePipeline` folders (an NCSN++ `UNet2DModel` with a Fourier
embedding of sigma + `ScoreSdeVeScheduler`), ``google/ddpm-*`` are `DDPMPipeline` folders (`UNet2DModel` +
`DDPMScheduler`). The Hub cannot be reached here, so the folders are saved locally by diffusers' own pipelines
from tiny random-weight UNets of exactly those layouts (and one is served as a repo id from a local Hub cache).
Loaded into `ScoreSdePCPipeline`, `ScoreSdeODEPipeline`, `ScoreSdeLikelihoodPipeline` (and inpainting), the
scheduler becomes ours with the folder's settings, the data range the one the folder's pipeline samples in, and
the model is called exactly as that pipeline calls it.
"""

import json
import os

import numpy as np
import pytest
import torch
from diffusers import (
    DDPMPipeline,
    DDPMScheduler,
    EulerDiscreteScheduler,
    PNDMPipeline,
    PNDMScheduler,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
    UNet2DModel,
)

from scoresde_diffusers import TimeDependentClassifier, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.pipelines import (
    ScoreSdeClassConditionalPipeline,
    ScoreSdeInpaintPipeline,
    ScoreSdeLikelihoodPipeline,
    ScoreSdeODEPipeline,
    ScoreSdePCPipeline,
)

PIPELINES = [ScoreSdePCPipeline, ScoreSdeODEPipeline, ScoreSdeLikelihoodPipeline, ScoreSdeInpaintPipeline]
# Settings that differ from both libraries' defaults, so that each one visibly comes from the folder. The DDPM chain
# ends near N(0, I) (alpha_bar_N = 2e-4), as DDPMPipeline's prior assumes.
VE_SETTINGS = {"num_train_timesteps": 200, "sigma_min": 0.02, "sigma_max": 5.0, "snr": 0.17, "correct_steps": 2, "sampling_eps": 1e-4}
DDPM_SETTINGS = {"num_train_timesteps": 50, "beta_start": 2e-4, "beta_end": 0.3, "prediction_type": "v_prediction", "clip_sample": False}


def ncsnpp_unet():
    """A tiny NCSN++ as the Hub's ncsnpp folders hold it: skip blocks, Fourier embedding of sigma, output / sigma."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"), up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"),
        time_embedding_type="fourier", norm_num_groups=None, mid_block_scale_factor=2**0.5, norm_eps=1e-6,
        flip_sin_to_cos=True, freq_shift=1, attention_head_dim=None,
    )  # fmt: skip


def ddpm_unet():
    """A tiny DDPM UNet as the Hub's ddpm folders hold it: positional embedding of the integer step."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 16), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def ncsnpp_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("ncsnpp")
    ScoreSdeVePipeline(unet=ncsnpp_unet(), scheduler=ScoreSdeVeScheduler(**VE_SETTINGS)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(unet=ddpm_unet(), scheduler=DDPMScheduler(**DDPM_SETTINGS)).save_pretrained(path)
    return path


def load(pipeline_class, path, **kwargs):
    pipe = pipeline_class.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record_model_calls(pipe):
    """Replace ``pipe.unet.forward`` by one that records (sample, timestep) of every call; returns the list."""
    calls, forward = [], pipe.unet.forward

    def recording_forward(sample, timestep, *args, **kwargs):
        calls.append((sample.clone(), torch.as_tensor(timestep).flatten()[0].item()))
        return forward(sample, timestep, *args, **kwargs)

    pipe.unet.forward = recording_forward
    return calls


# ---------------------------------------------------------------------------------------------- ScoreSdeVePipeline
@pytest.mark.parametrize("pipeline_class", PIPELINES, ids=lambda c: c.__name__)
def test_ncsnpp_folder_loads_with_a_ve_scheduler_of_its_settings(pipeline_class, ncsnpp_folder):
    pipe = load(pipeline_class, ncsnpp_folder)
    assert type(pipe) is pipeline_class and type(pipe.unet) is UNet2DModel
    assert type(pipe.scheduler) is VESDEScheduler
    for key, value in VE_SETTINGS.items():
        assert pipe.scheduler.config[key] == pytest.approx(value), key
    # ScoreSdeVePipeline calls the model with sigma and reads its output as the score; its samples are in [0, 1].
    assert (pipe.scheduler.config.timestep_type, pipe.scheduler.config.prediction_type) == ("sigma", "score")
    assert pipe.data_range == (0.0, 1.0)


def test_ncsnpp_folder_samples_as_diffusers_score_sde_ve_pipeline(ncsnpp_folder):
    # Same prior noise, same model calls (inputs and sigmas), same corrector and predictor steps in the same order.
    theirs = ScoreSdeVePipeline.from_pretrained(ncsnpp_folder)
    theirs.set_progress_bar_config(disable=True)
    ours = load(ScoreSdePCPipeline, ncsnpp_folder)
    their_calls, our_calls = record_model_calls(theirs), record_model_calls(ours)
    kwargs = dict(batch_size=2, num_inference_steps=4, output_type="np")
    expected = theirs(generator=torch.Generator().manual_seed(0), **kwargs).images
    images = ours(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert len(our_calls) == len(their_calls) == 4 * (1 + VE_SETTINGS["correct_steps"])
    for (our_sample, our_sigma), (their_sample, their_sigma) in zip(our_calls, their_calls):
        assert our_sigma == pytest.approx(their_sigma, rel=1e-5)
        torch.testing.assert_close(our_sample, their_sample, rtol=1e-4, atol=1e-4 * VE_SETTINGS["sigma_max"])
    # Our last step also removes the sigma_min of noise left at t = 0 (as score_sde's last step): a small shift.
    np.testing.assert_allclose(images, expected, atol=1e-2)


def test_ncsnpp_folder_samples_with_the_ode_and_evaluates_with_the_likelihood_pipeline(ncsnpp_folder):
    ode = load(ScoreSdeODEPipeline, ncsnpp_folder)
    out = ode(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 8, 8, 3) and np.isfinite(out.images).all() and out.nfe == 4
    likelihood = load(ScoreSdeLikelihoodPipeline, ncsnpp_folder)
    data = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    result = likelihood(data, divergence="hutchinson", solver="euler", num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert result.bits_per_dim.shape == (2,) and torch.isfinite(result.bits_per_dim).all()


# ---------------------------------------------------------------------------------------------- DDPMPipeline
@pytest.mark.parametrize("pipeline_class", PIPELINES, ids=lambda c: c.__name__)
def test_ddpm_folder_loads_with_a_vp_scheduler_of_its_betas(pipeline_class, ddpm_folder):
    pipe = load(pipeline_class, ddpm_folder)
    assert type(pipe) is pipeline_class and type(pipe.scheduler) is VPSDEScheduler
    n = DDPM_SETTINGS["num_train_timesteps"]
    config = pipe.scheduler.config
    assert config.num_train_timesteps == n
    # Song et al. 2021, Appendix B: beta_min = N beta_start, beta_max = N beta_end.
    assert (config.beta_min, config.beta_max) == pytest.approx((n * DDPM_SETTINGS["beta_start"], n * DDPM_SETTINGS["beta_end"]))
    assert (config.timestep_type, config.prediction_type) == ("discrete", DDPM_SETTINGS["prediction_type"])
    assert pipe.data_range == (-1.0, 1.0)


def test_ddpm_folder_calls_the_model_as_ddpm_pipeline_does(ddpm_folder):
    theirs = DDPMPipeline.from_pretrained(ddpm_folder)
    theirs.set_progress_bar_config(disable=True)
    ours = load(ScoreSdePCPipeline, ddpm_folder)
    their_calls, our_calls = record_model_calls(theirs), record_model_calls(ours)
    n = DDPM_SETTINGS["num_train_timesteps"]
    theirs(batch_size=2, num_inference_steps=n, generator=torch.Generator().manual_seed(0), output_type="np")
    ours(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    # t = 1 is DDPM's first integer step, N - 1, at the same prior sample.
    assert our_calls[0][1] == their_calls[0][1] == n - 1
    torch.testing.assert_close(our_calls[0][0], their_calls[0][0])


@pytest.mark.parametrize("pipeline_class", [ScoreSdePCPipeline, ScoreSdeODEPipeline], ids=lambda c: c.__name__)
def test_ddpm_folder_samples(pipeline_class, ddpm_folder):
    pipe = load(pipeline_class, ddpm_folder)
    out = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all() and out.nfe == 4


def test_ddpm_folder_loads_into_the_class_conditional_pipeline_with_a_classifier(ddpm_folder):
    # The folder has no classifier: it is passed, as any component missing from a folder.
    classifier = TimeDependentClassifier(sample_size=8, in_channels=3, num_classes=2, block_out_channels=(8,), norm_num_groups=4)
    pipe = load(ScoreSdeClassConditionalPipeline, ddpm_folder, classifier=classifier)
    assert type(pipe.scheduler) is VPSDEScheduler and pipe.classifier is classifier and pipe.data_range == (-1.0, 1.0)
    out = pipe(class_labels=[0, 1], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape == (2, 3, 8, 8) and torch.isfinite(out.images).all()


def test_pndm_folder_loads_like_a_ddpm_folder(tmp_path):
    PNDMPipeline(unet=ddpm_unet(), scheduler=PNDMScheduler(beta_end=0.03)).save_pretrained(tmp_path)
    pipe = load(ScoreSdePCPipeline, tmp_path)
    assert type(pipe.scheduler) is VPSDEScheduler and pipe.scheduler.config.beta_max == pytest.approx(30.0)
    assert pipe.data_range == (-1.0, 1.0)


def test_hub_ddpm_folder_warns_that_clip_sample_is_not_honoured(tmp_path):
    # google/ddpm-* schedulers say clip_sample=True (DDPMScheduler's default): the VP sampler does not clip.
    DDPMPipeline(unet=ddpm_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="does not honour the DDPM options clip_sample=True"):
        pipe = load(ScoreSdePCPipeline, tmp_path)
    assert type(pipe.scheduler) is VPSDEScheduler


# ---------------------------------------------------------------------------------------------- either layout
def test_loaded_layout_saves_and_reloads_as_ours(ncsnpp_folder, tmp_path):
    pipe = load(ScoreSdePCPipeline, ncsnpp_folder)
    pipe.save_pretrained(tmp_path)
    reloaded = load(ScoreSdePCPipeline, tmp_path)
    assert type(reloaded.scheduler) is VESDEScheduler and reloaded.data_range == (0.0, 1.0)
    assert dict(reloaded.scheduler.config)["sigma_max"] == VE_SETTINGS["sigma_max"]
    kwargs = dict(batch_size=2, num_inference_steps=3, output_type="pt")
    torch.testing.assert_close(
        reloaded(generator=torch.Generator().manual_seed(0), **kwargs).images, pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    )


def test_passed_scheduler_and_data_range_are_kept(ddpm_folder):
    scheduler = VPSDEScheduler(beta_max=12.0, num_train_timesteps=50)
    pipe = load(ScoreSdePCPipeline, ddpm_folder, scheduler=scheduler, data_range=(0.0, 1.0))
    assert pipe.scheduler is scheduler and pipe.data_range == (0.0, 1.0)


def test_hub_repo_id_loads_through_diffusers_download(tmp_path):
    # A repo id goes through diffusers' download (huggingface_hub's cache here, as the Hub cannot be reached).
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--google--ncsnpp-tiny"
    ScoreSdeVePipeline(unet=ncsnpp_unet(), scheduler=ScoreSdeVeScheduler(**VE_SETTINGS)).save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pipe = load(ScoreSdePCPipeline, "google/ncsnpp-tiny", cache_dir=str(tmp_path), local_files_only=True)
    assert type(pipe.scheduler) is VESDEScheduler and pipe.scheduler.config.sigma_max == VE_SETTINGS["sigma_max"]
    assert pipe.data_range == (0.0, 1.0)


# ---------------------------------------------------------------------------------------------- bad input
def test_folder_of_another_diffusers_pipeline_is_an_error(ddpm_folder, tmp_path):
    # A DDPM folder relabelled as another diffusers pipeline class: its components are not what that class needs.
    for name in os.listdir(ddpm_folder):
        os.symlink(ddpm_folder / name, tmp_path / name)
    index = json.loads((ddpm_folder / "model_index.json").read_text())
    (tmp_path / "model_index.json").unlink()
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match=r"holds a StableDiffusionPipeline.*Supported: .*ScoreSdeVePipeline, DDPMPipeline"):
        ScoreSdePCPipeline.from_pretrained(tmp_path)


def test_layout_with_a_scheduler_we_cannot_convert_is_an_error(tmp_path):
    DDPMPipeline(unet=ddpm_unet(), scheduler=EulerDiscreteScheduler()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"EulerDiscreteScheduler scheduler.*converts the schedulers ScoreSdeVeScheduler, DDPMScheduler"):
        ScoreSdePCPipeline.from_pretrained(tmp_path)
