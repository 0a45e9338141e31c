"""Tests of `ScoreSdeClassConditionalPipeline` and the exact `GaussianMixtureClassifier`.

Accuracy against exact answers: the four-Gaussian mixture (weights 0.1, 0.2, 0.3, 0.4, modes at (-2, -2),
(-2, 2), (2, -2), (2, 2)) with two classes, {0, 1} (x < 0) and {2, 3} (x > 0). With the exact score and the exact
time-dependent classifier, guidance_scale 1 samples p_0(x | y) exactly: class 0 has modes 0 and 1 with weights
1/3 and 2/3, class 1 modes 2 and 3 with weights 3/7 and 4/7; guidance_scale 0 samples the unconditional mixture.
Tolerances: 4 binomial standard errors sqrt(p (1 - p) / n) for every weight (n = 2000 per class), which a
correct sampler violates with probability < 1e-4 per weight; wrong-class samples at most 0.5 %.
"""

import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, ScoreSdeDPMSolverMultistepScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.guidance import classifier_gradient
from scoresde_diffusers.models.classifier import GaussianMixtureClassifier, MLPClassifier
from scoresde_diffusers.pipelines.score_sde_conditional import ScoreSdeClassConditionalPipeline

from pipeline_test_mixin import PipelineCommonTest

CLASSES = [0, 0, 1, 1]
N_PER_CLASS = 2000


def components(scheduler, **model_config):
    unet = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler, **model_config)
    return {"unet": unet, "classifier": GaussianMixtureClassifier.from_score_model(unet, CLASSES), "scheduler": scheduler}


