"""`ScoreSdeAdaptivePipeline`: reverse-SDE sampling with error-controlled step sizes ("Gotta Go Fast")."""

from typing import Optional, Tuple, Union

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from scoresde_diffusers.sampling.adaptive_sde import get_sde_solver
from scoresde_diffusers.utils import compute_dtype

from ..pipeline_score_sde_utils import ScoreSdePipelineMixin, ScoreSdePipelineOutput


class ScoreSdeAdaptivePipeline(ScoreSdePipelineMixin, DiffusionPipeline):
    r"""Sampling of the reverse-time SDE (Song et al. 2021, eq. 6) with an adaptive-step solver from `SDE_SOLVERS`,
    by default ``ggf``: Jolicoeur-Martineau et al. (2021), "Gotta Go Fast When Generating Data with Score-Based
    Models", Algorithm 1 (Euler-Maruyama vs improved-Euler error estimate, mixed absolute/relative tolerance,
    a step size per sample). There is no `num_inference_steps`: `rtol` and `atol` set the accuracy and the cost,
    and the output reports the number of score evaluations `nfe`.

    Args:
        unet (`ModelMixin`): the score model, called like a diffusers UNet (``unet(sample, timestep).sample``).
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`: the SDE,
            the model-output conversion and the default `sampling_eps`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range of the model's data.
        num_levels (`int`, defaults to 256): values one data entry takes, evenly spaced over `data_range` (256 for
            8-bit images, 17 for scikit-learn's digits); the ODE scheduler's grid ends at their spacing. Saved in
            model_index.json.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = []

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Optional[torch.Generator] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        solver: str = "ggf",
        rtol: float = 0.05,
        atol: float = 0.0078,
        sampling_eps: Optional[float] = None,
        denoise: bool = True,
        latents: Optional[torch.Tensor] = None,
        **solver_options,
    ) -> Union[ScoreSdePipelineOutput, Tuple]:
        r"""Draw `batch_size` samples with the adaptive reverse-SDE solver `solver`.

        Args:
            batch_size (`int`, defaults to 1): number of samples.
            generator (`torch.Generator`, *optional*): random number generator of the prior draw and the Brownian
                increments (one generator, on the CPU or the pipeline's device).
            output_type (`str`, defaults to ``"pil"``): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`, defaults to `True`): return a `ScoreSdePipelineOutput` instead of a tuple.
            solver (`str`, defaults to ``"ggf"``): a name in `SDE_SOLVERS`.
            rtol (`float`, defaults to 0.05): relative tolerance (the paper's eps_rel).
            atol (`float`, defaults to 0.0078): absolute tolerance (the paper's eps_abs = 1/128, for data in [-1, 1]).
            sampling_eps (`float`, *optional*): the end time; the scheduler's ``sampling_eps`` by default.
            denoise (`bool`, defaults to `True`): finish with Tweedie's step at `sampling_eps` (one evaluation).
            latents (`torch.Tensor`, *optional*): standard normal noise to start from (scaled by `init_noise_sigma`).
            solver_options: further keywords of the solver (``h_init``, ``safety``, ``exponent``, ``extrapolation``,
                ``batch_reduce``, ``memory``, ``max_iterations``).

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` or the tuple ``(images, nfe)``.

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines.score_sde_fast import ScoreSdeAdaptivePipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
        >>> pipe = ScoreSdeAdaptivePipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> out = pipe(batch_size=8, rtol=0.05, generator=torch.Generator().manual_seed(0), output_type="pt")
        >>> out.images.shape, out.nfe > 0
        (torch.Size([8, 2]), True)

        ```
        """
        # 1. Check the arguments before any work.
        self.check_output_type(output_type)
        self.check_scheduler()
        sde_solver = get_sde_solver(solver)
        eps = self.scheduler.resolve_sampling_eps(sampling_eps)

        # 2. The prior sample x_1.
        device, dtype = self._execution_device, compute_dtype(self.unet.dtype)
        self.reset_nfe()  # before the prior: it may ask the model for the data's mean (`data_mean`)
        sample = self.prepare_latents(batch_size, dtype, device, generator, latents)

        # 3. The adaptive solve; the model is called through `model_score`, which counts evaluations.
        with self.progress_bar(total=100) as progress_bar:

            def progress(fraction):
                done = min(100, int(100 * fraction))
                if done > progress_bar.n:
                    progress_bar.update(done - progress_bar.n)

            solution = self.scheduler.solve_reverse_sde(
                self.model_score,
                sample,
                float(eps),
                solver=sde_solver,
                rtol=rtol,
                atol=atol,
                denoise=denoise,
                generator=generator,
                progress=progress,
                **solver_options,
            )
            progress(1.0)

        # 4. Output.
        images = self.postprocess(solution.x.to(self.unet.dtype), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self.nfe)
        return ScoreSdePipelineOutput(images=images, nfe=self.nfe)
