"""Conditioning is one object handed to one loop (`scoresde_diffusers.conditioning`).

The conditional pipelines build a `Conditioning` per call and run the predictor-corrector loop (`pc_loop`) or the
probability-flow loop (`ode_loop`) with it; they inherit neither `ScoreSdePCPipeline` nor `ScoreSdeODEPipeline`
and keep no state of the call on the pipeline. Any `Conditioning` runs in those loops: here one whose score shift
is the closed-form difference between the score of one component of the four-Gaussian mixture and the mixture's
score, so that the conditioned loops sample that component, N(mu, S), exactly (up to discretisation).
Tolerances: 5 standard errors of the mean (S_ii / n)^(1/2) and of the variance S_ii (2 / n)^(1/2), n = 2000.
"""

import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
from scoresde_diffusers.conditioning import ClassGuidance, Conditioning, Imputation
from scoresde_diffusers.models.classifier import GaussianMixtureClassifier
from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline, ScoreSdePipelineMixin
from scoresde_diffusers.pipelines.score_sde_colorization import ScoreSdeColorizationPipeline
from scoresde_diffusers.pipelines.score_sde_conditional import ScoreSdeClassConditionalPipeline
from scoresde_diffusers.pipelines.score_sde_inpaint import ScoreSdeInpaintPipeline

N = 2000
COMPONENT = 3  # mean (2, 2), covariance diag(0.2, 0.12)


class ToComponent(Conditioning):
    """Shifts the model's score by s_k(x, t) - s(x, t), the closed-form scores of one component and of the whole
    mixture, so the conditioned score is that component's; counts its calls."""

    def __init__(self, mixture: GaussianMixtureScoreModel, component: int):
        self.mixture = mixture
        means, covariances = mixture.means[component : component + 1], mixture.covariances[component : component + 1]
        self.target = GaussianMixtureScoreModel.from_mixture([1.0], means, covariances, sde=mixture.config.sde).to(torch.float64)
        self.calls = 0

    def shift(self, sample, t):
        return self.target.score(sample, t) - self.mixture.score(sample, t)

    def condition_score(self, score, sample, t):
        self.calls += 1
        return score + self.shift(sample, t)


def mixture_and_scheduler():
    scheduler = VPSDEScheduler()
    return GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).to(torch.float64), scheduler


def check_component(samples: torch.Tensor, mixture: GaussianMixtureScoreModel, component: int) -> None:
    mean, variance = mixture.means[component], torch.diagonal(mixture.covariances[component])
    assert torch.all((samples.mean(0) - mean).abs() < 5 * (variance / N).sqrt()), samples.mean(0)
    assert torch.all((samples.var(0) - variance).abs() < 5 * variance * (2 / N) ** 0.5), samples.var(0)


@pytest.mark.parametrize("pipeline_class", [ScoreSdeClassConditionalPipeline, ScoreSdeInpaintPipeline, ScoreSdeColorizationPipeline])
def test_conditional_pipelines_do_not_inherit_the_loop_pipelines(pipeline_class):
    assert issubclass(pipeline_class, ScoreSdePipelineMixin)
    assert not issubclass(pipeline_class, (ScoreSdePCPipeline, ScoreSdeODEPipeline))
    # The loops are the mixins' methods, conditioned by their argument, not by hooks a pipeline overrides.
    for hook in ("condition_score", "condition_sample", "impute_loop"):
        assert not hasattr(pipeline_class, hook), hook


def test_conditional_pipelines_keep_no_state_of_a_call():
    mixture, scheduler = mixture_and_scheduler()
    classifier = GaussianMixtureClassifier.from_score_model(mixture, [0, 0, 1, 1])
    guided = ScoreSdeClassConditionalPipeline(unet=mixture, classifier=classifier, scheduler=scheduler).to(torch.float64)
    inpaint = ScoreSdeInpaintPipeline(unet=mixture, scheduler=scheduler)
    for pipe in (guided, inpaint):
        pipe.set_progress_bar_config(disable=True)
        before = set(vars(pipe)) | {"_nfe"}
        if pipe is guided:
            pipe(class_labels=[0, 1], num_inference_steps=5, output_type="pt")
        else:
            pipe(torch.tensor([[2.0, 0.0]]), mask_image=torch.tensor([0.0, 1.0]), num_inference_steps=5, output_type="pt")
        assert set(vars(pipe)) <= before, set(vars(pipe)) - before


def test_the_score_is_shifted_by_the_conditioning():
    mixture, scheduler = mixture_and_scheduler()
    pipe = ScoreSdePCPipeline(unet=mixture, scheduler=scheduler)
    conditioning = ToComponent(mixture, COMPONENT)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    t = torch.linspace(0.05, 1.0, 16, dtype=torch.float64)
    shifted = pipe.model_score(x, t, conditioning) - pipe.model_score(x, t)
    torch.testing.assert_close(shifted, conditioning.shift(x, t), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pipe.model_score(x, t, conditioning), conditioning.target.score(x, t), rtol=1e-6, atol=1e-6)


