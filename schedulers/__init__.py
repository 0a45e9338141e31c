"""diffusers schedulers for the VE, VP and sub-VP SDEs (installed as `scoresde_diffusers.schedulers`)."""

from .scheduling_score_sde_base import ScoreSdeSchedulerMixin, ScoreSdeSchedulerOutput
from .scheduling_subvp_sde import SubVPSDEScheduler
from .scheduling_ve_sde import VESDEScheduler
from .scheduling_vp_sde import VPSDEScheduler

__all__ = ["ScoreSdeSchedulerMixin", "ScoreSdeSchedulerOutput", "SubVPSDEScheduler", "VESDEScheduler", "VPSDEScheduler"]
