"""`SubVPSDEScheduler`: the sub-variance-preserving SDE as a diffusers scheduler."""

from diffusers.configuration_utils import ConfigMixin  # noqa: F401 (diffusers' pipeline loader looks the base
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401 classes up in the class's module)

from scoresde_diffusers.sdes import SubVPSDE

from .scheduling_vp_sde import VPSDEScheduler


class SubVPSDEScheduler(VPSDEScheduler):
    r"""Reverse-time sampler of the sub-VP SDE: VP's drift with diffusion
    g(t) = sqrt(beta(t) (1 - exp(-2 beta_min t - (beta_max - beta_min) t^2))) (Song et al. 2021, eq. 17; see
    `scoresde_diffusers.sdes.SubVPSDE`). Its Langevin corrector works (score_sde's crashes on sub-VP).

    The config is that of `VPSDEScheduler` (same keys, same defaults, same DDPM beta mapping in `from_config`):
    the two SDEs share beta(t) and the drift and differ only in g(t). Note that a DDPM-trained epsilon model is
    a model of the VP marginals, not the sub-VP ones.

    For the same reason its config carries no DDPM betas (unlike VP's): DDPM's chain discretises the VP SDE, so no
    `DDPMScheduler` config describes a sub-VP model, and a DDPM-family scheduler loading this config would sample
    the wrong marginals.
    """

    sde_class = SubVPSDE

    def _derived_config(self) -> dict:
        return {}