def test_an_identity_conditioning_leaves_the_loops_unchanged_bit_for_bit():
    mixture, scheduler = mixture_and_scheduler()
    pc, ode = ScoreSdePCPipeline(unet=mixture, scheduler=scheduler), ScoreSdeODEPipeline(unet=mixture, scheduler=scheduler)
    for pipe in (pc, ode):
        pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=8, num_inference_steps=10, output_type="pt")
    plain = pc(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert torch.equal(pc.pc_loop(generator=torch.Generator().manual_seed(0), conditioning=Conditioning(), **kwargs).images, plain)
    plain = ode(generator=torch.Generator().manual_seed(0), solver="rk4", **kwargs).images
    assert torch.equal(ode.ode_loop(generator=torch.Generator().manual_seed(0), solver="rk4", conditioning=Conditioning(), **kwargs).images, plain)


@pytest.mark.parametrize(
    "sampler, loop_kwargs, nfe",
    [
        ("pc", {"num_inference_steps": 300}, 300),  # reverse diffusion
        ("ode", {"num_inference_steps": 20, "solver": "rk4"}, 80),  # the ODE solver path: 20 steps of 4 stages
        ("ode", {"num_inference_steps": 35}, 35),  # the ODE scheduler path (DPM-Solver++ steps)
    ],
    ids=["pc", "ode-solver", "ode-scheduler"],
)
def test_a_conditioning_drives_every_loop_to_its_closed_form(sampler, loop_kwargs, nfe):
    mixture, scheduler = mixture_and_scheduler()
    pipe = ScoreSdeODEPipeline(unet=mixture, scheduler=scheduler)  # reaches both loops: `run_sampler`
    pipe.set_progress_bar_config(disable=True)
    conditioning = ToComponent(mixture, COMPONENT)
    out = pipe.run_sampler(sampler, conditioning, batch_size=N, generator=torch.Generator().manual_seed(0), output_type="pt", **loop_kwargs)
    assert out.nfe == nfe and conditioning.calls == nfe  # the object is called at every model evaluation
    check_component(out.images, mixture, COMPONENT)


def test_the_conditioning_objects_of_the_pipelines():
    mixture, scheduler = mixture_and_scheduler()
    classifier = GaussianMixtureClassifier.from_score_model(mixture, [0, 0, 1, 1]).to(torch.float64)
    labels = torch.tensor([1, 0])
    guidance = ClassGuidance(classifier, labels, 2.0, scheduler, num_classes=2)
    assert not guidance.overrides_sample and guidance.overrides_score
    x, t = torch.tensor([[0.5, 1.0], [-0.3, 0.2]], dtype=torch.float64), torch.tensor([0.3, 0.6], dtype=torch.float64)
    score = mixture.score(x, t)
    # With the exact classifier, score + grad log p_t(y | x) is the score of the class's own mixture (eq. 14).
    weights, means, covariances = mixture.weights.tolist(), mixture.means, mixture.covariances
    class_score = {
        y: GaussianMixtureScoreModel.from_mixture(weights[2 * y : 2 * y + 2], means[2 * y : 2 * y + 2], covariances[2 * y : 2 * y + 2], sde="vp").to(torch.float64)
        for y in (0, 1)
    }
    expected = torch.stack([class_score[int(y)].score(x[i : i + 1], t[i : i + 1])[0] for i, y in enumerate(labels)])
    torch.testing.assert_close(ClassGuidance(classifier, labels, 1.0, scheduler).condition_score(score, x, t), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(guidance.condition_score(score, x, t), score + 2.0 * (expected - score), rtol=1e-6, atol=1e-6)
    assert ClassGuidance(classifier, labels, 0.0, scheduler).condition_score(score, x, t) is score

    observation, mask = torch.tensor([[2.0, 7.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    imputation = Imputation(observation, mask, scheduler.sde, fresh_noise=False)
    assert imputation.overrides_sample and not imputation.overrides_score
    t = torch.tensor([0.4], dtype=torch.float64)
    mean, _ = scheduler.sde.marginal_prob(observation, t)
    imputed = imputation.condition_sample(torch.tensor([[9.0, 3.0]], dtype=torch.float64), t)
    torch.testing.assert_close(imputed, torch.stack([mean[0, 0], torch.tensor(3.0, dtype=torch.float64)])[None])
    assert torch.equal(imputation.finalize(torch.tensor([[9.0, 3.0]], dtype=torch.float64)), torch.tensor([[2.0, 3.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="both"):
        Imputation(observation, mask, scheduler.sde, transform=lambda x: x)