def pipeline(scheduler, dtype=torch.float64):
    pipe = ScoreSdeClassConditionalPipeline(**components(scheduler)).to(dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def mode_fractions(x: torch.Tensor) -> torch.Tensor:
    """Fraction of samples in each quadrant, ordered like the components (-,-), (-,+), (+,-), (+,+)."""
    quadrant = (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()
    return torch.bincount(quadrant, minlength=4).double() / x.shape[0]


def assert_weights(fractions: torch.Tensor, expected, n: int, label: str):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    allowed = 4 * (expected * (1 - expected) / n).sqrt() + 0.005
    assert torch.all((fractions - expected).abs() <= allowed), f"{label}: {fractions.tolist()} vs {expected.tolist()} (allowed {allowed.tolist()})"


# ---------------------------------------------------------------------------------------------- common checks
class TestClassConditionalPCCommon(PipelineCommonTest):
    pipeline_class = ScoreSdeClassConditionalPipeline

    def get_dummy_components(self):
        return components(VPSDEScheduler())

    def get_dummy_image_components(self):
        return components(VPSDEScheduler(), sample_size=1, in_channels=2)

    def get_dummy_inputs(self, generator):
        return {"class_labels": [0, 1, 0], "num_inference_steps": 4, "generator": generator}


class TestClassConditionalODECommon(TestClassConditionalPCCommon):
    stochastic = True  # the prior sample is random

    def get_dummy_inputs(self, generator):
        return {"class_labels": [1, 1, 0], "num_inference_steps": 4, "sampler": "ode", "solver": "euler", "generator": generator}


# ---------------------------------------------------------------------------------------------- the exact classifier
def test_exact_classifier_is_the_class_posterior_and_its_gradient_completes_the_conditional_score():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    classifier = GaussianMixtureClassifier.from_score_model(model, CLASSES)
    x = 3 * torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.99 + 0.01
    timestep = scheduler.t_to_timestep(t)
    posteriors = model.component_posteriors(x, t)
    expected = torch.stack([posteriors[:, :2].sum(1), posteriors[:, 2:].sum(1)], dim=1)
    torch.testing.assert_close(classifier(x, timestep).logits.exp(), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(classifier.class_weights, torch.tensor([0.3, 0.7], dtype=torch.float64))
    # grad log p_t(x) + grad log p_t(y | x) is the score of the class's own mixture, noised the same way.
    for label, members in ((0, [0, 1]), (1, [2, 3])):
        own = GaussianMixtureScoreModel.from_mixture(model.weights[members], model.means[members], model.covariances[members], scheduler=scheduler).double()
        labels = torch.full((64,), label)
        conditional = model.score(x, t) + classifier_gradient(classifier, x, timestep, labels)
        # (1e-6: the models store their weights in float32, and the class's own weights are renormalised there.)
        torch.testing.assert_close(conditional, own.score(x, t), atol=1e-6, rtol=1e-6)


def test_exact_classifier_config_errors():
    with pytest.raises(ValueError, match="one class per component"):
        GaussianMixtureClassifier(num_components=4, dim=2, component_classes=[0, 1])
    with pytest.raises(ValueError, match="at least one component"):
        GaussianMixtureClassifier(num_components=3, dim=2, component_classes=[0, 0, 2])
    with pytest.raises(ValueError, match="num_classes"):
        GaussianMixtureClassifier(num_components=2, dim=2, component_classes=[0, 3], num_classes=2)


# ---------------------------------------------------------------------------------------------- exact answers
@pytest.mark.parametrize(
    "scheduler, sampler_kwargs",
    [
        (VPSDEScheduler(), {"num_inference_steps": 300}),
        (VESDEScheduler(sigma_max=10.0), {"num_inference_steps": 300, "corrector": "none"}),
        (VPSDEScheduler(), {"sampler": "ode", "solver": "dopri5"}),
        (ScoreSdeDPMSolverMultistepScheduler(), {"sampler": "ode", "num_inference_steps": 30}),
    ],
    ids=["vp-pc", "ve-reverse-diffusion", "vp-ode-dopri5", "vp-ode-scheduler"],
)
def test_class_conditional_samples_have_the_exact_conditional_mode_weights(scheduler, sampler_kwargs):
    pipe = pipeline(scheduler)
    labels = torch.tensor([0] * N_PER_CLASS + [1] * N_PER_CLASS)
    out = pipe(class_labels=labels, generator=torch.Generator().manual_seed(1), output_type="pt", **sampler_kwargs)
    x = out.images
    assert x.dtype == torch.float64 and x.shape == (2 * N_PER_CLASS, 2)
    assert_weights(mode_fractions(x[:N_PER_CLASS]), [1 / 3, 2 / 3, 0, 0], N_PER_CLASS, "class 0")
    assert_weights(mode_fractions(x[N_PER_CLASS:]), [0, 0, 3 / 7, 4 / 7], N_PER_CLASS, "class 1")
    # Each mode is where it should be: the mean of the samples of mode 3 (the heaviest) is (2, 2).
    in_mode_3 = x[N_PER_CLASS:][(x[N_PER_CLASS:] > 0).all(dim=1)]
    torch.testing.assert_close(in_mode_3.mean(0), torch.tensor([2.0, 2.0], dtype=torch.float64), atol=0.06, rtol=0)


def test_guidance_scale_zero_is_unconditional_sampling():
    pipe = pipeline(VPSDEScheduler())
    n = 2 * N_PER_CLASS
    out = pipe(class_labels=1, batch_size=n, guidance_scale=0.0, num_inference_steps=300, generator=torch.Generator().manual_seed(2), output_type="pt")
    assert_weights(mode_fractions(out.images), [0.1, 0.2, 0.3, 0.4], n, "guidance_scale=0")


def test_guidance_scale_above_one_sharpens_towards_the_class():
    # With scale 3 the tilted density p(x) p(y | x)^3 keeps class 1 and reweights its modes towards the mode
    # farther from class 0; the samples stay in class 1.
    pipe = pipeline(VPSDEScheduler())
    out = pipe(class_labels=1, batch_size=500, guidance_scale=3.0, num_inference_steps=200, generator=torch.Generator().manual_seed(3), output_type="pt")
    assert (out.images[:, 0] > 0).double().mean() > 0.99


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_labels_and_classifiers_are_clear_errors():
    pipe = pipeline(VPSDEScheduler(), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 1\]"):
        pipe(class_labels=[0, 2], num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match=r"class_labels must lie"):
        pipe(class_labels=-1, num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="batch_size"):
        pipe(class_labels=[0, 1], batch_size=3, num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="integers"):
        pipe(class_labels=[0.5], num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="class_labels is required"):
        pipe(num_inference_steps=2, output_type="pt")
    with pytest.raises(ValueError, match="sampler"):
        pipe(class_labels=0, sampler="ddim", output_type="pt")
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe(class_labels=0, guidance_scale=float("nan"), output_type="pt")
    # A network classifier with 3 classes for labels up to 4; and one whose logits disagree with its config.
    unet = pipe.unet
    wrong = ScoreSdeClassConditionalPipeline(unet=unet, classifier=MLPClassifier(dim=2, num_classes=3), scheduler=pipe.scheduler)
    with pytest.raises(ValueError, match="3 classes"):
        wrong(class_labels=[4], num_inference_steps=2, output_type="pt")
    lying = MLPClassifier(dim=2, num_classes=3)
    lying.register_to_config(num_classes=5)
    wrong = ScoreSdeClassConditionalPipeline(unet=unet, classifier=lying, scheduler=pipe.scheduler)
    with pytest.raises(ValueError, match="returns 3 classes but its config says num_classes=5"):
        wrong(class_labels=[4], num_inference_steps=2, output_type="pt")


def test_network_classifier_guides_and_counts_model_evaluations():
    pipe = pipeline(VPSDEScheduler(), dtype=torch.float32)
    guided = ScoreSdeClassConditionalPipeline(unet=pipe.unet, classifier=MLPClassifier(dim=2, num_classes=2), scheduler=pipe.scheduler)
    guided.set_progress_bar_config(disable=True)
    out = guided(class_labels=[0, 1], num_inference_steps=5, corrector="langevin", generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.nfe == 10 and torch.isfinite(out.images).all()
