"""`VPSDEScheduler`: the variance-preserving SDE (DDPM in continuous time) as a diffusers scheduler."""

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from scoresde_diffusers.sdes import VPSDE

from .scheduling_score_sde_base import ScoreSdePCSchedulerMixin


def ddpm_betas_to_vp(config: dict) -> dict:
    """Map a discrete DDPM linear beta schedule onto the continuous VP SDE (Song et al. 2021, Appendix B):
    beta_min = beta_start N and beta_max = beta_end N, with N = num_train_timesteps.

    Only a ``linear`` schedule is the discretisation of a VP SDE with linear beta(t); other schedules are an error.
    """
    config = dict(config)
    if "beta_start" not in config and "beta_end" not in config:
        return config
    schedule = config.pop("beta_schedule", "linear")
    if schedule != "linear" or config.pop("trained_betas", None) is not None:
        raise ValueError(
            f"Only a linear beta schedule maps onto the VP SDE (beta(t) linear in t); got beta_schedule={schedule!r}"
            f"{' with trained_betas' if schedule == 'linear' else ''}. Allowed: beta_schedule='linear'."
        )
    n = config.setdefault("num_train_timesteps", 1000)
    config["beta_min"] = config.pop("beta_start", 0.0001) * n
    config["beta_max"] = config.pop("beta_end", 0.02) * n
    return config


class VPSDEScheduler(ScoreSdePCSchedulerMixin, SchedulerMixin, ConfigMixin):
    r"""Reverse-time sampler of the VP SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta linear from beta_min to
    beta_max (Song et al. 2021, eq. 11; see `scoresde_diffusers.sdes.VPSDE`).

    `VPSDEScheduler.from_config(ddpm_scheduler.config)` turns a DDPM pipeline into a reverse-SDE sampler: the
    linear beta schedule maps onto beta_min = beta_start N, beta_max = beta_end N, and `prediction_type` is kept.
    By default the model is called with DDPM's integer scale t N - 1 (``timestep_type="discrete"``).

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
    ):
        self._init_sde_scheduler(self.sde_class(beta_min=beta_min, beta_max=beta_max, N=num_train_timesteps))

    @classmethod
    def _convert_foreign_config(cls, config: dict) -> dict:
        return ddpm_betas_to_vp(config)
