"""`ScoreSdeClassConditionalPipeline`: class-conditional sampling with a time-dependent classifier (Song et al. 2021,
section 5 and Appendix I.1), by the reverse SDE (predictor-corrector) or the probability-flow ODE."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from scoresde_diffusers.conditioning import ClassGuidance
from scoresde_diffusers.guidance import check_class_labels
from scoresde_diffusers.utils import describe

from ..pipeline_score_sde_utils import DEFAULT_DATA_RANGE, DEFAULT_NUM_LEVELS, ScoreSdePipelineOutput
from ..score_sde_ode.pipeline_score_sde_ode import SAMPLERS, ProbabilityFlowMixin, check_sampler  # noqa: F401 (re-exported)


class ScoreSdeClassConditionalPipeline(ProbabilityFlowMixin, DiffusionPipeline):
    r"""Samples of p_0(x | y) from an unconditional score model and a time-dependent classifier p_t(y | x_t)
    (Song et al. 2021, section 5, eq. 14, and Appendix I.1).

    Bayes' rule in the score: grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x). The pipeline runs the
    loops of `ScoreSdePCPipeline` (``sampler="pc"``: reverse SDE, predictor-corrector, `pc_loop`) and
    `ScoreSdeODEPipeline` (``sampler="ode"``: the probability-flow ODE of the conditional marginals, `ode_loop`),
    handing them a `ClassGuidance` conditioning built for the call, which replaces the score by

        s(x, t) + guidance_scale * grad_x log p_t(y | x),

    the gradient taken by autograd through the classifier. With the exact classifier (`GaussianMixtureClassifier`)
    ``guidance_scale=1`` samples p_0(x | y) exactly and ``0`` the unconditional p_0(x); larger values sharpen the
    classes (classifier guidance, Dhariwal & Nichol 2021).

    Args:
        unet (`ModelMixin`): the unconditional score model (see `ScoreSdePCPipeline`).
        classifier (`ModelMixin`): a time-dependent classifier called as ``classifier(x_t, timestep)`` with the
            same model timestep as `unet` (the scheduler's ``timestep_type`` map), returning logits (B,
            num_classes) (`.logits`, a tuple or a tensor): `TimeDependentClassifier`, `MLPClassifier`,
            `GaussianMixtureClassifier`. Its ``config.num_classes``, when present, bounds the labels.
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range of the model's data; saved in
            model_index.json.
        num_levels (`int`, defaults to 256): values one data entry takes over `data_range` (8-bit images: 256);
            the ODE scheduler's grid ends at their spacing. Saved in model_index.json.
    """

    model_cpu_offload_seq = "classifier->unet"
    _callback_tensor_inputs = ["sample"]

    def __init__(self, unet, classifier, scheduler, data_range: Union[Tuple[float, float], List[float]] = DEFAULT_DATA_RANGE, num_levels: int = DEFAULT_NUM_LEVELS):
        DiffusionPipeline.__init__(self)
        self.register_modules(unet=unet, classifier=classifier, scheduler=scheduler)
        self.register_data_range(data_range, num_levels)

    # ------------------------------------------------------------------ the conditioning
    @property
    def num_classes(self) -> Optional[int]:
        """The classifier's ``config.num_classes`` (None when its config has none)."""
        config = getattr(self.classifier, "config", None)
        value = getattr(config, "num_classes", None) if config is not None else None
        return None if value is None else int(value)

    def guidance(self, class_labels: torch.Tensor, guidance_scale: float) -> ClassGuidance:
        """The `ClassGuidance` of one call: score + `guidance_scale` * grad_x log p_t(y | x) (eq. 14) for the
        labels `class_labels` (B,), the classifier called with the pipeline scheduler's model timesteps."""
        return ClassGuidance(self.classifier, class_labels, guidance_scale, self.scheduler, self.num_classes)

    def prepare_class_labels(self, class_labels, batch_size: Optional[int]) -> torch.Tensor:
        """`class_labels` (an int for every sample, or one per sample) as a (B,) long tensor, checked against
        `batch_size` and the classifier's number of classes."""
        if class_labels is None:
            raise ValueError("class_labels is required: the class of every sample (an int, or a sequence of ints).")
        labels = torch.as_tensor(class_labels)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers, got {describe(class_labels)}.")
        if labels.ndim == 0:
            labels = labels.reshape(1).expand(1 if batch_size is None else batch_size)
        if labels.ndim != 1:
            raise ValueError(f"class_labels must be an int or a 1-D sequence, got shape {tuple(labels.shape)}.")
        if batch_size is not None and labels.shape[0] != batch_size:
            raise ValueError(f"class_labels has {labels.shape[0]} labels but batch_size is {batch_size}.")
        if self.num_classes is not None:
            check_class_labels(labels, self.num_classes)
        elif int(labels.min()) < 0:
            raise ValueError(f"class_labels must be >= 0, got {describe(class_labels)}.")
        return labels.long()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        class_labels: Union[int, Sequence[int], torch.Tensor] = None,
        batch_size: Optional[int] = None,
        guidance_scale: float = 1.0,
        num_inference_steps: Optional[int] = None,
        sampler: str = "pc",
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[[Any, int, torch.Tensor, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        latents: Optional[torch.Tensor] = None,
        **sampler_kwargs,
    ) -> Union[ScoreSdePipelineOutput, Tuple]:
        r"""Draw one sample of p_0(x | y) per label.

        Args:
            class_labels (`int`, `Sequence[int]` or `torch.Tensor`): the class y of every sample: one int for all
                (`batch_size` of them) or one per sample; each in [0, num_classes).
            batch_size (`int`, *optional*): number of samples; defaults to ``len(class_labels)`` (1 for an int).
            guidance_scale (`float`, defaults to 1.0): weight of grad log p_t(y | x); 1 is the Bayes conditional,
                0 unconditional sampling (the classifier is then not called).
            num_inference_steps (`int`, *optional*): grid size; defaults to the chosen loop's default (1000 PC
                steps; an adaptive solver for the ODE).
            sampler (`str`, defaults to ``"pc"``): ``"pc"`` (reverse SDE, `pc_loop`, the loop of `ScoreSdePCPipeline`)
                or ``"ode"`` (probability-flow ODE, `ode_loop`, the loop of `ScoreSdeODEPipeline`).
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs, latents:
                as in `ScoreSdePCPipeline.__call__` / `ScoreSdeODEPipeline.__call__`.
            sampler_kwargs: the other options of the chosen loop: ``snr``, ``correct_steps``, ``predictor``,
                ``corrector`` for ``"pc"``; ``solver``, ``rtol``, ``atol``, ``sampling_eps``, ``time_spacing``,
                ``timesteps``, ``denoise``, ``solver_options`` for ``"ode"``.

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` or the tuple; `nfe` counts score-model evaluations (the
            classifier is evaluated, with its gradient, once per score evaluation when ``guidance_scale != 0``).

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.models.classifier import GaussianMixtureClassifier
        >>> from scoresde_diffusers.pipelines.score_sde_conditional import ScoreSdeClassConditionalPipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)  # modes at (+-2, +-2)
        >>> classifier = GaussianMixtureClassifier.from_score_model(model, component_classes=[0, 0, 1, 1])  # x < 0 | x > 0
        >>> pipe = ScoreSdeClassConditionalPipeline(unet=model, classifier=classifier, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> out = pipe(class_labels=[1, 1, 1, 1], num_inference_steps=100, generator=torch.Generator().manual_seed(0), output_type="pt")
        >>> bool((out.images[:, 0] > 0).all()), out.nfe  # class 1: the two modes with x > 0
        (True, 100)

        ```
        """
        check_sampler(sampler)
        labels = self.prepare_class_labels(class_labels, batch_size)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not torch.isfinite(torch.tensor(float(guidance_scale))):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}.")
        guidance = self.guidance(labels.to(self._execution_device), float(guidance_scale))
        return self.run_sampler(
            sampler, guidance, num_inference_steps, batch_size=labels.shape[0], generator=generator, output_type=output_type,
            return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, latents=latents, **sampler_kwargs,
        )  # fmt: skip
