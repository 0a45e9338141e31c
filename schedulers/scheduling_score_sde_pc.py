"""`ScoreSdePCScheduler`: the predictor-corrector sampler for any registered SDE, named in the config."""

import inspect
from typing import Optional

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from scoresde_diffusers.registry import SDES

from .scheduling_score_sde_base import ScoreSdePCSchedulerMixin


class ScoreSdePCScheduler(ScoreSdePCSchedulerMixin, SchedulerMixin, ConfigMixin):
    r"""Reverse-time predictor-corrector sampler (Song et al. 2021, section 4.2, Algorithms 2-3) of the SDE registered
    as ``sde_type``: a plugin's SDE needs no scheduler of its own.

    `VESDEScheduler`, `VPSDEScheduler` and `SubVPSDEScheduler` are this sampler with their SDE's parameters as
    top-level config keys (the keys diffusers' schedulers read); here the SDE's parameters are the ``sde_config``
    dict, and what its models predict and how they are called default to the SDE class's conventions
    (``default_prediction_type``, ``default_timestep_type``, ``default_sampling_eps``).

    Args:
        sde_type (`str`, defaults to ``"vp"``): a name in `SDES`, built-in or a plugin's.
        sde_config (`dict`, *optional*): keyword arguments of that SDE's constructor (its defaults otherwise).
        num_train_timesteps (`int`, defaults to 1000): N of the ``discrete``/``scaled`` timestep maps (and of the
            SDE, where it has one).
        snr (`float`, defaults to 0.16): signal-to-noise ratio of the Langevin corrector (Algorithm 4).
        sampling_eps (`float`, *optional*): last time of the grid; the SDE's default.
        correct_steps (`int`, defaults to 1): corrector steps per predictor step.
        predictor (`str`, defaults to ``"reverse_diffusion"``): a name in `PREDICTORS`.
        corrector (`str`, defaults to ``"langevin"``): a name in `CORRECTORS`.
        prediction_type (`str`, *optional*): what the model outputs; the SDE's default.
        timestep_type (`str`, *optional*): how t is passed to the model; the SDE's default.
        final_step (`str`, defaults to ``"score_sde"``): a name in `FINAL_STEPS`, the rule of the last step from
            eps to noise level 0 (``score_sde``: the predictor's noise-free step, score_sde's ``denoise=True``).
    """

    @register_to_config
    def __init__(
        self,
        sde_type: str = "vp",
        sde_config: Optional[dict] = None,
        num_train_timesteps: int = 1000,
        snr: float = 0.16,
        sampling_eps: Optional[float] = None,
        correct_steps: int = 1,
        predictor: str = "reverse_diffusion",
        corrector: str = "langevin",
        prediction_type: Optional[str] = None,
        timestep_type: Optional[str] = None,
        final_step: str = "score_sde",
    ):
        sde_class = self._sde_class_of(sde_type)
        self._init_sde_scheduler(build_sde(sde_class, sde_config, num_train_timesteps))


def build_sde(sde_class, sde_config: Optional[dict], num_train_timesteps: int):
    """`sde_class` built from `sde_config`; a key its constructor does not take is an error naming the ones it does."""
    accepted = [name for name in inspect.signature(sde_class).parameters if name != "N"]
    unknown = sorted(set(sde_config or {}) - set(accepted))
    if unknown:
        raise ValueError(f"sde_config has {unknown}, which the {sde_class.name!r} SDE does not take; it takes {accepted}.")
    return sde_class.from_parameters(num_train_timesteps, **(sde_config or {}))


def pc_scheduler_class(sde_type: str) -> type:
    """The predictor-corrector scheduler class for the SDE registered as `sde_type`: the first scheduler class its
    SDE lists in ``scheduler_class_names`` that samples exactly that SDE (`VESDEScheduler` for ``"ve"``, ...),
    else `ScoreSdePCScheduler`, which takes any SDE by name."""
    from scoresde_diffusers import schedulers

    sde_class = SDES.get(sde_type)
    for name in sde_class.scheduler_class_names:
        candidate = getattr(schedulers, name, None)
        if candidate is not None and getattr(candidate, "sde_class", None) is sde_class:
            return candidate
    return ScoreSdePCScheduler
