"""`ScoreSdePCPipeline`: predictor-corrector sampling of the reverse-time SDE (Song et al. 2021, Algorithms 2-3)."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from ..pipeline_score_sde_utils import ScoreSdePipelineMixin, ScoreSdePipelineOutput


class ScoreSdePCPipeline(ScoreSdePipelineMixin, DiffusionPipeline):
    r"""Predictor-corrector (PC) sampler of a score-based model (Song et al. 2021, section 4.2, Algorithms 2-3
    and Appendix G).

    From x ~ N(0, `init_noise_sigma`^2 I) at t = 1, each time t_i of the scheduler's grid (1 -> `sampling_eps`)
    runs `correct_steps` corrector steps (score-based MCMC at fixed t_i: Langevin, annealed Langevin, ...) and then
    one predictor step t_i -> t_{i+1} (a reverse-SDE solver step: reverse diffusion, Euler-Maruyama, ancestral,
    ...). The last predictor step goes to noise level 0 by the scheduler's ``final_step`` (by default its
    noise-free mean, score_sde's ``denoise=True``). Every update rule is
    the scheduler's (`step_correct`, `step`): the pipeline is only the loop. The corrector-only configuration
    (``predictor="none", corrector="annealed_langevin"``) is annealed Langevin dynamics (NCSN; see
    `ScoreSdeAnnealedLangevinPipeline`), the predictor-only one (``corrector="none"``) plain reverse-SDE sampling.

    Args:
        unet (`ModelMixin`): the score model, called like a diffusers UNet, ``unet(sample, timestep).sample``, with
            the output type the scheduler's ``prediction_type`` says; its config gives the sample shape
            (``sample_size`` and ``in_channels`` for images, ``dim`` for vectors).
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range of the model's data, mapped to [0, 1]
            for ``output_type="np"``/``"pil"``; saved in model_index.json.
        num_levels (`int`, defaults to 256): values one data entry takes, evenly spaced over `data_range` (256 for
            8-bit images, 17 for scikit-learn's digits); the ODE scheduler's grid ends at their spacing. Saved in
            model_index.json.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["sample"]

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 1000,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[[Any, int, torch.Tensor, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        snr: Optional[float] = None,
        correct_steps: Optional[int] = None,
        predictor: Optional[str] = None,
        corrector: Optional[str] = None,
        latents: Optional[torch.Tensor] = None,
    ) -> Union[ScoreSdePipelineOutput, Tuple]:
        r"""Draw `batch_size` samples with predictor-corrector sampling.

        Args:
            batch_size (`int`, defaults to 1): number of samples.
            num_inference_steps (`int`, defaults to 1000): N, the number of times on the grid, i.e. of predictor steps.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): random number generator(s) for the
                prior sample and every noise term; the same generator gives the same samples.
            output_type (`str`, defaults to ``"pil"``): ``"pil"`` (image-shaped models only), ``"np"`` (scaled
                from `data_range` to [0, 1]) or ``"pt"`` (the raw tensor in the model's data range).
            return_dict (`bool`, defaults to `True`): return a `ScoreSdePipelineOutput` instead of a tuple.
            callback_on_step_end (`Callable` or `PipelineCallback`, *optional*): called after every step as
                ``callback_on_step_end(pipe, i, t, callback_kwargs)`` with the tensors named in
                `callback_on_step_end_tensor_inputs`; a returned dict replaces them.
            callback_on_step_end_tensor_inputs (`List[str]`, defaults to ``["sample"]``): tensors handed to the callback.
            snr (`float`, *optional*): signal-to-noise ratio of the corrector step size (Algorithm 4); defaults to
                the scheduler's ``snr``.
            correct_steps (`int`, *optional*): M, corrector steps per time; defaults to the scheduler's ``correct_steps``.
            predictor (`str`, *optional*): a name in `PREDICTORS` (``"none"`` for corrector-only sampling); defaults
                to the scheduler's ``predictor``.
            corrector (`str`, *optional*): a name in `CORRECTORS` (``"none"`` for predictor-only sampling);
                defaults to the scheduler's ``corrector``.
            latents (`torch.Tensor`, *optional*): standard normal noise of shape (batch_size, *sample shape) to
                start from instead of drawing it; it is scaled by the scheduler's `init_noise_sigma`.

        The overrides (`snr`, `correct_steps`, `predictor`, `corrector`) apply to this call only.

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` or the tuple ``(images, nfe)``. The number of score evaluations
            is ``N * correct_steps`` for the corrector (none if it is ``"none"``) plus ``N`` for the predictor (none
            if it is ``"none"``, which takes no step and needs no score).

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines import ScoreSdePCPipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
        >>> pipe = ScoreSdePCPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> generator = torch.Generator().manual_seed(0)
        >>> out = pipe(batch_size=8, num_inference_steps=50, corrector="langevin", generator=generator, output_type="pt")
        >>> out.images.shape, out.nfe  # per time: one Langevin step, then one reverse-diffusion step
        (torch.Size([8, 2]), 100)

        ```
        """
        # The loop is the mixin's `pc_loop`, which the conditional pipelines run with their conditioning.
        return self.pc_loop(
            batch_size=batch_size, num_inference_steps=num_inference_steps, generator=generator, output_type=output_type,
            return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, snr=snr, correct_steps=correct_steps,
            predictor=predictor, corrector=corrector, latents=latents,
        )  # fmt: skip
