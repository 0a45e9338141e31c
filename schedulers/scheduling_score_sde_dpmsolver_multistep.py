"""`ScoreSdeDPMSolverMultistepScheduler`: DPM-Solver++(kM) and UniPC for the probability-flow ODE of any SDE."""

from typing import Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from scoresde_diffusers.sampling.exponential_integrators import MultistepExponentialIntegrator

from .scheduling_score_sde_base import ScoreSdeSchedulerOutput
from .scheduling_score_sde_ode_base import ScoreSdeODESchedulerMixin


#: Settings for models whose denoiser is smooth in the noise level, such as analytic scores
#: (`GaussianMixtureScoreModel`): UniPC (order 3 with the UniC corrector, Zhao et al. 2023) on the logSNR-uniform grid
#: (Lu et al. 2022, sec. 3.3). ``ScoreSdeDPMSolverMultistepScheduler.from_config(config, **SMOOTH_MODEL_SETTINGS)``.
#: On exact Gaussian mixtures VP and sub-VP members reach 0.01 nats/dim at 20 NFE where the defaults need about 50
#: (docs/benchmarks.md, the mixture family); on the trained digits UNet they solve the ODE more accurately but its
#: samples score worse than the defaults' at 10 and 20 NFE (docs/fast_sampling.md, "The order"). Order 3 needs
#: this grid: on the rho = 7 grid it is worse than order 2 on exact mixtures at 20 NFE. For exact models take
#: `EXACT_MODEL_SETTINGS`.
SMOOTH_MODEL_SETTINGS = {"time_spacing": "log_snr", "solver_order": 3, "use_corrector": True}

#: Settings for exact models (analytic scores such as `GaussianMixtureScoreModel`): `SMOOTH_MODEL_SETTINGS`, and two
#: things that only pay where the model is exact (docs/fast_sampling.md, "Exact models"): the first step jumps from the
#: prior to the data range's diameter, width x sqrt(D), above which the denoiser is nearly constant, so the steps are
#: spent where the modes form (``max_noise_level="data_diameter"``; on a trained network one step over that range
#: carries its high-noise error into every sample), and the prior's mean is always the model's estimate of the data's
#: mean (``prior_mean_tolerance=0``; for VE with sigma_max of the data's size a prior centred on the data range shifts
#: the samples).
EXACT_MODEL_SETTINGS = {**SMOOTH_MODEL_SETTINGS, "max_noise_level": "data_diameter", "prior_mean_tolerance": 0.0}


