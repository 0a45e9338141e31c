"""The shared base of the probability-flow ODE schedulers, `ScoreSdeDPMSolverMultistepScheduler` and
`ScoreSdeHeunScheduler`.

Unlike the predictor-corrector schedulers (one class per SDE), an ODE scheduler is one class for every SDE: in the
variables y = x / m(t) and u = sigma(t) / m(t), the probability-flow ODE of every linear SDE is the same equation
dy/du = (y - D) / u (see `scoresde_diffusers.sampling.exponential_integrators`), so the SDE is only a config key,
``sde_type``, a name in `SDES` (a plugin's SDE too). Its grid is a registered time grid (`TIME_GRIDS`) that ends at
a noise level rather than at a time, which fits every SDE with one setting.
"""

import math
from typing import Optional

import torch

from scoresde_diffusers.sampling.time_grids import TIME_GRIDS, t_from_noise_level, time_grid
from scoresde_diffusers.sdes import sde_of_scheduler
from scoresde_diffusers.utils import DEFAULT_DATA_RANGE, DEFAULT_NUM_LEVELS, check_data_range, check_num_levels, compute_dtype

from .scheduling_score_sde_base import ScoreSdeSchedulerMixin, ScoreSdeSchedulerOutput
from .scheduling_vp_sde import ddpm_betas_to_vp, drop_ddpm_schedule_keys, vp_to_ddpm_betas

#: Config keys of the predictor-corrector schedulers that an ODE scheduler does not take: the PC sampler's own, and
#: VE's ``prior_mean`` (the ODE pipeline centres the prior at the centre of its ``data_range``).
PC_ONLY_KEYS = ("snr", "correct_steps", "predictor", "corrector", "final_step", "prior_mean")

#: Where the last step goes: to zero noise ("zero", the sample itself) or to the end of the grid ("sigma_min").
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")

#: ``max_noise_level`` derived from the data: the diameter of the data range, width x sqrt(D) (see
#: `ScoreSdeODESchedulerMixin.first_noise_level`).
DATA_DIAMETER = "data_diameter"


