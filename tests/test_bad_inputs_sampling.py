"""Bad input to the sampling pipelines is caught at the door: the error names the argument, says what is wrong and
what is allowed, blames the caller's input rather than the model, and never prints a whole tensor."""

import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline, ScoreSdeODEPipeline, ScoreSdePCPipeline

MAX_MESSAGE = 400  # characters: a message that prints a tensor of 4096 entries is far longer


def _pipe(pipeline_class, scheduler=None):
    scheduler = scheduler or VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture([1.0], torch.zeros(1, 64), torch.ones(1, 64), scheduler=scheduler)
    pipe = pipeline_class(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _nan_at(shape, index):
    x = torch.randn(shape)
    x[index] = float("nan")
    return x


CASES = {
    "pc_nan_latents": (
        ScoreSdePCPipeline,
        lambda: dict(batch_size=64, num_inference_steps=3, latents=_nan_at((64, 64), (3, 7))),
        r"latents has NaN or infinite values in 1 of 4096 entries \(first at index \(3, 7\)\)",
    ),
    "ode_inf_latents": (
        ScoreSdeODEPipeline,
        lambda: dict(batch_size=64, num_inference_steps=3, latents=torch.full((64, 64), float("inf"))),
        r"latents has NaN or infinite values in 4096 of 4096 entries",
    ),
    "pc_integer_latents": (
        ScoreSdePCPipeline,
        lambda: dict(batch_size=2, num_inference_steps=3, latents=torch.ones(2, 64, dtype=torch.int64)),
        r"latents must be a floating-point tensor, got dtype torch.int64",
    ),
    "likelihood_nan_data": (
        ScoreSdeLikelihoodPipeline,
        lambda: dict(data=_nan_at((64, 64), (0, 0)), solver="heun", num_inference_steps=3),
        r"data has NaN or infinite values in 1 of 4096 entries \(first at index \(0, 0\)\)",
    ),
    "ode_custom_grid_not_decreasing": (
        ScoreSdeODEPipeline,
        lambda: dict(batch_size=2, solver="heun", timesteps=torch.linspace(1e-3, 1.0, 500)),
        r"timesteps must be at least 2 strictly decreasing .* got a tensor of shape \(500,\)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_named_and_described_in_a_short_message(case):
    pipeline_class, inputs, message = CASES[case]
    pipe = _pipe(pipeline_class)
    with pytest.raises(ValueError, match=message) as error:
        pipe(**inputs())
    assert len(str(error.value)) < MAX_MESSAGE, str(error.value)
    assert "diverged" not in str(error.value)


def _break_after_first_call(model):
    """Make `model` return NaN from its second evaluation on (for a finite sample)."""
    forward, calls = model.forward, []

    def broken_forward(sample, timestep, *args, **kwargs):
        calls.append(1)
        output = forward(sample, timestep, *args, **kwargs)
        if len(calls) > 1:
            output.sample.fill_(float("nan"))
        return output

    model.forward = broken_forward


def test_a_model_that_returns_nan_for_a_finite_sample_is_blamed_with_a_count_not_a_tensor():
    scheduler = VESDEScheduler(sigma_max=10.0)
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    pipe = ScoreSdePCPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    _break_after_first_call(model)
    with pytest.raises(ValueError, match=r"model_output has NaN or infinite values in 512 of 512 entries .*finite sample") as error:
        pipe(batch_size=256, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert len(str(error.value)) < MAX_MESSAGE


def test_a_large_wrong_timestep_tensor_is_described_by_its_shape():
    scheduler = VPSDEScheduler()
    scheduler.set_timesteps(5)
    sample = torch.zeros(300, 2)
    with pytest.raises(ValueError, match=r"got a tensor of shape \(300,\)") as error:
        scheduler.step(torch.zeros(300, 2), torch.linspace(0, 999, 300), sample)
    assert len(str(error.value)) < MAX_MESSAGE


SDE_MISMATCH_CASES = {
    "pc": (ScoreSdePCPipeline, {"batch_size": 2, "num_inference_steps": 3}),
    "ode": (ScoreSdeODEPipeline, {"batch_size": 2, "num_inference_steps": 3}),
    "likelihood": (ScoreSdeLikelihoodPipeline, {"data": torch.zeros(2, 2), "solver": "heun", "num_inference_steps": 3}),
}


@pytest.mark.parametrize("case", sorted(SDE_MISMATCH_CASES))
def test_a_model_of_one_sde_under_the_scheduler_of_another_is_refused(case):
    pipeline_class, inputs = SDE_MISMATCH_CASES[case]
    vp_model = GaussianMixtureScoreModel.four_gaussians(scheduler=VPSDEScheduler())
    pipe = pipeline_class(unet=vp_model, scheduler=VESDEScheduler())
    with pytest.raises(ValueError, match=r"trained under the 'vp' SDE .* but the scheduler VESDEScheduler samples the 've' SDE"):
        pipe(**inputs)


@pytest.mark.parametrize("pipeline_class", [ScoreSdePCPipeline, ScoreSdeODEPipeline])
def test_a_generator_list_must_have_one_generator_per_sample(pipeline_class):
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    with pytest.raises(ValueError, match=r"generator is a list of 3 generators but batch_size is 2"):
        _pipe(pipeline_class)(batch_size=2, num_inference_steps=3, generator=generators)


def test_a_step_count_no_grid_could_hold_is_refused_before_allocating_it():
    scheduler = VPSDEScheduler()
    with pytest.raises(ValueError, match=r"num_inference_steps=1000000000000 is more than 1,000,000"):
        scheduler.set_timesteps(10**12)


def test_a_saved_model_folder_without_weights_names_the_safetensors_file(tmp_path):
    pipe = _pipe(ScoreSdePCPipeline)
    pipe.save_pretrained(tmp_path)
    for file in (tmp_path / "unet").glob("*.safetensors"):
        file.unlink()
    with pytest.raises(FileNotFoundError, match=r"unet has a config.json but no weights: expected diffusion_pytorch_model.safetensors"):
        ScoreSdePCPipeline.from_pretrained(tmp_path)