class ScoreSdeDPMSolverMultistepScheduler(ScoreSdeODESchedulerMixin, SchedulerMixin, ConfigMixin):
    r"""Deterministic sampling with the probability-flow ODE (Song et al. 2021, eq. 13) by DPM-Solver++(kM) (Lu et
    al. 2022b, in data-prediction form, orders 1-3) with the UniC corrector of UniPC (Zhao et al. 2023), for the VE,
    VP and sub-VP SDEs alike (see `scoresde_diffusers.sampling.exponential_integrators` and docs/fast_sampling.md).

    The same steps as the ODE solvers ``dpm_solver_{1,2m,3m}`` / ``unipc_{2m,3m}`` of `ScoreSdeODEPipeline`, one
    model evaluation per `step`, in diffusers' loop::

        scheduler.set_timesteps(20)
        sample = torch.randn(shape) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            sample = scheduler.step(unet(sample, t).sample, t, sample).prev_sample

    The defaults are derived, not tuned on test data (docs/fast_sampling.md): the grid runs from the prior at t = 1
    to the larger of the model's smallest trained noise level and the spacing of the data's levels (``data_range``,
    ``num_levels``), on Karras et al.'s (2022) rho = 7 schedule, with DPM-Solver++(2M) steps and a last step to zero
    noise. Order 2 without the corrector is diffusers' choice too. Where the trained digits UNet and exact mixtures
    disagree the trained network decided (docs/benchmarks.md, "Few-step samplers on a trained network"); on exact
    models `SMOOTH_MODEL_SETTINGS` (``time_spacing="log_snr"``, `solver_order=3, use_corrector=True`: UniPC on the
    logSNR grid) are more accurate. It loads
    any score-SDE or DDPM config: ``from_config(VPSDEScheduler().config)``, or ``DDPMPipeline``'s scheduler config,
    whose linear betas become the VP SDE.

    Args:
        num_train_timesteps (`int`, defaults to 1000): N of the discrete chain (the ``discrete`` timestep map).
        sde_type (`str`, defaults to ``"vp"``): the SDE, a name in `SDES`: ``"vp"``, ``"subvp"``, ``"ve"`` or a plugin's.
        beta_min (`float`, defaults to 0.1): beta(0) of VP and sub-VP.
        beta_max (`float`, defaults to 20.0): beta(1) of VP and sub-VP.
        sigma_min (`float`, defaults to 0.01): sigma(0) of VE.
        sigma_max (`float`, defaults to 50.0): sigma(1) of VE, the prior's standard deviation.
        solver_order (`int`, defaults to 2): k, the number of model outputs each step combines (1 = DDIM).
        use_corrector (`bool`, defaults to `False`): UniC, which reuses the next model output to redo the step with
            one order more; `False` gives plain DPM-Solver++(kM).
        time_spacing (`str`, defaults to ``"edm"``): the grid, a name in `TIME_GRIDS`: ``edm`` (Karras et al. 2022,
            eq. 5, rho = 7: more steps at high noise, where a trained network's x_0 prediction is least accurate),
            ``log_snr`` (uniform in log-SNR, Lu et al. 2022: better on exact models), ``uniform``, ``quadratic``,
            ``log_sigma``.
        min_noise_level (`float`, *optional*): noise level u = sigma / m at the end of the grid. By default the
            larger of the model's smallest trained noise level (u at `sampling_eps`, raised to the first time the
            model was trained on, 1/N for ``discrete`` models: sigma_min for VE, about 0.01 for VP, 1e-4 for
            sub-VP) and the spacing of the data's levels (2 / 255 for 8-bit images in [-1, 1]).
        max_noise_level (`float` or `str`, *optional*): with ``log_snr``, the first step jumps from t = 1 to this
            noise level, or with ``"data_diameter"`` to the data range's diameter, (high - low) sqrt(``data_dim``)
            (`first_noise_level`); no jump by default: on a trained network one step over a wide noise range carries
            the network's high-noise error into the sample (docs/fast_sampling.md).
        data_range (`(float, float)`, *optional*): the range of the data, (low, high); None means [-1, 1],
            diffusers' images.
        num_levels (`int`, *optional*): the number of values one data entry takes, evenly spaced over
            ``data_range``; None means 256 (8-bit images). Their spacing is the lowest default end of the grid.
            `ScoreSdeODEPipeline` fills both from its own ``data_range`` and ``num_levels`` when they are None.
        data_dim (`int`, *optional*): the number of entries of one sample (C x H x W for images), for
            ``max_noise_level="data_diameter"``; `ScoreSdeODEPipeline` fills it from the model when None.
        prior_mean_tolerance (`float`, *optional*): nats per entry that centring the prior on the data range may
            cost before the pipelines ask the model for the data's mean (`data_mean_matters`); None means
            `PRIOR_MEAN_TOLERANCE` (0.01), 0 always asks (for models whose mean estimate is exact).
        rho (`float`, defaults to 7.0): exponent of the ``edm`` grid.
        final_sigmas_type (`str`, defaults to ``"zero"``): ``"zero"``: the last step goes from the end of the grid
            to zero noise, extrapolating the model's x_0 predictions (the final sample is noise-free);
            ``"sigma_min"``: the last step ends at the end of the grid.
        lower_order_final (`bool`, defaults to `False`): with ``final_sigmas_type="zero"``, the last step takes
            the model's x_0 prediction at the end of the grid as the sample (first order, diffusers' choice) instead
            of extrapolating the last `solver_order` predictions to zero noise.
        sampling_eps (`float`, *optional*): a lower bound for the end time (and the end time of pipelines that
            integrate to a time, e.g. likelihoods); by default 1e-5 for VE, 1e-3 otherwise.
        prediction_type (`str`, *optional*): ``score``, ``epsilon``, ``sample`` or ``v_prediction``; by default
            ``score`` for VE and ``epsilon`` otherwise.
        timestep_type (`str`, *optional*): how continuous t is passed to the model; by default ``sigma`` for VE
            and ``discrete`` otherwise.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["VESDEScheduler", "VPSDEScheduler", "SubVPSDEScheduler", "ScoreSdeHeunScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        sde_type: str = "vp",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        solver_order: int = 2,
        use_corrector: bool = False,
        time_spacing: str = "edm",
        min_noise_level: Optional[float] = None,
        max_noise_level: Union[float, str, None] = None,
        data_range: Optional[Tuple[float, float]] = None,
        num_levels: Optional[int] = None,
        data_dim: Optional[int] = None,
        prior_mean_tolerance: Optional[float] = None,
        rho: float = 7.0,
        final_sigmas_type: str = "zero",
        lower_order_final: bool = False,
        sampling_eps: Optional[float] = None,
        prediction_type: Optional[str] = None,
        timestep_type: Optional[str] = None,
    ):
        if isinstance(solver_order, bool) or solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}.")
        self._init_ode_scheduler()
        self._integrator = None

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: Union[str, torch.device, None] = None,
        sampling_eps: Optional[float] = None,
    ) -> None:
        """Set `num_inference_steps` steps, one model evaluation each: with ``final_sigmas_type="zero"`` a grid of
        `num_inference_steps` times and a last step from its end to zero noise, else a grid of one more time.

        Args:
            num_inference_steps (`int`): number of steps and model evaluations.
            device (`str` or `torch.device`, *optional*): device of `timesteps` and `sigmas`.
            sampling_eps (`float`, *optional*): lower bound of the end time; defaults to ``config.sampling_eps``.
        """
        n = self._check_num_inference_steps(num_inference_steps)
        to_zero = self.config.final_sigmas_type == "zero"
        t_grid = self._ode_grid(n if to_zero else n + 1, sampling_eps)
        self.num_inference_steps = n
        self._set_grid(t_grid, t_grid[:n], device)
        self._integrator = None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[ScoreSdeSchedulerOutput, Tuple]:
        """One multistep step from `timestep` to the next time of the grid (after the last, to zero noise).

        Args:
            model_output (`torch.Tensor`): the model's output at (`sample`, `timestep`), read as ``prediction_type``.
            timestep (`float` or `torch.Tensor`): the current value of `timesteps`; steps follow `timesteps` in order.
            sample (`torch.Tensor`): the current sample x_t; an edited sample (inpainting) keeps its edit.
            generator (`torch.Generator`, *optional*): unused (the ODE is deterministic); diffusers' signature.
            return_dict (`bool`, defaults to `True`): return a `ScoreSdeSchedulerOutput` instead of a tuple.

        Returns:
            `ScoreSdeSchedulerOutput` or `tuple` ``(prev_sample, prev_sample_mean, pred_original_sample)``;
            prev_sample_mean equals prev_sample (no noise), pred_original_sample is the model's x_0 at `sample`.
        """
        index, x, denoised = self._begin_step(model_output, timestep, sample)
        if index == 0:
            config = self.config
            final_order = 1 if config.lower_order_final else None
            self._integrator = MultistepExponentialIntegrator(self.sde, self.t_grid, order=config.solver_order, corrector=config.use_corrector, final_order=final_order)
        return self._end_step(index, self._integrator.step(index, x, denoised), denoised, sample, return_dict)


__all__ = ["ScoreSdeDPMSolverMultistepScheduler"]
