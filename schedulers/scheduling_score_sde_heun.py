"""`ScoreSdeHeunScheduler`: EDM's second-order Heun sampler for the probability-flow ODE of any SDE."""

from typing import List, Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from scoresde_diffusers.sampling.exponential_integrators import HeunIntegrator

from .scheduling_score_sde_base import ScoreSdeSchedulerOutput
from .scheduling_score_sde_ode_base import ScoreSdeODESchedulerMixin

#: The two stages of a Heun step: the Euler prediction and the trapezoidal correction.
PREDICT, CORRECT = "predict", "correct"


class ScoreSdeHeunScheduler(ScoreSdeODESchedulerMixin, SchedulerMixin, ConfigMixin):
    r"""Deterministic sampling with the probability-flow ODE by Heun's method in EDM's variables dy/du = (y - D) / u,
    y = x / m, u = sigma / m (Karras et al. 2022, Algorithm 1 without churn), on a tunable grid: by default their
    rho = 7 schedule in u, from t = 1 down to u = 0.002, then an Euler step to zero noise. The same steps as the
    ``edm_heun`` ODE solver (`scoresde_diffusers.sampling.exponential_integrators.HeunIntegrator`).

    Like diffusers' `HeunDiscreteScheduler`, each Heun step is two calls of `step`: `timesteps` lists every interior
    grid time twice, ``[t_0, t_1, t_1, ..., t_{n-1}, t_{n-1}]`` (2n - 1 model evaluations for `num_inference_steps`
    = n grid times with ``final_sigmas_type="zero"``); `state_in_first_order` says which stage is next.

    Args:
        num_train_timesteps (`int`, defaults to 1000): N of the discrete chain (the ``discrete`` timestep map).
        sde_type (`str`, defaults to ``"vp"``): the SDE, a name in `SDES`: ``"vp"``, ``"subvp"``, ``"ve"`` or a plugin's.
        beta_min (`float`, defaults to 0.1): beta(0) of VP and sub-VP.
        beta_max (`float`, defaults to 20.0): beta(1) of VP and sub-VP.
        sigma_min (`float`, defaults to 0.01): sigma(0) of VE.
        sigma_max (`float`, defaults to 50.0): sigma(1) of VE, the prior's standard deviation.
        time_spacing (`str`, defaults to ``"edm"``): the grid, a name in `TIME_GRIDS`.
        min_noise_level (`float`, defaults to 0.002): noise level u = sigma / m at the end of the grid (EDM's
            sigma_min), reached where `sampling_eps` allows.
        max_noise_level (`float` or `str`, *optional*): the first jump of the ``log_snr`` grid, a noise level or
            ``"data_diameter"`` (see `ScoreSdeDPMSolverMultistepScheduler`).
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
        final_sigmas_type (`str`, defaults to ``"zero"``): ``"zero"``: after the grid an Euler step to zero noise,
            which is the model's x_0 prediction; ``"sigma_min"``: stop at the end of the grid.
        sampling_eps (`float`, *optional*): a lower bound for the end time; by default 1e-5 for VE, 1e-3 otherwise.
        prediction_type (`str`, *optional*): by default ``score`` for VE and ``epsilon`` otherwise.
        timestep_type (`str`, *optional*): by default ``sigma`` for VE and ``discrete`` otherwise.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["VESDEScheduler", "VPSDEScheduler", "SubVPSDEScheduler", "ScoreSdeDPMSolverMultistepScheduler"]
    order = 2

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        sde_type: str = "vp",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        time_spacing: str = "edm",
        min_noise_level: float = 0.002,
        max_noise_level: Union[float, str, None] = None,
        data_range: Optional[Tuple[float, float]] = None,
        num_levels: Optional[int] = None,
        data_dim: Optional[int] = None,
        prior_mean_tolerance: Optional[float] = None,
        rho: float = 7.0,
        final_sigmas_type: str = "zero",
        sampling_eps: Optional[float] = None,
        prediction_type: Optional[str] = None,
        timestep_type: Optional[str] = None,
    ):
        self._init_ode_scheduler()
        self._integrator = None
        self._stages: List[Tuple[int, str]] = []

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next `step` is the first (Euler) stage of a Heun step (diffusers' name)."""
        index = self._step_index or 0
        return index >= len(self._stages) or self._stages[index][1] == PREDICT

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: Union[str, torch.device, None] = None,
        sampling_eps: Optional[float] = None,
    ) -> None:
        """Set a grid of `num_inference_steps` times (one more with ``final_sigmas_type="sigma_min"``) and the
        `timesteps` of its 2n - 1 (or 2n) stages.

        Args:
            num_inference_steps (`int`): number of grid times, as in diffusers' `HeunDiscreteScheduler`.
            device (`str` or `torch.device`, *optional*): device of `timesteps` and `sigmas`.
            sampling_eps (`float`, *optional*): lower bound of the end time; defaults to ``config.sampling_eps``.
        """
        n = self._check_num_inference_steps(num_inference_steps)
        to_zero = self.config.final_sigmas_type == "zero"
        t_grid = self._ode_grid(n if to_zero else n + 1, sampling_eps)
        # Grid point j: first the correction that ends there, then the prediction that starts there.
        stages = [(0, PREDICT)]
        for j in range(1, len(t_grid)):
            stages += [(j, CORRECT), (j, PREDICT)]
        self._stages = stages if to_zero else stages[:-1]
        self.num_inference_steps = n
        self._set_grid(t_grid, t_grid[[j for j, _ in self._stages]], device)
        self._integrator = None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[ScoreSdeSchedulerOutput, Tuple]:
        """One stage of a Heun step: the Euler prediction to the next grid time, or the correction of it.

        Args:
            model_output (`torch.Tensor`): the model's output at (`sample`, `timestep`), read as ``prediction_type``.
            timestep (`float` or `torch.Tensor`): the current value of `timesteps`; steps follow `timesteps` in order.
            sample (`torch.Tensor`): the current sample (after a prediction stage, the Euler prediction).
            generator (`torch.Generator`, *optional*): unused (the ODE is deterministic); diffusers' signature.
            return_dict (`bool`, defaults to `True`): return a `ScoreSdeSchedulerOutput` instead of a tuple.

        Returns:
            `ScoreSdeSchedulerOutput` or `tuple` ``(prev_sample, prev_sample_mean, pred_original_sample)``.
        """
        index, x, denoised = self._begin_step(model_output, timestep, sample)
        if index == 0:
            self._integrator = HeunIntegrator(self.sde, self.t_grid, to_zero=self.config.final_sigmas_type == "zero")
        j, stage = self._stages[index]
        if stage == PREDICT:
            prev_sample = self._integrator.predict(j, x, denoised)
        else:
            prev_sample = self._integrator.correct(j - 1, x, denoised)
        return self._end_step(index, prev_sample, denoised, sample, return_dict)


__all__ = ["ScoreSdeHeunScheduler"]
