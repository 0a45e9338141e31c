"""`ScoreSdeODEPipeline`: sampling, encoding and decoding with the probability-flow ODE (Song et al. 2021, sec. 4.3)."""

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from scoresde_diffusers.conditioning import Conditioning
from scoresde_diffusers.sampling.ode_solvers import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    check_tolerances,
    get_ode_solver,
    is_adaptive,
)
from scoresde_diffusers.sampling.exponential_integrators import requires_sde
from scoresde_diffusers.schedulers import ScoreSdeDPMSolverMultistepScheduler, ScoreSdeODESchedulerMixin
from scoresde_diffusers.schedulers.scheduling_score_sde_ode_base import DATA_DIAMETER
from scoresde_diffusers.utils import check_num_steps, compute_dtype, describe

from ..pipeline_score_sde_utils import ScoreSdePipelineMixin, ScoreSdePipelineOutput

#: The loops a conditional pipeline can run (`ProbabilityFlowMixin.run_sampler`): the reverse SDE (predictor-corrector)
#: and the probability-flow ODE.
SAMPLERS = ("pc", "ode")


def check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS} (predictor-corrector or probability-flow ODE), got {sampler!r}.")


class ProbabilityFlowMixin(ScoreSdePipelineMixin):
    """What the ODE and likelihood pipelines share: the probability-flow drift from the model and one ODE solve;
    and the one probability-flow sampling loop, `ode_loop`, which `ScoreSdeODEPipeline` runs as it is and the
    conditional pipelines (which build on this mixin to reach both loops, `run_sampler`) with a `Conditioning`.

    The drift is ``scheduler.probability_flow_drift(x, t, score)``, f - 1/2 g^2 s (Song et al. eq. 13): the
    scheduler owns the maths (its SDE, grids and solvers), the pipeline only calls the model for the score s.
    Exponential integrators (solvers with ``requires_sde``, `scoresde_diffusers.sampling.exponential_integrators`)
    get the model's denoiser x_0(x, t) too; `scheduler.solve_probability_flow` hands them its SDE.
    """

    #: The fixed-step solver used when `num_inference_steps` and grid arguments are given and no `solver`: UniPC-3
    #: (DPM-Solver++(3M) with corrector); its grid is the ODE scheduler's unless `time_spacing` says otherwise (see
    #: `time_grid`). With ``time_spacing="log_snr"`` it is the most accurate on exact models (`SMOOTH_MODEL_SETTINGS`);
    #: on the rho = 7 grid order 3 is not. (With `num_inference_steps` alone the pipeline runs `ode_scheduler()`'s steps.)
    default_fixed_step_solver = "unipc_3m"

    def model_denoiser(self, sample: torch.Tensor, t: torch.Tensor, conditioning: Optional[Conditioning] = None) -> torch.Tensor:
        """Tweedie's E[x_0 | x_t = sample] = (x + sigma^2 s) / m from the model, at times `t` (B,); one evaluation.
        Like the drift, it is evaluated at the `conditioning`'s `condition_sample` of `sample` (imputation's)."""
        if conditioning is not None:
            sample = conditioning.condition_sample(sample, t)
        return self.scheduler.score_to_denoised(self.model_score(sample, t, conditioning), sample, t)

    def probability_flow_drift(self, sample: torch.Tensor, t: torch.Tensor, conditioning: Optional[Conditioning] = None) -> torch.Tensor:
        """dx/dt of the probability-flow ODE at `sample` and continuous times `t` (B,); one model evaluation.
        The ODE has no noise to redraw, so a `conditioning`'s `condition_sample` applies to the state the drift is
        evaluated at, and its `condition_score` to the score (without a conditioning: the plain drift)."""
        if conditioning is not None:
            sample = conditioning.condition_sample(sample, t)
        score = self.model_score(sample, t, conditioning)
        return self.scheduler.probability_flow_drift(sample, t, score)

    def resolve_sampling_eps(self, sampling_eps: Optional[float], default: Optional[float] = None) -> float:
        """`sampling_eps`, or `default` (the scheduler's ``config.sampling_eps`` if None): the scheduler checks it
        against (0, T) and the first time its model was trained on."""
        return self.scheduler.resolve_sampling_eps(sampling_eps, default=default)

    def resolve_solver(self, solver: Optional[str], num_inference_steps: Optional[int], rtol: float, atol: float, has_grid: bool = False):
        """The solver function for `solver` (``dopri5`` without steps or grid, `default_fixed_step_solver` with steps, ``heun`` with a grid), checking the combination."""
        check_tolerances(rtol, atol)
        # Steps without a grid: the fast default; a user's own grid of times: heun, as before; neither: dopri5.
        name = solver if solver is not None else ("heun" if has_grid else "dopri5" if num_inference_steps is None else self.default_fixed_step_solver)
        function = get_ode_solver(name)
        if is_adaptive(function) and num_inference_steps is not None:
            raise ValueError(f"Solver {name!r} is adaptive (steps set by rtol/atol); do not pass num_inference_steps, or pick a fixed-step solver (unipc_3m, dpm_solver_3m, heun, rk4, ...).")
        return name, function

    def time_grid(
        self,
        name: str,
        solver,
        num_inference_steps: Optional[int],
        eps: float,
        time_spacing: str,
        timesteps: Optional[Sequence[float]],
        device: torch.device,
        dtype: torch.dtype,
        ode_scheduler=None,
    ) -> torch.Tensor:
        """Decreasing continuous times from T to eps: the two end points for an adaptive solver, else the grid (for
        an exponential integrator without a `time_spacing`, that of `ode_scheduler`, by default `ode_scheduler()`)."""
        T = self.scheduler.T
        if timesteps is not None:
            if is_adaptive(solver):
                raise ValueError(f"Solver {name!r} is adaptive: a custom `timesteps` grid needs euler, heun or rk4.")
            if num_inference_steps is not None:
                raise ValueError("Pass either num_inference_steps or timesteps, not both.")
            grid = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
            if grid.numel() < 2 or not torch.all(grid[1:] < grid[:-1]) or grid[0] > T or grid[-1] <= 0:
                raise ValueError(f"timesteps must be at least 2 strictly decreasing continuous times in (0, {T}]; got {describe(timesteps)}.")
            return grid.to(device=device, dtype=dtype)
        if is_adaptive(solver):
            return torch.tensor([T, eps], dtype=dtype, device=device)
        if num_inference_steps is None:
            raise ValueError(f"Fixed-step solver {name!r} needs num_inference_steps (or a custom `timesteps` grid).")
        if time_spacing is None:
            # Exponential integrators: the grid of the ODE scheduler (its spacing and options), whose steps they take.
            if requires_sde(solver):
                ode_scheduler = self.ode_scheduler() if ode_scheduler is None else ode_scheduler
                num_inference_steps = check_num_steps(num_inference_steps)
                spacing = ode_scheduler.config.time_spacing
                return self.scheduler.time_grid(spacing, num_inference_steps, t_min=eps, device=device, dtype=dtype, **ode_scheduler.grid_options())
            time_spacing = "uniform"
        return self.scheduler.fixed_step_grid(num_inference_steps, eps, time_spacing, device=device, dtype=dtype)

    def default_exponential_eps(self, sampling_eps: Optional[float], ode_scheduler=None) -> float:
        """End time of an exponential integrator's grid: `sampling_eps` if given, else the `end_time` of
        `ode_scheduler` (by default `ode_scheduler()`): where the noise level reaches the larger of the model's
        smallest trained level and one level of the data, then the last step goes to zero noise."""
        if sampling_eps is not None:
            return self.resolve_sampling_eps(sampling_eps)
        return (self.ode_scheduler() if ode_scheduler is None else ode_scheduler).end_time()

    def solve_flow(
        self,
        sample: torch.Tensor,
        t_grid: torch.Tensor,
        solver,
        rtol: float,
        atol: float,
        callback: Optional[Callable] = None,
        conditioning: Optional[Conditioning] = None,
        **solver_options,
    ) -> torch.Tensor:
        """Integrate the probability-flow ODE from ``t_grid[0]`` to ``t_grid[-1]`` (either direction), with a
        progress bar: one tick per step for fixed-step solvers, the percentage of the time span covered for
        adaptive ones; the drift (and an exponential integrator's denoiser) conditioned by `conditioning`."""
        batch = sample.shape[0]
        span = float(t_grid[-1] - t_grid[0])
        adaptive = is_adaptive(solver)
        with self.progress_bar(total=100 if adaptive else t_grid.numel() - 1) as progress_bar:

            def func(t, x):
                if adaptive:
                    done = min(100, int(100 * float(t - t_grid[0]) / span))
                    if done > progress_bar.n:
                        progress_bar.update(done - progress_bar.n)
                return self.probability_flow_drift(x, t.expand(batch), conditioning)

            def step_callback(i, t_next, x):
                replaced = callback(i, t_next, x) if callback is not None else None
                progress_bar.update()
                return replaced

            # Exponential integrators also get the model's x_0 prediction (one evaluation per call) and, from the
            # scheduler, its SDE.
            denoiser = (lambda t, x: self.model_denoiser(x, t.expand(batch), conditioning)) if requires_sde(solver) else None
            y, _ = self.scheduler.solve_probability_flow(
                func, sample, t_grid, solver, rtol=rtol, atol=atol, callback=None if adaptive else step_callback, denoiser=denoiser, **solver_options
            )
            if adaptive:
                progress_bar.update(100 - progress_bar.n)
        return y


    # ------------------------------------------------------------------ the probability-flow sampling loop
    # The one ODE sampling loop of the library: `ScoreSdeODEPipeline` runs it unconditionally and the conditional
    # pipelines with their `Conditioning` object, so no pipeline copies it or inherits it from another pipeline.
    def _state_dtype(self) -> torch.dtype:
        return compute_dtype(self.unet.dtype)

    @torch.no_grad()
    def ode_loop(
        self,
        batch_size: int = 1,
        num_inference_steps: Optional[int] = None,
        generator=None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        solver: Optional[str] = None,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        sampling_eps: Optional[float] = None,
        time_spacing: Optional[str] = None,
        timesteps: Optional[Sequence[float]] = None,
        latents: Optional[torch.Tensor] = None,
        denoise: Optional[bool] = None,
        solver_options: Optional[Dict[str, Any]] = None,
        conditioning: Optional[Conditioning] = None,
    ):
        """Sampling with the probability-flow ODE (Song et al. 2021, sec. 4.3), the body of
        `ScoreSdeODEPipeline.__call__` (see there for the arguments), conditioned by `conditioning` (None:
        unconditional): its `condition_sample` and `condition_score` in every drift evaluation or scheduler step
        (only `condition_score` in the final Tweedie step of ``denoise``), its `finalize` on the last sample."""
        # 1. Check the arguments before any work.
        self.check_output_type(output_type)
        self.check_scheduler()
        name, ode_solver = self.resolve_solver(solver, num_inference_steps, rtol, atol, has_grid=timesteps is not None)
        callback_on_step_end_tensor_inputs = self.callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        if callback_on_step_end is not None and is_adaptive(ode_solver):
            raise ValueError(f"callback_on_step_end needs a fixed-step solver (euler, heun, rk4); {name!r} is adaptive.")
        scheduler_steps = self.uses_scheduler_steps(solver, num_inference_steps, timesteps, sampling_eps=sampling_eps, time_spacing=time_spacing, denoise=denoise)
        exponential = requires_sde(ode_solver)
        # Built once: the scheduler path runs its steps, an exponential solver takes its grid and end.
        ode_scheduler = self.ode_scheduler() if exponential else None
        if scheduler_steps:
            eps = None  # the scheduler's own grid
        elif exponential and timesteps is None:
            eps = self.default_exponential_eps(sampling_eps, ode_scheduler)
        else:
            eps = self.resolve_sampling_eps(sampling_eps)
        # An exponential integrator's last step goes to zero noise itself (extrapolated along the ODE, no extra
        # evaluation beyond the one at the last grid time); the others take score_sde's Tweedie step if asked.
        denoise = exponential if denoise is None else bool(denoise)
        to_zero = exponential and denoise
        valid_steps = isinstance(num_inference_steps, int) and not isinstance(num_inference_steps, bool)
        grid_steps = num_inference_steps - 1 if to_zero and valid_steps and num_inference_steps > 1 else num_inference_steps

        # 2. The prior sample x_1 and the grid of times.
        device, dtype = self._execution_device, self._state_dtype()
        self.reset_nfe()  # before the prior: it may ask the model for the data's mean (`data_mean`)
        sample = self.prepare_latents(batch_size, dtype, device, generator, latents)
        if scheduler_steps:  # an ODE scheduler (the pipeline's, or the default one): its grid and steps, in diffusers' loop
            sample = self.scheduler_loop(sample, num_inference_steps, callback_on_step_end, callback_on_step_end_tensor_inputs, ode_scheduler, conditioning)
            return self.finish(sample, output_type, return_dict, conditioning)
        t_grid = self.time_grid(name, ode_solver, grid_steps, eps, time_spacing, timesteps, device, dtype, ode_scheduler)

        # 3. Solve the probability-flow ODE from 1 to eps, with the user's callback after every fixed step.
        callback = None
        if callback_on_step_end is not None:
            model_timesteps = self.scheduler.t_to_timestep(t_grid)

            def callback(i, t_next, x):
                return self.step_end_callback(callback_on_step_end, i, model_timesteps[i], x, callback_on_step_end_tensor_inputs)

        options = {**({"denoise_to_zero": True} if to_zero else {}), **(solver_options or {})}
        sample = self.solve_flow(sample, t_grid, ode_solver, rtol, atol, callback=callback, conditioning=conditioning, **options)

        # 4. Optional denoising: Tweedie's estimate of x_0 from x_eps (score_sde's `denoise=True`).
        if denoise and not exponential:
            t_end = t_grid[-1].expand(sample.shape[0])
            sample = self.scheduler.score_to_denoised(self.model_score(sample, t_end, conditioning), sample, t_end)

        # 5. Output.
        return self.finish(sample, output_type, return_dict, conditioning)

    def run_sampler(self, sampler: str, conditioning: Optional[Conditioning], num_inference_steps: Optional[int] = None, **loop_kwargs):
        """The loop of `sampler` (``"pc"``: `pc_loop`, the reverse SDE; ``"ode"``: `ode_loop`, the probability
        flow) with `conditioning`: how the conditional pipelines sample. `num_inference_steps` None leaves the
        loop's default (1000 PC steps; an adaptive solver for the ODE); `loop_kwargs` are that loop's options."""
        check_sampler(sampler)
        if num_inference_steps is not None:
            loop_kwargs["num_inference_steps"] = num_inference_steps
        loop = self.pc_loop if sampler == "pc" else self.ode_loop
        return loop(conditioning=conditioning, **loop_kwargs)

    # ------------------------------------------------------------------ sampling with an ODE scheduler
    def uses_scheduler_steps(self, solver, num_inference_steps, timesteps, **grid_arguments) -> bool:
        """Whether this call runs the steps of the pipeline's ODE scheduler (`ScoreSdeDPMSolverMultistepScheduler`,
        `ScoreSdeHeunScheduler`): when it has one and no `solver` or `timesteps` is asked for. The grid is then the
        scheduler's, so the grid arguments of `__call__` are an error rather than silently ignored."""
        if solver is not None or timesteps is not None or num_inference_steps is None:
            return False
        given = sorted(k for k, v in grid_arguments.items() if v is not None)
        if not isinstance(self.scheduler, ScoreSdeODESchedulerMixin):
            # A predictor-corrector scheduler: by default the steps of the ODE scheduler built from its config, the
            # very sampler `pipe.scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(...)` runs in diffusers'
            # own loop; grid arguments ask for the solver path instead.
            return not given
        if given:
            raise ValueError(
                f"{given} set the grid of an ODE solver, but the pipeline's {type(self.scheduler).__name__} has its own: "
                f"set it in the scheduler's config (e.g. `{type(self.scheduler).__name__}.from_config(pipe.scheduler.config, "
                f"min_noise_level=..., time_spacing=..., final_sigmas_type=...)`), or pass `solver=` to use an ODE solver."
            )
        return True

    def ode_scheduler(self):
        """The ODE scheduler of a call without `solver`: the pipeline's own if it is one, else
        `ScoreSdeDPMSolverMultistepScheduler` built from the pipeline scheduler's config (its SDE, prediction type and
        timestep map), with that scheduler's defaults. Either way the pipeline tells it what only the pipeline
        knows, where the config leaves them None: ``data_range`` and ``num_levels``, from which the scheduler derives
        the end of its grid, and with ``max_noise_level="data_diameter"`` ``data_dim`` (the entries of one sample);
        so the same scheduler in diffusers' loop is
        ``ScoreSdeDPMSolverMultistepScheduler.from_config(pipe.scheduler.config, data_range=..., num_levels=...)``."""
        data = {"data_range": tuple(self.data_range), "num_levels": self.num_levels}
        if self.scheduler.config.get("max_noise_level") == DATA_DIAMETER:
            data["data_dim"] = math.prod(self.sample_shape(1)[1:])
        if not isinstance(self.scheduler, ScoreSdeODESchedulerMixin):
            return ScoreSdeDPMSolverMultistepScheduler.from_config(self.scheduler.config, **data)
        data = {key: value for key, value in data.items() if self.scheduler.config.get(key) is None}
        return type(self.scheduler).from_config(self.scheduler.config, **data) if data else self.scheduler

    def scheduler_loop(
        self, sample, num_inference_steps, callback_on_step_end=None, callback_on_step_end_tensor_inputs=("sample",), scheduler=None, conditioning=None
    ):
        """diffusers' loop over an ODE scheduler's `timesteps` (the pipeline's by default): one model call and one
        `step` each. A `conditioning` enters through `conditioned_model_output`, as in the predictor-corrector loop
        (with no generator: the ODE draws no noise)."""
        scheduler = self.scheduler if scheduler is None else scheduler
        scheduler.set_timesteps(num_inference_steps, device=sample.device)
        with self.progress_bar(total=len(scheduler.timesteps)) as progress_bar:
            for i, t in enumerate(scheduler.timesteps):
                sample, model_output = self.conditioned_model_output(sample, t, scheduler, None, conditioning)
                sample = scheduler.step(model_output, t, sample).prev_sample
                sample = self.step_end_callback(callback_on_step_end, i, t, sample, callback_on_step_end_tensor_inputs)
                progress_bar.update()
        return sample