class ScoreSdeODESchedulerMixin(ScoreSdeSchedulerMixin):
    """What the ODE schedulers share: the SDE from ``sde_type``, the conventions of that SDE's models, foreign
    configs of any score-SDE or DDPM scheduler, and the grid ending at ``min_noise_level``.

    A subclass's `__init__` registers its config and calls `self._init_ode_scheduler()`; its `set_timesteps` asks
    `_ode_grid(num_points)` for the continuous times.
    """

    def _init_ode_scheduler(self) -> None:
        config = self.config
        sde_class = self._sde_class_of(config.sde_type)
        try:
            sde = sde_class.from_parameters(
                config.num_train_timesteps,
                beta_min=config.beta_min, beta_max=config.beta_max, sigma_min=config.sigma_min, sigma_max=config.sigma_max,
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(f"sde_type={config.sde_type!r} is not allowed: {err}") from None
        self._init_sde_scheduler(sde)
        if config.final_sigmas_type not in FINAL_SIGMAS_TYPES:
            raise ValueError(f"final_sigmas_type must be one of {list(FINAL_SIGMAS_TYPES)}, got {config.final_sigmas_type!r}.")
        if config.min_noise_level is not None and not config.min_noise_level > 0:
            raise ValueError(f"min_noise_level must be positive (or None: the model's smallest trained noise level), got {config.min_noise_level!r}.")
        if config.data_range is not None:
            check_data_range(config.data_range)
        if config.num_levels is not None:
            check_num_levels(config.num_levels)
        if config.data_dim is not None and (isinstance(config.data_dim, bool) or not isinstance(config.data_dim, int) or config.data_dim < 1):
            raise ValueError(f"data_dim must be an integer >= 1 (the number of entries of one sample), got {config.data_dim!r}.")
        if isinstance(config.max_noise_level, str) and config.max_noise_level != DATA_DIAMETER:
            raise ValueError(f"max_noise_level must be a noise level, {DATA_DIAMETER!r} or None, got {config.max_noise_level!r}.")
        if config.max_noise_level is not None and (config.max_noise_level != DATA_DIAMETER or config.data_dim is not None):
            self.first_noise_level  # checked now where it can be resolved; "data_diameter" without data_dim on use
        tolerance = config.prior_mean_tolerance
        if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0):
            raise ValueError(f"prior_mean_tolerance must be a number >= 0 (nats per entry) or None, got {tolerance!r}.")
        if not config.rho > 0:
            raise ValueError(f"rho must be positive, got {config.rho!r}.")

    def _registered_config_names(self):
        return (("time_spacing", TIME_GRIDS),) + super()._registered_config_names()

    @classmethod
    def _convert_foreign_config(cls, config: dict) -> dict:
        """Read the SDE off another scheduler's config: our PC schedulers and diffusers' `ScoreSdeVeScheduler` by
        class name, a DDPM-style config (``beta_start``, ``beta_end``) as the VP SDE; drop the PC-only keys."""
        config = {k: v for k, v in config.items() if k not in PC_ONLY_KEYS}
        if "sde_type" not in config:
            # The SDE that lists the config's class; a config built in memory has no class name: VE if it has only
            # VE's parameters, else a DDPM-style (VP) one.
            is_ve = "sigma_max" in config and not {"beta_min", "beta_start"} & set(config)
            config["sde_type"] = sde_of_scheduler(config.get("_class_name")) or ("ve" if is_ve else "vp")
        return ddpm_betas_to_vp(config) if config["sde_type"] != "ve" else config

    def _derived_config(self) -> dict:
        """With the VP SDE, DDPM's betas, as `VPSDEScheduler` writes them (diffusers' schedulers read them)."""
        config = self.config
        return vp_to_ddpm_betas(config.beta_min, config.beta_max, config.num_train_timesteps) if config.sde_type == "vp" else {}

    @classmethod
    def _drop_derived_config(cls, config: dict, overrides: dict) -> dict:
        return drop_ddpm_schedule_keys(config, overrides)

    # ------------------------------------------------------------------ the grid
    @property
    def data_resolution(self) -> float:
        """The spacing of the data's levels, (high - low) / (num_levels - 1): 2 / 255 for 8-bit images in [-1, 1]
        (``data_range`` and ``num_levels`` when None)."""
        low, high = self.config.data_range if self.config.data_range is not None else DEFAULT_DATA_RANGE
        levels = self.config.num_levels if self.config.num_levels is not None else DEFAULT_NUM_LEVELS
        return (float(high) - float(low)) / (levels - 1)

    @property
    def trained_noise_level(self) -> float:
        """The model's smallest trained noise level: u = sigma / m at `resolve_sampling_eps()`, the first time the
        model was trained on (1/N for ``discrete`` models): sigma_min for VE, about 0.01 for VP, 1e-4 for sub-VP."""
        return self._noise_level_at(self.resolve_sampling_eps())

    def _noise_level_at(self, t: float) -> float:
        return float(torch.exp(-0.5 * self.sde.log_snr(torch.tensor(t, dtype=torch.float64))))

    @property
    def end_noise_level(self) -> float:
        """The noise level u = sigma / m where the grid ends: ``min_noise_level``, or by default the larger of the
        model's smallest trained noise level (below it the model knows nothing) and the spacing of the data's levels
        (`data_resolution`: noise below one level of quantised data is below what a sample can show, and the
        last step then reaches zero noise)."""
        if self.config.min_noise_level is not None:
            return float(self.config.min_noise_level)
        return max(self.trained_noise_level, self.data_resolution)

    def _ode_grid(self, num_points: int, sampling_eps: Optional[float] = None) -> torch.Tensor:
        """`num_points` decreasing times (float64) from T down to the time where the noise level u = sigma / m is
        `end_noise_level` (but not below `sampling_eps`), spaced by the ``time_spacing`` grid."""
        config = self.config
        t_end = self.end_time(sampling_eps)
        if not t_end < self.sde.T:
            raise ValueError(f"The end noise level {self.end_noise_level:g} (min_noise_level={config.min_noise_level}) is above the prior's noise level: the grid would be empty.")
        if num_points == 1:
            return torch.tensor([self.sde.T], dtype=torch.float64)
        return time_grid(config.time_spacing, self.sde, num_points - 1, t_min=t_end, **self.grid_options())

    @property
    def first_noise_level(self) -> Optional[float]:
        """The noise level u that the first step of the ``log_snr`` grid jumps to (None: no jump): ``max_noise_level``,
        or with ``max_noise_level="data_diameter"`` the diameter of the data range, (high - low) sqrt(``data_dim``).
        Above it no two points of the data are told apart: the noisy data are one Gaussian blob around the data's
        mean, the denoiser is nearly constant and an exponential integrator crosses that range in one step (Lu et al.
        2022, sec. 3.1); on an exact model this spends the grid where the modes form (docs/fast_sampling.md)."""
        config = self.config
        if config.max_noise_level is None:
            return None
        level, derived = config.max_noise_level, config.max_noise_level == DATA_DIAMETER
        if derived:
            if config.data_dim is None:
                raise ValueError(
                    f"max_noise_level={DATA_DIAMETER!r} needs the number of entries of one sample: set data_dim in the "
                    f"scheduler's config (ScoreSdeODEPipeline fills it from the model), or give max_noise_level as a number."
                )
            low, high = config.data_range if config.data_range is not None else DEFAULT_DATA_RANGE
            level = (float(high) - float(low)) * math.sqrt(config.data_dim)
        if not level > self.end_noise_level:
            shown = f"{DATA_DIAMETER!r} = {level:g}" if derived else repr(level)
            raise ValueError(f"max_noise_level must exceed min_noise_level ({self.end_noise_level:g}), got {shown}.")
        return level

    def grid_options(self) -> dict:
        """The keywords of this scheduler's ``time_spacing`` grid function: ``max_noise`` (``log_snr``, when
        ``max_noise_level`` is set: `first_noise_level`), ``rho`` (``edm``)."""
        config = self.config
        if config.time_spacing == "log_snr" and config.max_noise_level is not None:
            return {"max_noise": self.first_noise_level}
        return {"rho": config.rho} if config.time_spacing == "edm" else {}

    def end_time(self, sampling_eps: Optional[float] = None) -> float:
        """The time where the grid ends: where the noise level reaches `end_noise_level`, but not below
        `sampling_eps` (the scheduler's by default, and the first time the model was trained on)."""
        t_end, u_end = self.resolve_sampling_eps(sampling_eps), self.end_noise_level
        return t_from_noise_level(self.sde, u_end) if self._noise_level_at(t_end) < u_end else t_end

    # ------------------------------------------------------------------ the two halves of every `step`
    def _begin_step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor):
        """Check the inputs; return the position of this step, the sample in the compute dtype and the model's x_0
        prediction at it, which is all an exponential integrator or Heun step needs from the model."""
        self._check_model_output(model_output, sample)
        index = self.index_for_timestep(timestep)
        if index != 0 and getattr(self, "_integrator", None) is None:
            raise ValueError("An ODE scheduler's steps start at `timesteps[0]` and follow `timesteps` in order.")
        dtype = compute_dtype(sample.dtype)
        x = sample.to(dtype)
        return index, x, self.get_denoised(model_output.to(dtype), x, self._time_at(index, x, dtype))

    def _end_step(self, index: int, prev_sample: torch.Tensor, denoised: torch.Tensor, sample: torch.Tensor, return_dict: bool):
        """Advance the step counter and package the output (the ODE has no noise: prev_sample_mean = prev_sample)."""
        self._step_index = index + 1
        prev_sample = prev_sample.to(sample.dtype)
        output = (prev_sample, prev_sample, denoised.to(sample.dtype))
        return ScoreSdeSchedulerOutput(*output) if return_dict else output


__all__ = ["FINAL_SIGMAS_TYPES", "ScoreSdeODESchedulerMixin"]
