"""`VPSDEScheduler`: the variance-preserving SDE (DDPM in continuous time) as a diffusers scheduler."""

import warnings
from typing import Mapping, Optional

import diffusers
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from scoresde_diffusers.sdes import VPSDE
from scoresde_diffusers.utils import describe

from .scheduling_score_sde_base import ScoreSdePCSchedulerMixin

#: The keys of diffusers' DDPM-family schedulers (`DDPMScheduler`, `DDIMScheduler`, `DPMSolverMultistepScheduler`,
#: ...) that a VP config carries, derived from beta_min, beta_max and N, so those schedulers load it.
DDPM_SCHEDULE_KEYS = ("beta_start", "beta_end", "beta_schedule", "clip_sample", "thresholding")

# DDPM-family options that change the noise schedule or the model's output: no VP SDE has them (an error).
_SCHEDULE_OPTIONS = {
    "beta_schedule": lambda value: value != "linear",
    "trained_betas": lambda value: value is not None,
    "rescale_betas_zero_snr": bool,
    "variance_type": lambda value: value in ("learned", "learned_range"),
}
_ALLOWED_SCHEDULE = (
    "beta_schedule='linear', trained_betas=None, rescale_betas_zero_snr=False, variance_type not 'learned'/'learned_range'"
)
# DDPM-family options of the sampler that post-process the x_0 prediction: the VP sampler does not (a warning).
_SAMPLER_OPTIONS = {
    "clip_sample": "x_0 predictions are not clipped to [-clip_sample_range, clip_sample_range]",
    "thresholding": "x_0 predictions are not dynamically thresholded",
}


def vp_to_ddpm_betas(beta_min: float, beta_max: float, num_train_timesteps: int) -> dict:
    """The DDPM-family config of the VP SDE: the linear schedule beta_start = beta_min / N, beta_end = beta_max / N
    (Song et al. 2021, Appendix B: DDPM's beta_i = beta(i / N) / N), with no clipping or thresholding of x_0, which
    the VP sampler does not do either."""
    n = int(num_train_timesteps)
    return {"beta_start": beta_min / n, "beta_end": beta_max / n, "beta_schedule": "linear", "clip_sample": False, "thresholding": False}


def _check_ddpm_options(config: Mapping) -> None:
    """An error for DDPM options that change the schedule, a warning for those of DDPM's sampler; both named."""
    # `describe`: trained_betas is a list of N numbers, named by its length rather than printed
    bad = [f"{key}={describe(config[key])}" for key, is_bad in _SCHEDULE_OPTIONS.items() if key in config and is_bad(config[key])]
    if bad:
        raise ValueError(
            f"{', '.join(bad)} cannot be mapped onto the VP SDE, whose beta(t) is linear in t (beta_min = beta_start N, "
            f"beta_max = beta_end N) and whose model predicts no variance. Allowed: {_ALLOWED_SCHEDULE}."
        )
    ignored = [f"{key}=True ({why})" for key, why in _SAMPLER_OPTIONS.items() if config.get(key)]
    if ignored:
        warnings.warn(f"The VP SDE sampler does not honour the DDPM options {'; '.join(ignored)}.", UserWarning, stacklevel=5)


def _is_diffusers_class(name) -> bool:
    return isinstance(name, str) and hasattr(diffusers, name)


def ddpm_betas_to_vp(config: dict) -> dict:
    """Map a discrete DDPM linear beta schedule onto the continuous VP SDE (Song et al. 2021, Appendix B):
    beta_min = beta_start N and beta_max = beta_end N, with N = num_train_timesteps.

    Only a ``linear`` schedule is the discretisation of a VP SDE with linear beta(t): other schedules, trained betas,
    zero-SNR rescaling and learned variances are an error; ``clip_sample``/``thresholding`` are a warning (the VP
    sampler does not post-process x_0). A config of ours, with beta_min/beta_max, is returned as is.
    """
    config = dict(config)
    if "beta_start" not in config and "beta_end" not in config:
        return config
    if _is_diffusers_class(config.get("_class_name")):
        # A diffusers scheduler's betas are its own, even where it kept our beta_min/beta_max from an earlier swap.
        config.pop("beta_min", None)
        config.pop("beta_max", None)
    elif "beta_min" in config or "beta_max" in config:
        return config
    _check_ddpm_options(config)
    for key in ("beta_schedule", "trained_betas", "rescale_betas_zero_snr", *_SAMPLER_OPTIONS):
        config.pop(key, None)
    n = config.setdefault("num_train_timesteps", 1000)
    config["beta_min"] = config.pop("beta_start", 0.0001) * n
    config["beta_max"] = config.pop("beta_end", 0.02) * n
    return config


