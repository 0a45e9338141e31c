"""The shared bases of the score-SDE schedulers.

- `ScoreSdeSchedulerMixin`: what every score-SDE scheduler does: the SDE, the map between continuous time and
  model timesteps, the reading of model outputs (score, epsilon, x_0, v), locating a timestep on the grid,
  `add_noise` and `get_velocity`, loading foreign configs.
- `ScoreSdePCSchedulerMixin`: the predictor-corrector sampler of the reverse SDE on score_sde's uniform grid
  (`step` = one predictor step, `step_correct` = one corrector step); `VESDEScheduler`, `VPSDEScheduler` and
  `SubVPSDEScheduler` differ only in the SDE they build from their config and in their defaults.

Everything the schedulers share is here, once (a deliberate break from diffusers' `# Copied from`:
one implementation to fix, not several to keep in step). The maths lives in `scoresde_diffusers.sdes`, the update rules in `scoresde_diffusers.sampling`;
a scheduler only owns the grid and the bookkeeping.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from scoresde_diffusers.likelihood import ODELikelihood, ode_log_likelihood
from scoresde_diffusers.registry import CORRECTORS, FINAL_STEPS, PREDICTORS, SDES, TIMESTEP_MAPS
from scoresde_diffusers.sampling.adaptive_sde import get_sde_solver
from scoresde_diffusers.sampling.exponential_integrators import requires_sde
from scoresde_diffusers.sampling.ode_solvers import DEFAULT_ATOL, DEFAULT_RTOL, ODESolution, get_ode_solver, ode_time_grid
from scoresde_diffusers.sampling.parametrization import PREDICTION_TYPES, from_score, input_scale, to_score
from scoresde_diffusers.sampling.time_grids import t_from_noise_level, time_grid
from scoresde_diffusers.sampling.timesteps import model_min_time, t_to_timestep, timestep_to_t
from scoresde_diffusers.sdes import SDE
from scoresde_diffusers.utils import append_dims, check_finite, check_num_steps, compute_dtype, describe


@dataclass
class ScoreSdeSchedulerOutput(BaseOutput):
    """Output of a score-SDE scheduler's `step` and `step_correct`.

    Args:
        prev_sample (`torch.Tensor`): the sample after the step, to feed to the next step. On the last predictor
            step of the grid it is the final sample at noise level 0 by the ``final_step`` rule (by default the
            noise-free mean, score_sde's ``denoise=True``).
        prev_sample_mean (`torch.Tensor`): the step without its noise term (score_sde's `x_mean`).
        pred_original_sample (`torch.Tensor`, *optional*): Tweedie's estimate of x_0 from the input sample,
            (x + sigma^2 s) / m, for previews and callbacks (predictor steps only).
    """

    prev_sample: torch.Tensor
    prev_sample_mean: torch.Tensor
    pred_original_sample: Optional[torch.Tensor] = None


#: Nats per data entry that the prior's mean may cost before the pipelines ask the model for the data's mean: the
#: 0.01 nats per entry within which a sampler's log-density counts as exact, so that the range's centre alone can
#: never put a sampler outside it (see `ScoreSdeSchedulerMixin.data_mean_matters`; a tenth of it also fired on the
#: digits UNet trained at score_sde's rule, where the model's mean made ODE samples slightly worse).
PRIOR_MEAN_TOLERANCE = 1e-2


def _as_tensor(value, device=None) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value, device=device)


class ScoreSdeSchedulerMixin:
    """What every score-SDE scheduler does. A subclass builds `self.sde` in its `__init__` and calls
    `self._init_sde_scheduler(sde)`; it may override `_convert_foreign_config` to load other schedulers' configs,
    and it implements `set_timesteps` (filling the grid with `_set_grid`) and `step`.

    The grid: `t_grid` holds continuous times in float64 on the CPU, `timesteps` the values the model is called
    with at each call of `step` (the grid times mapped through ``timestep_type``, so diffusers' loops pass them to
    the model unchanged), and `timestep_times` the continuous time of each entry of `timesteps`.
    """

    order = 1

    # ------------------------------------------------------------------ construction and config
    def _init_sde_scheduler(self, sde: SDE) -> None:
        config = self.config
        # An unknown name is an error that names the config argument and lists the registered names.
        for key, registry in self._registered_config_names():
            try:
                registry.get(getattr(config, key))
            except ValueError as err:
                raise ValueError(f"{key}={getattr(config, key)!r} is not allowed: {err}") from None
        if int(config.num_train_timesteps) < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {config.num_train_timesteps}.")
        self._check_sampling_eps(config.sampling_eps)
        # diffusers writes `_class_name` only into saved files; kept in memory too, a config handed to another
        # class's `from_config` still says where it came from (VP and sub-VP configs have the same keys).
        self.register_to_config(_class_name=type(self).__name__)
        self.register_to_config(**self._derived_config())
        self.sde = sde
        self.num_inference_steps = None
        self.timesteps = None
        self.timestep_times = None
        self.sigmas = None
        self.t_grid = None
        self._step_index = None
        self._device_times = {}

    def _sde_class_of(self, sde_type: str):
        """The SDE class registered as `sde_type`. The config's unset ``prediction_type``, ``timestep_type`` and
        ``sampling_eps`` take that class's conventions and are written back, so a saved config says what was used."""
        try:
            sde_class = SDES.get(sde_type)
        except ValueError as err:
            raise ValueError(f"sde_type={sde_type!r} is not allowed: {err}") from None
        conventions = {
            "prediction_type": sde_class.default_prediction_type,
            "timestep_type": sde_class.default_timestep_type,
            "sampling_eps": sde_class.default_sampling_eps,
        }
        self.register_to_config(**{k: v for k, v in conventions.items() if self.config[k] is None})
        return sde_class

    def _registered_config_names(self):
        """(config key, registry) pairs whose values must be registered names."""
        return (("prediction_type", PREDICTION_TYPES), ("timestep_type", TIMESTEP_MAPS))

    def _derived_config(self) -> dict:
        """Hook: config entries computed from the others, written into the config for other libraries' schedulers
        to read (VP: DDPM's ``beta_start``/``beta_end``, so swaps work both ways); never read back by this class."""
        return {}

    @classmethod
    def _convert_foreign_config(cls, config: dict) -> dict:
        """Hook: rewrite the config of another scheduler class into this one's keys (VP maps DDPM betas)."""
        return config

    @classmethod
    def _drop_derived_config(cls, config: dict, overrides: dict) -> dict:
        """Hook: remove (after checking them) the `_derived_config` entries from a config about to be loaded, so
        they are recomputed from the keys they derive from, also when `overrides` change those."""
        return config

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """Instantiate from a config, also one of another scheduler (e.g. ``pipe.scheduler.config``).

        A config built in memory lists its default-valued keys in ``_use_default_values`` and diffusers' loader
        drops those keys. For another class's config that would replace *its* defaults (DDPM's beta_start,
        `ScoreSdeVeScheduler`'s sigma_max = 1348) by ours, so for foreign configs every key is kept.
        """
        if config is not None:
            config = dict(config.config if hasattr(config, "config") and not isinstance(config, dict) else config)
            if cls._is_foreign_config(config):
                config.pop("_use_default_values", None)
                config = cls._convert_foreign_config(config)
                cls._check_sde_type(config)
            config = cls._drop_derived_config(config, kwargs)
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def _check_sde_type(cls, config: dict) -> None:
        """A scheduler of one SDE (``sde_class``) refuses the config of an ODE scheduler of another SDE, rather than
        silently dropping its ``sde_type`` and SDE parameters."""
        sde_type, sde_class = config.get("sde_type"), getattr(cls, "sde_class", None)
        if sde_type is not None and sde_class is not None and sde_type != sde_class.name:
            raise ValueError(
                f"The config is of the {sde_type!r} SDE, but {cls.__name__} samples the {sde_class.name!r} SDE; use the "
                f"scheduler of that SDE (VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler) or an ODE scheduler."
            )

    @classmethod
    def _is_foreign_config(cls, config: dict) -> bool:
        """Whether `config` belongs to another class (or is a partial dict) rather than being a full config of `cls`.

        Configs read from a file carry ``_class_name``; configs of schedulers built in memory
        (``DDPMScheduler().config``) do not, so those count as this class's only if their keys are exactly this
        class's `__init__` arguments. (`ScoreSdeVeScheduler`'s keys are a subset of `VESDEScheduler`'s, so a key
        subset test would not do.)
        """
        name = config.get("_class_name")
        if name is not None:
            return name != cls.__name__
        own_keys = set(cls._get_init_keys(cls)) - {"self", "kwargs"}
        return {key for key in config if not key.startswith("_")} != own_keys

    @staticmethod
    def _check_sampling_eps(eps: float) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"sampling_eps must lie in (0, 1), got {eps!r}.")

    @property
    def model_min_time(self) -> float:
        """The first continuous time at which the model is defined under ``timestep_type``: 1/N for ``discrete``
        (the model's step 0), 0 for the continuous maps. No grid this scheduler builds goes below it."""
        return model_min_time(self.sde, self.config.timestep_type, self.config.num_train_timesteps)

    def resolve_sampling_eps(self, sampling_eps: Optional[float] = None, default: Optional[float] = None) -> float:
        """The end time of a grid (or start time of a likelihood): `sampling_eps` if given, which must lie in
        [`model_min_time`, 1); otherwise `default` (``config.sampling_eps`` if None) raised to `model_min_time`,
        so that the model is never called at a time it was not trained on."""
        t_min = self.model_min_time
        if sampling_eps is None:
            eps = max(float(self.config.sampling_eps if default is None else default), t_min)
            self._check_sampling_eps(eps)
            return eps
        self._check_sampling_eps(sampling_eps)
        if sampling_eps < t_min * (1 - 1e-9):
            raise ValueError(
                f"sampling_eps={sampling_eps:g} is below t = {t_min:g}, the first time the model was trained on "
                f"(timestep_type={self.config.timestep_type!r}, num_train_timesteps={self.config.num_train_timesteps}: "
                f"model timestep {float(self.t_to_timestep(torch.tensor(t_min, dtype=torch.float64))):g}); "
                f"use sampling_eps >= {t_min:g}."
            )
        return float(sampling_eps)

    # ------------------------------------------------------------------ time
    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the prior p_1 (sigma_max for VE, 1 for VP and sub-VP)."""
        return self.sde.prior_std

    def prior_mean(self, data_mean: Union[float, torch.Tensor] = 0.0) -> Union[float, torch.Tensor]:
        """Mean of the prior p_1 for data of mean `data_mean` (a number or a tensor that broadcasts over samples):
        m(1) data_mean (the data's mean for VE, about 0.007 times it for VP and sub-VP; see `SDE.prior_mean`).
        Pipelines pass their `data_mean` (the centre of ``data_range``, or the model's estimate where
        `data_mean_matters`), so a prior sample is ``prior_mean + init_noise_sigma * randn``; in diffusers' loops it
        is 0. A ``prior_mean`` in the config (`VESDEScheduler`'s) overrides it."""
        pinned = self.config.get("prior_mean")
        return self.sde.prior_mean(data_mean) if pinned is None else float(pinned)

    def data_mean_matters(self, data_range: Tuple[float, float]) -> bool:
        """Whether the prior depends on the data's mean enough for a pipeline to ask the model for it (one
        evaluation on one sample) instead of taking the centre of `data_range`: False when the config pins
        ``prior_mean``, or when a mean anywhere in the range would cost the prior at most `PRIOR_MEAN_TOLERANCE`
        nats per entry (`SDE.prior_mean_mismatch` of half the range's width), or the config's
        ``prior_mean_tolerance`` where it has one (0: always, for models whose mean estimate is exact). So by default
        never for VP and sub-VP (m(1) ~ 0.007), and for VE while sigma_max is below ~7 half-widths of the data range
        (3.5 for data in [0, 1], 7 for [-1, 1]; not score_sde's 50)."""
        if self.config.get("prior_mean") is not None:
            return False
        tolerance = self.config.get("prior_mean_tolerance")
        low, high = data_range
        return self.sde.prior_mean_mismatch(0.5 * (high - low)) > (PRIOR_MEAN_TOLERANCE if tolerance is None else tolerance)

    def prior_log_prob(self, sample: torch.Tensor, data_mean: Union[float, torch.Tensor] = 0.0) -> torch.Tensor:
        """log p_1(`sample`) per sample (B,), for the prior of `prior_mean`(data_mean) and `init_noise_sigma`."""
        return self.sde.prior_logp(sample - self.prior_mean(data_mean))

    def t_to_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The model timestep for continuous time `t` (the `timestep_type` map)."""
        return t_to_timestep(self.sde, _as_tensor(t), self.config.timestep_type, self.config.num_train_timesteps)

    def timestep_to_t(self, timestep: torch.Tensor) -> torch.Tensor:
        """Continuous time t for a model `timestep` (the inverse `timestep_type` map)."""
        timestep = _as_tensor(timestep)
        if not timestep.is_floating_point():
            timestep = timestep.double()
        return timestep_to_t(self.sde, timestep, self.config.timestep_type, self.config.num_train_timesteps)

    @staticmethod
    def _check_num_inference_steps(num_inference_steps) -> int:
        return check_num_steps(num_inference_steps)

    def _set_grid(self, t_grid: torch.Tensor, timestep_times: torch.Tensor, device=None) -> None:
        """Store a new grid: `t_grid` and `timestep_times` (the time of each call of `step`), float64 on the CPU."""
        # Kept in float64 on the CPU: index lookups and time differences near eps stay exact.
        self.t_grid = t_grid
        self.timestep_times = timestep_times
        self._timesteps_f64 = self.t_to_timestep(timestep_times)
        self.timesteps = self._timesteps_f64.to(device=device, dtype=torch.float32)
        self.sigmas = self.sde.marginal_std(timestep_times).to(device=device, dtype=torch.float32)
        self._step_index = 0
        self._device_times = {}

    def _times_on(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The float64 grid attribute `name` on `device` in `dtype`, copied once per grid rather than per step."""
        key = (name, device, dtype)
        if key not in self._device_times:
            self._device_times[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._device_times[key]

    def _time_at(self, index: int, sample: torch.Tensor, dtype: torch.dtype, name: str = "timestep_times") -> torch.Tensor:
        """The time of step `index` as a batch (B,) on `sample`'s device, without a host-to-device copy."""
        return self._times_on(name, sample.device, dtype)[index].expand(sample.shape[0])

    def _is_entry(self, timestep, index: int) -> bool:
        """Whether `timestep` is (a broadcast of) the tensor ``self.timesteps[index]`` itself: diffusers' loops pass
        the entries of `timesteps`, and recognising them by address avoids reading a device value back per step."""
        return (
            isinstance(timestep, torch.Tensor)
            and 0 <= index < len(self.timesteps)
            and timestep.dtype == self.timesteps.dtype
            and timestep.device == self.timesteps.device
            and all(stride == 0 for stride in timestep.stride())
            and timestep.data_ptr() == self.timesteps.data_ptr() + index * self.timesteps.element_size()
        )

    def index_for_timestep(self, timestep) -> int:
        """Position of `timestep` (one of `timesteps`, a scalar or a batch of equal values) in `timesteps`.

        The position the next `step` expects is tried first (diffusers' ``step_index``), so repeated values, as the
        two stages of a Heun step, resolve in order; any other value on the grid is found by search."""
        if self.timestep_times is None:
            raise ValueError("The time grid is not set: call `set_timesteps(num_inference_steps)` first.")
        expected = self._step_index
        if self._is_entry(timestep, expected):
            return expected
        value = _as_tensor(timestep).detach().to("cpu", torch.float64).flatten()
        if not torch.isfinite(value).all():
            raise ValueError(f"`timestep` must be finite, got {describe(timestep)}; pass the values of `scheduler.timesteps`.")
        if value.numel() == 0 or not torch.all(value == value[0]):
            raise ValueError(f"`timestep` must be a scalar or a batch of equal values, got {describe(timestep)}.")
        value = value[0]
        distance = (self._timesteps_f64 - value).abs()
        tolerance = 1e-5 * max(1.0, abs(float(value)))
        if expected is not None and expected < len(distance) and distance[expected] <= tolerance:
            return expected
        index = int(distance.argmin())
        if distance[index] <= tolerance:
            return index
        t = float(self.timestep_to_t(value))
        low, high = float(self.timestep_times.min()), self.sde.T
        if not low - 1e-9 <= t <= high + 1e-9:
            raise ValueError(
                f"timestep {float(value):.6g} is continuous time t={t:.6g}, outside [eps, 1] = [{low:g}, {high:g}]; "
                f"allowed timesteps run from {float(self._timesteps_f64.min()):.6g} to {float(self._timesteps_f64.max()):.6g}."
            )
        raise ValueError(
            f"timestep {float(value):.6g} is not on the grid set by `set_timesteps({self.num_inference_steps})`: "
            f"pass the values of `scheduler.timesteps`."
        )

    # ------------------------------------------------------------------ model output
    def _check_model_output(self, model_output: torch.Tensor, sample: torch.Tensor) -> None:
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape {tuple(sample.shape)}; "
                f"they must be equal."
            )
        # Blame the input when it is the input that is not finite: a NaN latent is the caller's, not the model's.
        check_finite(sample, "sample", "check the latents, images or data passed in (and earlier steps' outputs).")
        check_finite(
            model_output,
            "model_output",
            "the score model returned them for a finite sample: check its weights, its dtype (float16 overflows) "
            "and that the timesteps are inside the range it was trained on.",
        )

    def get_score(self, model_output: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The score grad log p_t(sample) that `model_output` stands for under `prediction_type`."""
        return to_score(self.sde, model_output, sample, t, self.config.prediction_type)

    def get_denoised(self, model_output: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Tweedie's E[x_0 | x_t = sample] = (x + sigma^2 s) / m that `model_output` stands for (the x_0 prediction)."""
        return self.score_to_denoised(self.get_score(model_output, sample, t), sample, t)

    # ------------------------------------------------------------------ the sampling maths: the pipelines' one door
    # Pipelines reach the SDE only through these methods (never `scheduler.sde`), so the scheduler is the one place
    # that knows which SDE, prediction type and solver conventions are in use. Each is a delegation to
    # `scoresde_diffusers.sdes` or `scoresde_diffusers.sampling`, with the same floating-point operations.
    @property
    def T(self) -> float:
        """The end time T of the forward SDE (1 for the SDEs of Song et al. 2021), where the prior p_T is."""
        return self.sde.T

    @property
    def sde_name(self) -> str:
        """The registered name of the scheduler's SDE (``"ve"``, ``"vp"``, ``"subvp"`` or a plugin's), to match
        against the SDE a model was trained under."""
        return self.sde.name

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t), the standard deviation of the perturbation kernel p_0t(x_t | x_0) = N(m(t) x_0, sigma(t)^2 I)
        (Song et al. 2021, eqs. 29, 33 and Appendix B)."""
        return self.sde.marginal_std(_as_tensor(t))

    def marginal_prob(self, sample: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(m(t) x_0, sigma(t)): the mean and standard deviation of the perturbation kernel p_0t(x_t | x_0 = sample)
        (Song et al. 2021, Appendix B; score_sde's `marginal_prob`)."""
        return self.sde.marginal_prob(sample, t)

    def t_from_noise_level(self, noise_level: float) -> float:
        """The time t at which the noise level u(t) = sigma(t) / m(t) equals `noise_level` (EDM's sigma, Karras et
        al. 2022); 0 when `noise_level` is at most u(0). See `scoresde_diffusers.sampling.time_grids.t_from_noise_level`."""
        return t_from_noise_level(self.sde, noise_level)

    def time_grid(
        self,
        name: str,
        num_steps: int,
        t_min: float,
        t_max: Optional[float] = None,
        device=None,
        dtype: torch.dtype = torch.float64,
        **options,
    ) -> torch.Tensor:
        """The registered time grid `name` (a name in `TIME_GRIDS`: ``uniform`` as score_sde, ``quadratic``,
        ``log_sigma``, ``log_snr`` as DPM-Solver, ``edm`` as Karras et al. 2022) of this scheduler's SDE:
        ``num_steps + 1`` decreasing continuous times from `t_max` (default `T`) to `t_min`; `options` are the grid
        function's (e.g. ``max_noise`` of ``log_snr``, ``rho`` of ``edm``). See
        `scoresde_diffusers.sampling.time_grids.time_grid`."""
        return time_grid(name, self.sde, num_steps, t_min=t_min, t_max=t_max, device=device, dtype=dtype, **options)

    def fixed_step_grid(
        self, num_steps: int, eps: float, spacing: str = "uniform", device=None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """The grid of a fixed-step ODE solver: ``num_steps + 1`` decreasing times from `T` to `eps`, spaced by the
        registered grid `spacing` (``uniform`` in t as score_sde's), with the step count and `eps` checked; see
        `scoresde_diffusers.sampling.ode_solvers.ode_time_grid`."""
        return ode_time_grid(self.sde, num_steps, eps, spacing, device=device, dtype=dtype)

    def score_to_denoised(self, score: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Tweedie's formula E[x_0 | x_t = sample] = (x + sigma(t)^2 s) / m(t) for the score `score` (Efron 2011;
        the ``denoise`` step of Song et al. 2021, Appendix G)."""
        return from_score(self.sde, score, sample, t, "sample")

    def score_to_model_output(self, score: torch.Tensor, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model output that stands for the score `score` under ``config.prediction_type``: the inverse of
        `get_score` (epsilon = -sigma s, x_0 = (x + sigma^2 s) / m, v, ...), e.g. to hand a conditioned score to
        `step` (Song et al. 2021, eq. 14)."""
        return from_score(self.sde, score, sample, t, self.config.prediction_type)

    def probability_flow_drift(self, sample: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """dx/dt of the probability-flow ODE, f(x, t) - 1/2 g(t)^2 s (Song et al. 2021, eq. 13), for the score `score`
        of `sample` at times `t` (B,)."""
        return self.sde.reverse_drift(sample, t, score, probability_flow=True)

    def solve_probability_flow(
        self,
        func: Callable,
        sample: torch.Tensor,
        t_grid: torch.Tensor,
        solver: Union[str, Callable] = "dopri5",
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        callback: Optional[Callable] = None,
        denoiser: Optional[Callable] = None,
        **options,
    ) -> ODESolution:
        """Integrate the probability-flow ODE (Song et al. 2021, eq. 13) from ``t_grid[0]`` to ``t_grid[-1]`` (either
        direction) with `solver`, a name in `ODE_SOLVERS` or a solver function. `func` is the vector field
        ``func(t, x)`` (`probability_flow_drift` of the model's score). A solver that steps in the SDE's own
        coordinates (`requires_sde`: DPM-Solver++, UniPC, EDM's Heun; Lu et al. 2022, Karras et al. 2022) gets this
        scheduler's SDE and `denoiser` ``denoiser(t, x) -> x_0``; `options` (e.g. ``denoise_to_zero``) go to the
        solver. Returns `ODESolution` ``(y, nfe)``."""
        function = get_ode_solver(solver) if isinstance(solver, str) else solver
        if requires_sde(function):
            options = {"sde": self.sde, "denoiser": denoiser, **options}
        return function(func, sample, t_grid, rtol=rtol, atol=atol, callback=callback, **options)

    def probability_flow_log_likelihood(
        self, drift: Callable, sample: torch.Tensor, t_min: float, data_mean: Union[float, torch.Tensor] = 0.0, **options
    ) -> ODELikelihood:
        """log p_{t_min}(sample) by the instantaneous change of variables along the probability-flow ODE from
        `t_min` to `T` (Song et al. 2021, eq. 39, Appendix D.2), with this scheduler's prior p_T
        (`prior_log_prob` for data of mean `data_mean`). `drift` is ``drift(x, t)``, the probability-flow drift;
        `options` are those of `scoresde_diffusers.likelihood.ode_log_likelihood` (divergence, solver, ...)."""
        return ode_log_likelihood(drift, lambda z: self.prior_log_prob(z, data_mean), sample, eps=t_min, T=self.T, **options)

    def solve_reverse_sde(
        self, score_fn: Callable, sample: torch.Tensor, t_end: float, solver: Union[str, Callable] = "ggf", **options
    ):
        """Sample the reverse-time SDE (Song et al. 2021, eq. 6) from `sample` at `T` to `t_end` with an
        adaptive-step solver, a name in `SDE_SOLVERS` (``"ggf"``: Jolicoeur-Martineau et al. 2021) or a solver
        function; `score_fn` is ``score_fn(x, t)``, `options` go to the solver (rtol, atol, generator, ...)."""
        function = get_sde_solver(solver) if isinstance(solver, str) else solver
        return function(self.sde, score_fn, sample, t_start=self.T, t_end=t_end, **options)

    def scale_model_input(self, sample: torch.Tensor, timestep: Union[float, torch.Tensor, None] = None) -> torch.Tensor:
        """The model's input at `timestep` (diffusers interface): x_t as it is, except for prediction types that
        normalise it (``edm``: c_in x_t / m, Karras et al. 2022), which need the `timestep`."""
        if PREDICTION_TYPES.get(self.config.prediction_type).input_scale is None:
            return sample
        if timestep is None:
            raise ValueError(f"prediction_type={self.config.prediction_type!r} scales the model input by the noise level: pass the timestep.")
        t = self._train_times(_as_tensor(timestep, device=sample.device), sample)
        dtype = compute_dtype(sample.dtype)
        return (sample.to(dtype) * input_scale(self.sde, sample.to(dtype), t.to(dtype), self.config.prediction_type)).to(sample.dtype)

    # ------------------------------------------------------------------ training helpers
    def _train_times(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # Python numbers and lists are accepted like tensors (the error messages below read .min() and .shape).
        timesteps = _as_tensor(timesteps, device=like.device)
        t = self.timestep_to_t(timesteps).to(like.device, compute_dtype(like.dtype))
        t = t.reshape(-1).expand(like.shape[0]) if t.numel() == 1 else t.reshape(-1)
        if t.shape[0] != like.shape[0]:
            raise ValueError(f"timesteps must be a scalar or have one value per sample ({like.shape[0]}), got shape {tuple(timesteps.shape)}.")
        if not torch.all((t >= -1e-6) & (t <= self.sde.T + 1e-6)):
            low, high = self.t_to_timestep(torch.tensor(0.0, dtype=torch.float64)), self.t_to_timestep(torch.tensor(self.sde.T, dtype=torch.float64))
            raise ValueError(
                f"timesteps must map to continuous times in [0, 1], i.e. lie in [{float(low):g}, {float(high):g}] "
                f"for timestep_type={self.config.timestep_type!r}; got values from {float(timesteps.min()):g} to {float(timesteps.max()):g}."
            )
        return t

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward-perturb data: x_t = m(t) x_0 + sigma(t) noise (the perturbation kernel of the SDE)."""
        if noise.shape != original_samples.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, original_samples {tuple(original_samples.shape)}; they must be equal.")
        t = self._train_times(timesteps, original_samples)
        mean, std = self.sde.marginal_prob(original_samples.to(t.dtype), t)
        return (mean + append_dims(std, noise.ndim) * noise.to(t.dtype)).to(original_samples.dtype)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target m(t) noise - sigma(t) x_0 (diffusers' `get_velocity`)."""
        t = self._train_times(timesteps, sample)
        m = append_dims(self.sde.marginal_mean_coeff(t), sample.ndim)
        std = append_dims(self.sde.marginal_std(t), sample.ndim)
        return (m * noise.to(t.dtype) - std * sample.to(t.dtype)).to(sample.dtype)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class ScoreSdePCSchedulerMixin(ScoreSdeSchedulerMixin):
    """The predictor-corrector sampler of the reverse SDE (Song et al. 2021, Algorithms 2-3): a subclass builds its
    SDE and calls `self._init_sde_scheduler(sde)`, as for `ScoreSdeSchedulerMixin`.

    The grid is score_sde's 1 = t_0 > t_1 > ... > t_{n-1} = `sampling_eps` (``linspace(1, eps, n)``, as diffusers'
    `ScoreSdeVeScheduler`); predictor step i (`step`, the ``config.predictor`` rule) moves from t_i to t_{i+1}, the
    last one from eps to noise level 0 by the ``config.final_step`` rule (`FINAL_STEPS`; by default score_sde's
    noise-free predictor step); `step_correct` takes a ``config.corrector`` step at the current time.
    """

    def _init_sde_scheduler(self, sde: SDE) -> None:
        super()._init_sde_scheduler(sde)
        if self.config.snr <= 0:
            raise ValueError(f"snr must be positive, got {self.config.snr}.")
        if int(self.config.correct_steps) < 0:
            raise ValueError(f"correct_steps must be a non-negative integer, got {self.config.correct_steps}.")

    def _registered_config_names(self):
        return (("predictor", PREDICTORS), ("corrector", CORRECTORS), ("final_step", FINAL_STEPS)) + super()._registered_config_names()

    # ------------------------------------------------------------------ time
    def set_timesteps(
        self,
        num_inference_steps: int,
        device: Union[str, torch.device, None] = None,
        sampling_eps: Optional[float] = None,
    ) -> None:
        """Set the sampling grid: `num_inference_steps` times from 1 down to `sampling_eps`.

        Args:
            num_inference_steps (`int`): number of predictor steps (one score evaluation each, without corrector).
            device (`str` or `torch.device`, *optional*): device of `timesteps` and `sigmas`.
            sampling_eps (`float`, *optional*): last time of the grid; defaults to ``config.sampling_eps``.
        """
        self.num_inference_steps = self._check_num_inference_steps(num_inference_steps)
        eps = self.resolve_sampling_eps(sampling_eps)
        self.sampling_eps = eps
        t_grid = torch.linspace(self.sde.T, eps, self.num_inference_steps, dtype=torch.float64)
        self._t_next = torch.cat([t_grid[1:], t_grid.new_zeros(1)])
        self._set_grid(t_grid, t_grid, device)

    def _noise(self, sample: torch.Tensor, generator, dtype: torch.dtype) -> torch.Tensor:
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=dtype)

    # ------------------------------------------------------------------ steps
    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[float, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[ScoreSdeSchedulerOutput, Tuple]:
        """One predictor step from `timestep` to the next time of the grid (the ``config.predictor`` rule).

        Args:
            model_output (`torch.Tensor`): the model's output at (`sample`, `timestep`), read as
                ``config.prediction_type``.
            timestep (`float` or `torch.Tensor`): the current value of `timesteps`.
            sample (`torch.Tensor`): the current sample x_t.
            generator (`torch.Generator`, *optional*): random number generator for the noise.
            return_dict (`bool`, defaults to `True`): return a `ScoreSdeSchedulerOutput` instead of a tuple.

        Returns:
            `ScoreSdeSchedulerOutput` or `tuple` ``(prev_sample, prev_sample_mean, pred_original_sample)``.
        """
        self._check_model_output(model_output, sample)
        index = self.index_for_timestep(timestep)
        dtype = compute_dtype(sample.dtype)
        x = sample.to(dtype)
        t, t_next = self._time_at(index, x, dtype), self._time_at(index, x, dtype, "_t_next")
        score = self.get_score(model_output.to(dtype), x, t)
        noise = self._noise(x, generator, dtype)
        predictor = PREDICTORS.get(self.config.predictor)
        if index == self.num_inference_steps - 1:
            # The last step goes from eps to noise level 0, by the ``config.final_step`` rule (`FINAL_STEPS`).
            # VE's time 0 still carries sigma(0) = sigma_min of noise (its marginal is the data smoothed by
            # sigma_min); every final step removes that too (SMLD's chain ends at noise level 0). score_sde's is the
            # predictor's noise-free step plus sigma(0)^2 s: about Tweedie's mean.
            x_next, x_mean = FINAL_STEPS.get(self.config.final_step)(self.sde, x, t, score, noise, predictor)
        else:
            x_next, x_mean = predictor(self.sde, x, t, t_next, score, noise)
        self._step_index = index + 1
        x0 = from_score(self.sde, score, x, t, "sample")
        output = (x_next.to(sample.dtype), x_mean.to(sample.dtype), x0.to(sample.dtype))
        return ScoreSdeSchedulerOutput(*output) if return_dict else output

    def step_correct(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        timestep: Union[float, torch.Tensor, None] = None,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[ScoreSdeSchedulerOutput, Tuple]:
        """One corrector step at the current time (the ``config.corrector`` rule with ``config.snr``).

        The argument order is that of diffusers' `ScoreSdeVeScheduler.step_correct`. Without `timestep`, the
        step runs at the time of the next predictor step, which is where a PC loop corrects.

        Args:
            model_output (`torch.Tensor`): the model's output at (`sample`, current timestep).
            sample (`torch.Tensor`): the current sample.
            timestep (`float` or `torch.Tensor`, *optional*): a value of `timesteps`.
            generator (`torch.Generator`, *optional*): random number generator for the noise.
            return_dict (`bool`, defaults to `True`): return a `ScoreSdeSchedulerOutput` instead of a tuple.
        """
        self._check_model_output(model_output, sample)
        if timestep is not None:
            index = self.index_for_timestep(timestep)
        elif self._step_index is None:
            raise ValueError("The time grid is not set: call `set_timesteps(num_inference_steps)` first.")
        elif self._step_index >= self.num_inference_steps:
            raise ValueError("Every step of the grid has been taken; call `set_timesteps` to sample again.")
        else:
            index = self._step_index
        dtype = compute_dtype(sample.dtype)
        x = sample.to(dtype)
        t = self._time_at(index, x, dtype)
        score = self.get_score(model_output.to(dtype), x, t)
        noise = self._noise(x, generator, dtype)
        x_next, x_mean = CORRECTORS.get(self.config.corrector)(self.sde, x, t, score, noise, self.config.snr)
        output = (x_next.to(sample.dtype), x_mean.to(sample.dtype))
        return ScoreSdeSchedulerOutput(*output) if return_dict else output

    def step_pred(self, model_output, timestep, sample, generator=None, return_dict=True):
        """Alias of `step`, the name diffusers' `ScoreSdeVePipeline` calls."""
        return self.step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

