"""`ScoreSdeAnnealedLangevinPipeline`: annealed Langevin dynamics (SMLD / NCSN sampling) as a thin PC configuration."""

import math
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from scoresde_diffusers.schedulers import ScoreSdePCSchedulerMixin

from ..pipeline_score_sde_utils import ScoreSdePipelineOutput
from ..score_sde_pc import ScoreSdePCPipeline


class ScoreSdeAnnealedLangevinPipeline(ScoreSdePCPipeline):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, section 4.3, Algorithm 1), the sampler
    of NCSN / SMLD, with the knobs NCSN users know.

    It is `ScoreSdePCPipeline` with ``predictor="none"`` and ``corrector="annealed_langevin"``: at each noise level
    sigma_i of the grid (geometric from sigma_max to sigma_min for the VE SDE) it runs `n_steps_each` Langevin steps
    x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z with alpha_i = `step_lr` sigma_i^2 / sigma_L^2, where
    sigma_L is the smallest level of the grid. The corrector writes the same step as eps = 2 (snr sigma_i)^2
    (score_sde's `AnnealedLangevinDynamics`), so ``snr = sqrt(step_lr) / (2 sigma_L)``; pass either `step_lr` or
    `snr`. The map is exact for the VE SDE; with VP / sub-VP the corrector also multiplies the step by alpha(t).
    The last step returns its noise-free mean. Components and saved folders are those of `ScoreSdePCPipeline`.

    Args:
        unet (`ModelMixin`): the score model (see `ScoreSdePCPipeline`).
        scheduler (`ScoreSdeSchedulerMixin`): usually `VESDEScheduler`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range of the model's data.
        num_levels (`int`, defaults to 256): values one data entry takes, evenly spaced over `data_range` (256 for
            8-bit images, 17 for scikit-learn's digits); the ODE scheduler's grid ends at their spacing. Saved in
            model_index.json.
    """

    #: snr used when neither `snr` nor `step_lr` is given; recovers the four-Gaussian mixture (VE, sigma_max=50) with 100 levels x 10 steps.
    default_snr = 0.4

    def step_lr_to_snr(self, step_lr: float) -> float:
        """NCSN's `step_lr` (epsilon of Algorithm 1) as the corrector's snr: sqrt(step_lr) / (2 sigma_L)."""
        if not step_lr > 0:
            raise ValueError(f"step_lr must be positive, got {step_lr!r}.")
        self.check_scheduler(required=ScoreSdePCSchedulerMixin)
        eps = torch.tensor(self.scheduler.config.sampling_eps, dtype=torch.float64)
        sigma_last = float(self.scheduler.marginal_std(eps))
        return math.sqrt(step_lr) / (2 * sigma_last)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 100,
        n_steps_each: int = 10,
        step_lr: Optional[float] = None,
        snr: Optional[float] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[[Any, int, torch.Tensor, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        latents: Optional[torch.Tensor] = None,
    ) -> Union[ScoreSdePipelineOutput, Tuple]:
        r"""Draw `batch_size` samples with annealed Langevin dynamics.

        Args:
            batch_size (`int`, defaults to 1): number of samples.
            num_inference_steps (`int`, defaults to 100): L, the number of noise levels.
            n_steps_each (`int`, defaults to 10): T, Langevin steps per noise level (NCSN's ``n_steps_each``).
            step_lr (`float`, *optional*): NCSN's step size epsilon at the smallest level; mutually exclusive with `snr`.
            snr (`float`, *optional*): the corrector's signal-to-noise ratio; defaults to `default_snr` (0.4).
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs, latents:
                as in `ScoreSdePCPipeline.__call__`.

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` (nfe = L T) or the tuple ``(images, nfe)``.

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VESDEScheduler
        >>> from scoresde_diffusers.pipelines import ScoreSdeAnnealedLangevinPipeline

        >>> scheduler = VESDEScheduler(sigma_max=10.0)
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
        >>> pipe = ScoreSdeAnnealedLangevinPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> out = pipe(batch_size=4, num_inference_steps=20, n_steps_each=5, step_lr=2e-5, output_type="pt")
        >>> out.images.shape, out.nfe
        (torch.Size([4, 2]), 100)

        ```
        """
        if step_lr is not None and snr is not None:
            raise ValueError("Give either step_lr (NCSN's step size) or snr, not both: one sets the other.")
        if step_lr is not None:
            snr = self.step_lr_to_snr(step_lr)
        if isinstance(n_steps_each, bool) or not isinstance(n_steps_each, int) or n_steps_each < 1:
            raise ValueError(f"n_steps_each must be an integer >= 1, got {n_steps_each!r}.")
        return super().__call__(
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            generator=generator,
            output_type=output_type,
            return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            snr=self.default_snr if snr is None else snr,
            correct_steps=n_steps_each,
            predictor="none",
            corrector="annealed_langevin",
            latents=latents,
        )