def drop_ddpm_schedule_keys(config: dict, overrides: Optional[Mapping] = None) -> dict:
    """Remove the DDPM keys a VP config carries (`vp_to_ddpm_betas`): they are recomputed from beta_min, beta_max
    and N when the scheduler is built. Unless `overrides` (from_config's keyword arguments) change those, the keys
    must agree with them: a hand-edited ``beta_end`` that beta_max does not follow is an error, not ignored."""
    config = dict(config)
    derived = {key: config.pop(key) for key in DDPM_SCHEDULE_KEYS if key in config}
    _check_ddpm_options({key: value for key, value in derived.items() if key not in ("beta_start", "beta_end")})
    primary = ("beta_min", "beta_max", "num_train_timesteps")
    if any(key in (overrides or {}) for key in primary) or not all(key in config for key in primary):
        return config
    expected = vp_to_ddpm_betas(*(config[key] for key in primary))
    for key, source in (("beta_start", "beta_min"), ("beta_end", "beta_max")):
        if key in derived and abs(derived[key] - expected[key]) > 1e-9 * max(1.0, abs(expected[key])):
            raise ValueError(
                f"The config's {key}={derived[key]!r} disagrees with beta_min={config['beta_min']!r}, "
                f"beta_max={config['beta_max']!r} and num_train_timesteps={config['num_train_timesteps']!r} "
                f"({key} = {source} / num_train_timesteps = {expected[key]!r}); set beta_min/beta_max, which define "
                f"the VP SDE, and remove {key}."
            )
    return config


class VPSDEScheduler(ScoreSdePCSchedulerMixin, SchedulerMixin, ConfigMixin):
    r"""Reverse-time sampler of the VP SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta linear from beta_min to
    beta_max (Song et al. 2021, eq. 11; see `scoresde_diffusers.sdes.VPSDE`).

    Swaps work both ways. `VPSDEScheduler.from_config(ddpm_scheduler.config)` turns a DDPM pipeline into a
    reverse-SDE sampler: the linear beta schedule maps onto beta_min = beta_start N, beta_max = beta_end N, and
    `prediction_type` is kept; DDPM options the VP SDE cannot express (a non-linear ``beta_schedule``,
    ``trained_betas``, ``rescale_betas_zero_snr``, learned variances) are an error, ``clip_sample``/``thresholding``
    a warning. The other way, the config carries ``beta_start``, ``beta_end``, ``beta_schedule="linear"``,
    ``clip_sample=False`` and ``thresholding=False``, so `DDPMScheduler`, `DDIMScheduler` or
    `DPMSolverMultistepScheduler` ``.from_config(vp.config)`` get the same betas. By default the model is called with
    DDPM's integer scale t N - 1 (``timestep_type="discrete"``).

    Args:
        num_train_timesteps (`int`, defaults to 1000): N, the number of steps of the DDPM chain.
        beta_min (`float`, defaults to 0.1): beta(0).
        beta_max (`float`, defaults to 20.0): beta(1).
        sampling_eps (`float`, defaults to 1e-3): the last time of the sampling grid (score_sde's VP value).
        snr (`float`, defaults to 0.16): signal-to-noise ratio of the Langevin corrector (Algorithm 5).
        correct_steps (`int`, defaults to 1): corrector steps per predictor step in a PC loop.
        predictor (`str`, defaults to ``"euler_maruyama"``): a name in `PREDICTORS`.
        corrector (`str`, defaults to ``"none"``): a name in `CORRECTORS`.
        prediction_type (`str`, defaults to ``"epsilon"``): ``score``, ``epsilon``, ``sample`` or ``v_prediction``.
        timestep_type (`str`, defaults to ``"discrete"``): how continuous t is passed to the model.
        final_step (`str`, defaults to ``"score_sde"``): a name in `FINAL_STEPS`, the rule of the last step from
            eps to noise level 0 (``score_sde``: the predictor's noise-free step, score_sde's ``denoise=True``).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    #: The SDE this scheduler samples; `SubVPSDEScheduler` changes only this.
    sde_class = VPSDE

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        sampling_eps: float = 1e-3,
        snr: float = 0.16,
        correct_steps: int = 1,
        predictor: str = "euler_maruyama",
        corrector: str = "none",
        prediction_type: str = "epsilon",
        timestep_type: str = "discrete",
        final_step: str = "score_sde",
    ):
        self._init_sde_scheduler(self.sde_class(beta_min=beta_min, beta_max=beta_max, N=num_train_timesteps))

    def _derived_config(self) -> dict:
        return vp_to_ddpm_betas(self.config.beta_min, self.config.beta_max, self.config.num_train_timesteps)

    @classmethod
    def _convert_foreign_config(cls, config: dict) -> dict:
        return ddpm_betas_to_vp(config)

    @classmethod
    def _drop_derived_config(cls, config: dict, overrides: dict) -> dict:
        return drop_ddpm_schedule_keys(config, overrides)
