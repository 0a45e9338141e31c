"""`VESDEScheduler`: the variance-exploding SDE (SMLD / NCSN) as a diffusers scheduler."""

from typing import Optional

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from scoresde_diffusers.sdes import VESDE

from .scheduling_score_sde_base import ScoreSdePCSchedulerMixin


class VESDEScheduler(ScoreSdePCSchedulerMixin, SchedulerMixin, ConfigMixin):
    r"""Reverse-time sampler of the VE SDE dx = sqrt(d sigma^2 / dt) dw, sigma(t) = sigma_min (sigma_max/sigma_min)^t
    (Song et al. 2021, eq. 30; see `scoresde_diffusers.sdes.VESDE`).

    Its config keys are those of diffusers' `ScoreSdeVeScheduler` (plus the ones below), so existing configs load
    with `from_config` and it runs inside diffusers' `ScoreSdeVePipeline` (`set_sigmas`, `sigmas`, `step_pred`,
    `step_correct`). The model is called with sigma(t) by default, as NCSN++ and `ScoreSdeVePipeline` expect.

    Args:
        num_train_timesteps (`int`, defaults to 1000): N, the number of noise scales of the discrete SMLD chain;
            used by the ``discrete``/``scaled`` timestep maps.
        snr (`float`, defaults to 0.16): signal-to-noise ratio of the Langevin corrector step size (Algorithm 4).
        sigma_min (`float`, defaults to 0.01): sigma(0).
        sigma_max (`float`, defaults to 50.0): sigma(1), the prior's standard deviation.
        sampling_eps (`float`, defaults to 1e-5): the last time of the sampling grid (score_sde's VE value).
        correct_steps (`int`, defaults to 1): corrector steps per predictor step in a PC loop.
        predictor (`str`, defaults to ``"reverse_diffusion"``): a name in `PREDICTORS`.
        corrector (`str`, defaults to ``"langevin"``): a name in `CORRECTORS`.
        prediction_type (`str`, defaults to ``"score"``): what the model outputs: ``score``, ``epsilon``,
            ``sample`` or ``v_prediction``.
        timestep_type (`str`, defaults to ``"sigma"``): how continuous t is passed to the model (see
            `scoresde_diffusers.sampling.timesteps`).
        prior_mean (`float`, *optional*): the mean of the prior N(prior_mean, sigma_max^2 I). By default the
            pipeline's estimate of the data's mean, the centre of its ``data_range``, which the VE SDE keeps at
            t = 1 (see `prior_mean`); 0.0 is score_sde's and diffusers' prior, which configs of diffusers'
            `ScoreSdeVeScheduler` get, so that their folders sample exactly as `ScoreSdeVePipeline` does.
        final_step (`str`, defaults to ``"score_sde"``): a name in `FINAL_STEPS`, the rule of the last step from
            eps to noise level 0 (``score_sde``: the predictor's noise-free step, score_sde's ``denoise=True``).
    """

    _compatibles = ["ScoreSdeVeScheduler"]
    #: The SDE this scheduler samples.
    sde_class = VESDE

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        snr: float = 0.16,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        sampling_eps: float = 1e-5,
        correct_steps: int = 1,
        predictor: str = "reverse_diffusion",
        corrector: str = "langevin",
        prediction_type: str = "score",
        timestep_type: str = "sigma",
        prior_mean: Optional[float] = None,
        final_step: str = "score_sde",
    ):
        self._init_sde_scheduler(self.sde_class(sigma_min=sigma_min, sigma_max=sigma_max))

    @classmethod
    def _convert_foreign_config(cls, config: dict) -> dict:
        """diffusers' `ScoreSdeVeScheduler` samples from N(0, sigma_max^2 I): keep that prior for its configs."""
        if config.get("_class_name") == "ScoreSdeVeScheduler":
            config = {"prior_mean": 0.0, **config}
        return config

    def set_sigmas(
        self,
        num_inference_steps: int,
        sigma_min: Optional[float] = None,
        sigma_max: Optional[float] = None,
        sampling_eps: Optional[float] = None,
    ) -> None:
        """Set the grid and its noise levels `sigmas` (diffusers' `ScoreSdeVeScheduler.set_sigmas` interface).

        `sigmas` is always set by `set_timesteps`; this keeps the old entry point. sigma_min and sigma_max belong
        to the SDE and are set in the config, so other values here are an error rather than silently ignored.
        """
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if value is not None and value != getattr(self.config, name):
                raise ValueError(
                    f"{name}={value} differs from the config's {getattr(self.config, name)}; create the scheduler "
                    f"with VESDEScheduler.from_config(scheduler.config, {name}={value}) instead."
                )
        if (
            self.t_grid is None
            or self.num_inference_steps != num_inference_steps
            or (sampling_eps is not None and sampling_eps != self.sampling_eps)
        ):
            self.set_timesteps(num_inference_steps, device=self.timesteps.device if self.timesteps is not None else None, sampling_eps=sampling_eps)
