"""Conditioning objects: what a conditional sampler changes in the one predictor-corrector loop and the one
probability-flow ODE loop of the pipelines (Song et al. 2021, section 5 and Appendix I).

A conditional pipeline builds one `Conditioning` per call from its inputs (labels, an observed image and a mask,
a gray image) and hands it to the loop (`ScoreSdePipelineMixin.pc_loop`, `ProbabilityFlowMixin.ode_loop`); the
loops call it at every model evaluation and once at the end. ``conditioning=None`` is unconditional sampling, and
then the loops run exactly the unconditional code. The state of the call lives in the object, not on the
pipeline, so a pipeline holds no per-call state and any conditioning (a user's own subclass too) runs in the
same loops: score_sde's controllable_generation.py copies the sampler once per task instead.

Three methods, each the identity in the base class:

- `Conditioning.condition_sample` (x, t, generator): the state the model is evaluated at and the step starts from;
  imputation replaces the known part by the forward-noised observation there (Appendix I.2).
- `Conditioning.condition_score` (score, x, t): the score the sampler steps with; class guidance adds
  ``scale * grad_x log p_t(y | x)`` (section 5, eq. 14).
- `Conditioning.finalize` (x): the final sample; imputation sets the known part to the observation exactly.

The maths of each (the classifier gradient, the imputation step, the colour decoupling) is in
`scoresde_diffusers.guidance`; this module only binds it to the inputs of one call.
"""

from typing import Callable, Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

from .guidance import classifier_gradient, impute


class Conditioning:
    """The identity conditioning; subclasses override what their task changes.

    The loops look up which methods a subclass overrides (`overrides_sample`, `overrides_score`) and skip the
    others: an unchanged score is then not converted to the scheduler's ``prediction_type`` and back, which would
    cost a rounding error per step.
    """

    def condition_sample(self, sample: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
        """The state at continuous times `t` (B,) that the model is evaluated at and the step starts from.
        `generator` is the call's (None in the ODE loops, which draw no noise)."""
        return sample

    def condition_score(self, score: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The score the sampler steps with at (`sample`, `t`), given the model's unconditional `score`."""
        return score

    def finalize(self, sample: torch.Tensor) -> torch.Tensor:
        """The final sample of the loop (in the model's dtype, before `output_type` conversion)."""
        return sample

    @property
    def overrides_sample(self) -> bool:
        return type(self).condition_sample is not Conditioning.condition_sample

    @property
    def overrides_score(self) -> bool:
        return type(self).condition_score is not Conditioning.condition_score


class ClassGuidance(Conditioning):
    """Class-conditional sampling with a time-dependent classifier (Song et al. 2021, section 5, eq. 14, and
    Appendix I.1): grad log p_t(x | y) = grad log p_t(x) + `scale` * grad_x log p_t(y | x).

    Args:
        classifier (`torch.nn.Module`): called as ``classifier(x_t, timestep)`` with the score model's timestep,
            returning logits (B, num_classes); see `scoresde_diffusers.guidance.classifier_logits`.
        class_labels (`torch.Tensor`): the label y of every sample, (B,) integers, on the samples' device.
        scale (`float`): the guidance scale; 1 is the Bayes conditional, 0 the unconditional score (the classifier
            is then not called).
        scheduler (`ScoreSdeSchedulerMixin`): the score model's scheduler; its `t_to_timestep` maps continuous
            times to the model timesteps the classifier is called with, the times the score model sees.
        num_classes (`int`, *optional*): the classifier's declared class count; logits of another width are a
            ValueError.
    """

    def __init__(self, classifier, class_labels: torch.Tensor, scale: float, scheduler, num_classes: Optional[int] = None):
        self.classifier = classifier
        self.class_labels = class_labels
        self.scale = float(scale)
        self.scheduler = scheduler
        self.num_classes = num_classes

    def condition_score(self, score: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """score + scale * grad_x log p_t(y | x) (eq. 14), the gradient by autograd in the classifier's dtype."""
        if self.scale == 0:
            return score
        x = sample.to(self.classifier.dtype)
        gradient = classifier_gradient(self.classifier, x, self.scheduler.t_to_timestep(t), self.class_labels, self.num_classes)
        return score + self.scale * gradient.to(score.dtype)


class Imputation(Conditioning):
    """Imputation of the unknown part of the samples from an observation (Song et al. 2021, Appendix I.2;
    score_sde's `get_pc_inpainter`); colorization is imputation after an orthogonal change of basis (Appendix I.3).

    In the space of `transform` (the identity by default) the known part is a set of coordinates: `mask` is 1 where
    samples are generated and 0 where the `observation` y is known. Before every model evaluation the known part of
    the state is replaced by m(t) y + sigma(t) z (`scoresde_diffusers.guidance.impute`), so the unknown part is
    driven by grad log p_t([x_unknown, y_t]); `finalize` sets the known part to y exactly.

    Args:
        observation (`torch.Tensor`): y in `transform` space, the samples' shape (masked values unused).
        mask (`torch.Tensor`): 1 = generate, 0 = known, broadcastable to the samples.
        sde (`SDE` or `ScoreSdeSchedulerMixin`): gives m(t) and sigma(t) of the forward noising through
            ``marginal_prob``: the pipeline's scheduler (as the inpainting pipeline passes) or an `SDE`.
        fresh_noise (`bool`, defaults to `True`): a new z at every evaluation, drawn with the loop's generator (the
            paper's method, for the reverse SDE); `False` sets z = 0, the noise-free forward path m(t) y that keeps
            the probability-flow ODE deterministic (a random but fixed z was tried and biases the mode weights; see
            `ScoreSdeInpaintPipeline`).
        transform, inverse_transform (`Callable`, *optional*): an orthogonal map of samples to the space where the
            known part is a set of coordinates, and its inverse (`decouple` and `couple` for colorization).
            Orthogonality keeps the SDE's isotropic noise isotropic, so imputing there is the same imputation.
    """

    def __init__(
        self,
        observation: torch.Tensor,
        mask: torch.Tensor,
        sde,
        fresh_noise: bool = True,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        inverse_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ):
        if (transform is None) != (inverse_transform is None):
            raise ValueError("Pass both transform and inverse_transform, or neither.")
        self.observation = observation
        self.mask = mask
        self.sde = sde
        self.fresh_noise = bool(fresh_noise)
        self.transform = transform if transform is not None else _identity
        self.inverse_transform = inverse_transform if inverse_transform is not None else _identity

    def condition_sample(self, sample: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
        """The known part replaced by m(t) y + sigma(t) z, in `transform` space."""
        if self.fresh_noise:
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        else:
            noise = torch.zeros_like(sample)
        u = impute(self.transform(sample), self.observation.to(sample.dtype), self.mask.to(sample.dtype), self.sde, t, noise)
        return self.inverse_transform(u)

    def finalize(self, sample: torch.Tensor) -> torch.Tensor:
        """The final sample with the known part set to the observation y exactly."""
        u = self.transform(sample)
        mask = self.mask.to(u.dtype)
        return self.inverse_transform(mask * u + (1 - mask) * self.observation.to(u.dtype))


def _identity(sample: torch.Tensor) -> torch.Tensor:
    return sample


__all__ = ["ClassGuidance", "Conditioning", "Imputation"]
