"""No pipeline calls the model at a time it was not trained on.

A DDPM-style model (``timestep_type="discrete"``) saw the integer steps 0..N-1 only, i.e. t in [1/N, 1]; the
guard model below raises on any other timestep. Every pipeline, and diffusers' own loop with our schedulers, is run
with a small N, where 1/N is far above the default eps values (1e-3 for sampling, 1e-5 for likelihoods), so a
grid or a likelihood that starts below the model's domain is caught.
"""

import pytest
import torch
from diffusers import DDPMPipeline

from scoresde_diffusers import (
    GaussianMixtureClassifier,
    GaussianMixtureScoreModel,
    ScoreSdeDPMSolverMultistepScheduler,
    ScoreSdeHeunScheduler,
    SubVPSDEScheduler,
    VPSDEScheduler,
)
from scoresde_diffusers.pipelines import (
    ScoreSdeAdaptivePipeline,
    ScoreSdeAnnealedLangevinPipeline,
    ScoreSdeClassConditionalPipeline,
    ScoreSdeInpaintPipeline,
    ScoreSdeLikelihoodPipeline,
    ScoreSdeODEPipeline,
    ScoreSdePCPipeline,
)

N = 20  # model steps 0..19: the model is defined from t = 1/20 = 0.05 on


class TimestepGuardModel(GaussianMixtureScoreModel):
    """The exact mixture, refusing a timestep outside 0..N-1 (what a DDPM network never saw); records the range."""

    def forward(self, sample, timestep, return_dict=True):
        steps = torch.as_tensor(timestep, dtype=torch.float64)
        low, high = float(steps.min()), float(steps.max())
        if low < -1e-6 or high > self.config.num_train_timesteps - 1 + 1e-6:
            raise AssertionError(f"model called at timestep {low:g}..{high:g}, outside 0..{self.config.num_train_timesteps - 1}")
        self.seen = (min(low, getattr(self, "seen", (low, high))[0]), max(high, getattr(self, "seen", (low, high))[1]))
        return super().forward(sample, timestep, return_dict)


def guarded(scheduler, **config):
    return TimestepGuardModel.from_mixture(
        [0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], [[[0.1, 0.0], [0.0, 0.2]]] * 2, scheduler=scheduler, **config
    )


def _pipe(pipeline_class, scheduler, **components):
    pipe = pipeline_class(unet=guarded(scheduler), scheduler=scheduler, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


SAMPLING_CASES = {
    "pc": (ScoreSdePCPipeline, VPSDEScheduler, {"num_inference_steps": 10}),
    "pc_subvp": (ScoreSdePCPipeline, SubVPSDEScheduler, {"num_inference_steps": 10}),
    "annealed_langevin": (ScoreSdeAnnealedLangevinPipeline, VPSDEScheduler, {"num_inference_steps": 5}),
    "ode_default": (ScoreSdeODEPipeline, VPSDEScheduler, {"num_inference_steps": 10}),
    "ode_heun": (ScoreSdeODEPipeline, VPSDEScheduler, {"num_inference_steps": 5, "solver": "heun"}),
    "ode_adaptive": (ScoreSdeODEPipeline, VPSDEScheduler, {}),
    "ode_dpmsolver_scheduler": (ScoreSdeODEPipeline, ScoreSdeDPMSolverMultistepScheduler, {"num_inference_steps": 10}),
    "ode_heun_scheduler": (ScoreSdeODEPipeline, ScoreSdeHeunScheduler, {"num_inference_steps": 5}),
    "adaptive_sde": (ScoreSdeAdaptivePipeline, VPSDEScheduler, {}),
}


@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
def test_sampling_pipelines_stay_inside_the_trained_timesteps(case):
    pipeline_class, scheduler_class, inputs = SAMPLING_CASES[case]
    pipe = _pipe(pipeline_class, scheduler_class(num_train_timesteps=N))
    pipe(batch_size=8, generator=torch.Generator().manual_seed(0), output_type="pt", **inputs)
    assert pipe.unet.seen[0] >= -1e-6 and pipe.unet.seen[1] <= N - 1 + 1e-6


@pytest.mark.parametrize("inputs", [{}, {"solver": "heun", "num_inference_steps": 5}], ids=["adaptive", "heun"])
def test_the_likelihood_starts_at_the_first_trained_time(inputs):
    pipe = _pipe(ScoreSdeLikelihoodPipeline, VPSDEScheduler(num_train_timesteps=N))
    x = pipe.unet.sample_data(4, generator=torch.Generator().manual_seed(1))
    out = pipe(x, generator=torch.Generator().manual_seed(2), **inputs)
    assert pipe.unet.seen[0] == pytest.approx(0.0, abs=1e-6)
    if not inputs:
        # An accurate solve is log p_eps at eps = 1/N (not at the unreachable 1e-5), up to the known gap between the
        # prior and the true p_1 at the latent (see test_pipeline_likelihood); 2e-3 nats/dim as there.
        error = out.log_likelihood.double() - pipe.unet.log_prob(x.double(), t=1.0 / N)
        prior_mismatch = pipe.unet.log_prob(out.latents.double(), t=1.0) - out.prior_logp.double()
        assert (error + prior_mismatch).abs().max() / 2 < 2e-3


def test_encoding_with_the_probability_flow_ode_stays_inside_the_trained_timesteps():
    pipe = _pipe(ScoreSdeODEPipeline, VPSDEScheduler(num_train_timesteps=N))
    pipe.encode(pipe.unet.sample_data(4, generator=torch.Generator().manual_seed(1)), num_inference_steps=5, solver="heun")


def test_an_explicit_eps_below_the_trained_times_is_refused_with_the_allowed_bound():
    pipe = _pipe(ScoreSdeLikelihoodPipeline, VPSDEScheduler(num_train_timesteps=N))
    with pytest.raises(ValueError, match=r"sampling_eps=1e-05 is below t = 0.05, the first time the model was trained on .* use sampling_eps >= 0.05"):
        pipe(torch.zeros(2, 2), sampling_eps=1e-5)


def test_conditional_sampling_stays_inside_the_trained_timesteps():
    scheduler = VPSDEScheduler(num_train_timesteps=N)
    unet = guarded(scheduler)
    pipe = ScoreSdeClassConditionalPipeline(unet=unet, classifier=GaussianMixtureClassifier.from_score_model(unet, [0, 1]), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe(class_labels=[1] * 4, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="pt")
    pipe(class_labels=[0] * 4, num_inference_steps=10, sampler="ode", solver="heun", generator=torch.Generator().manual_seed(0), output_type="pt")


def test_inpainting_stays_inside_the_trained_timesteps():
    pipe = _pipe(ScoreSdeInpaintPipeline, VPSDEScheduler(num_train_timesteps=N))
    image = torch.tensor([[0.5, 0.0]] * 4)
    mask = torch.tensor([[0.0, 1.0]] * 4)
    pipe(image=image, mask_image=mask, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="pt")


@pytest.mark.parametrize("scheduler_class", [VPSDEScheduler, ScoreSdeDPMSolverMultistepScheduler, ScoreSdeHeunScheduler])
def test_diffusers_own_loop_with_our_schedulers_stays_inside_the_trained_timesteps(scheduler_class):
    scheduler = scheduler_class(num_train_timesteps=N)
    unet = guarded(scheduler, sample_size=1, in_channels=2)
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe(batch_size=4, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np")
    assert unet.seen[0] >= -1e-6