class ScoreSdeODEPipeline(ProbabilityFlowMixin, DiffusionPipeline):
    r"""Sampling with the probability-flow ODE, and the encoder / decoder it defines (Song et al. 2021, sec. 4.3,
    eq. 13, and Appendix D).

    The ODE dx/dt = f(x, t) - 1/2 g(t)^2 grad log p_t(x) (eq. 13) has the marginals p_t of the SDE, so solving it
    from x_1 ~ p_1 (the prior) at t = 1 down to t = `sampling_eps` samples the data. It is deterministic and
    invertible: `encode` maps data (t = eps) to latents (t = 1) and `decode` maps latents back, the
    *identifiable* encoding of the paper (the latent of a point is fixed by the data distribution, not by
    training), which makes interpolation in latent space possible. With `num_inference_steps` it runs a
    fixed-step solver (``unipc_3m`` by default, see docs/fast_sampling.md; ``dpm_solver_3m``, ``edm_heun``, ``heun``, ``rk4``, ...) on a grid of times; without, an adaptive solver
    (``dopri5`` by default, with `rtol` and `atol` 1e-5 as in score_sde). Every solver of `ODE_SOLVERS` works.

    Args:
        unet (`ModelMixin`): the score model, called like a diffusers UNet, ``unet(sample, timestep).sample``, with
            the output type the scheduler's ``prediction_type`` says; its config gives the sample shape
            (``sample_size`` and ``in_channels`` for images, ``dim`` for vectors).
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`; it
            provides the SDE, the model-output conversion and the default `sampling_eps`.
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
        num_inference_steps: Optional[int] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[[Any, int, torch.Tensor, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        solver: Optional[str] = None,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        sampling_eps: Optional[float] = None,
        time_spacing: Optional[str] = None,
        timesteps: Optional[Sequence[float]] = None,
        latents: Optional[torch.Tensor] = None,
        denoise: Optional[bool] = None,
        solver_options: Optional[Dict[str, Any]] = None,
    ) -> Union[ScoreSdePipelineOutput, Tuple]:
        r"""Draw `batch_size` samples by solving the probability-flow ODE from t = 1 to `sampling_eps`.

        Args:
            batch_size (`int`, defaults to 1): number of samples.
            num_inference_steps (`int`, *optional*): steps of a fixed-step solver; leave it out for an adaptive one.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): random number generator(s) for
                the prior sample, the only randomness; the same generator gives the same samples.
            output_type (`str`, defaults to ``"pil"``): ``"pil"`` (image-shaped models only), ``"np"`` (scaled
                from `data_range` to [0, 1]) or ``"pt"`` (the raw tensor in the model's data range).
            return_dict (`bool`, defaults to `True`): return a `ScoreSdePipelineOutput` instead of a tuple.
            callback_on_step_end (`Callable` or `PipelineCallback`, *optional*): fixed-step solvers only; called
                after every step as ``callback_on_step_end(pipe, i, t, callback_kwargs)`` (``t`` the model timestep
                the step started from) with the tensors named in `callback_on_step_end_tensor_inputs`; a returned
                dict replaces them.
            callback_on_step_end_tensor_inputs (`List[str]`, defaults to ``["sample"]``): tensors handed to the callback.
            solver (`str`, *optional*): a name in `ODE_SOLVERS`. Without it: with `num_inference_steps` alone, the
                steps of `ode_scheduler()` (`ScoreSdeDPMSolverMultistepScheduler` from the scheduler's config, as in
                diffusers' loop; NFE = `num_inference_steps`); with grid arguments (`sampling_eps`, `time_spacing`,
                `denoise`) `default_fixed_step_solver` (``"unipc_3m"``); with `timesteps` ``"heun"``; with neither
                ``"dopri5"``.
            rtol (`float`, defaults to 1e-5): relative tolerance of an adaptive solver; positive.
            atol (`float`, defaults to 1e-5): absolute tolerance of an adaptive solver; positive.
            sampling_eps (`float`, *optional*): the end time; defaults to the scheduler's ``sampling_eps``, and for
                exponential integrators to the ODE scheduler's `end_time` (its `end_noise_level`).
            time_spacing (`str`, *optional*): grid of a fixed-step solver, a name in `TIME_GRIDS`: ``"uniform"`` in
                t (score_sde), ``"quadratic"``, ``"log_sigma"``, ``"log_snr"``, ``"edm"``. By default the ODE
                scheduler's grid for exponential integrators (``"edm"``, rho = 7), ``"uniform"`` else.
            timesteps (`Sequence[float]`, *optional*): a custom decreasing grid of continuous times for a fixed-step
                solver, instead of `num_inference_steps`.
            latents (`torch.Tensor`, *optional*): standard normal noise of shape (batch_size, *sample shape) to start
                from instead of drawing it; it is scaled by the scheduler's `init_noise_sigma` (use `decode` to start
                from a latent x_1 itself).
            denoise (`bool`, *optional*): finish at zero noise. Exponential integrators (default `True`) take their
                last step to zero noise along the ODE (extrapolating the denoiser; `num_inference_steps` counts
                that evaluation); other solvers (default `False`) take one Tweedie step from `sampling_eps`,
                x_0 = (x + sigma^2 s) / m (one more evaluation; score_sde's ``denoise`` option).
            solver_options (`dict`, *optional*): extra keywords for the solver (e.g. torchdiffeq's ``first_step``).

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` or the tuple ``(images, nfe)``; `nfe` counts every model
            evaluation (fixed-step: steps times the solver's stages; adaptive: as many as the solver needed).

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines import ScoreSdeODEPipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
        >>> pipe = ScoreSdeODEPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> out = pipe(batch_size=8, num_inference_steps=20, solver="rk4", generator=torch.Generator().manual_seed(0), output_type="pt")
        >>> out.images.shape, out.nfe  # 20 steps of 4 stages
        (torch.Size([8, 2]), 80)
        >>> z = pipe.encode(out.images)  # data -> latent at t = 1 (adaptive dopri5)
        >>> bool(torch.allclose(pipe.decode(z), out.images, atol=1e-3))
        True

        ```
        """
        # The loop is the mixin's `ode_loop`, which the conditional pipelines run with their conditioning.
        return self.ode_loop(
            batch_size=batch_size, num_inference_steps=num_inference_steps, generator=generator, output_type=output_type,
            return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, solver=solver, rtol=rtol, atol=atol,
            sampling_eps=sampling_eps, time_spacing=time_spacing, timesteps=timesteps, latents=latents, denoise=denoise,
            solver_options=solver_options,
        )  # fmt: skip

    # ------------------------------------------------------------------ the encoder and decoder
    def _transport(self, sample, to_latent: bool, solver, num_inference_steps, rtol, atol, sampling_eps, time_spacing, solver_options):
        self.check_scheduler()
        self.check_sample(sample, name="latents" if not to_latent else "sample")
        name, ode_solver = self.resolve_solver(solver, num_inference_steps, rtol, atol)
        eps = self.resolve_sampling_eps(sampling_eps)
        device, dtype = self._execution_device, self._state_dtype()
        t_grid = self.time_grid(name, ode_solver, num_inference_steps, eps, time_spacing, None, device, dtype)
        if to_latent:
            t_grid = t_grid.flip(0)
        self.reset_nfe()
        x = sample.to(device=device, dtype=dtype)
        return self.solve_flow(x, t_grid, ode_solver, rtol, atol, **(solver_options or {})).to(sample.dtype)

    @torch.no_grad()
    def encode(
        self,
        sample: torch.Tensor,
        solver: Optional[str] = None,
        num_inference_steps: Optional[int] = None,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        sampling_eps: Optional[float] = None,
        time_spacing: str = "uniform",
        solver_options: Optional[Dict[str, Any]] = None,
    ) -> torch.Tensor:
        """The latent x_1 of data `sample` (taken at t = `sampling_eps`): the probability-flow ODE solved forward
        from eps to 1 (Song et al. 2021, sec. 4.3, "identifiable encoding"). Arguments as in `__call__`; the number
        of model evaluations is in `pipe.nfe` afterwards. Returns a tensor of `sample`'s shape and dtype."""
        return self._transport(sample, True, solver, num_inference_steps, rtol, atol, sampling_eps, time_spacing, solver_options)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        solver: Optional[str] = None,
        num_inference_steps: Optional[int] = None,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        sampling_eps: Optional[float] = None,
        time_spacing: str = "uniform",
        solver_options: Optional[Dict[str, Any]] = None,
    ) -> torch.Tensor:
        """The data point (at t = `sampling_eps`) of latents x_1: the probability-flow ODE solved from 1 to eps, the
        inverse of `encode` (up to the solver's error). `latents` are x_1 itself, not standard normal noise: for
        a prior sample, ``scheduler.prior_mean(pipe.data_mean()) + init_noise_sigma * randn``. Returns a tensor in the model's data range."""
        return self._transport(latents, False, solver, num_inference_steps, rtol, atol, sampling_eps, time_spacing, solver_options)
