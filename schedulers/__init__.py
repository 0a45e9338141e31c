"""diffusers schedulers for the VE, VP and sub-VP SDEs (installed as `scoresde_diffusers.schedulers`).

Predictor-corrector samplers of the reverse SDE, one class per SDE: `VESDEScheduler`, `VPSDEScheduler`,
`SubVPSDEScheduler`, and `ScoreSdePCScheduler` for any registered SDE by name (a plugin's). Probability-flow ODE
samplers, one class per solver for every SDE: `ScoreSdeDPMSolverMultistepScheduler` (DPM-Solver++ / UniPC) and
`ScoreSdeHeunScheduler` (EDM's Heun).
"""

from .scheduling_score_sde_base import ScoreSdePCSchedulerMixin, ScoreSdeSchedulerMixin, ScoreSdeSchedulerOutput
from .scheduling_score_sde_dpmsolver_multistep import EXACT_MODEL_SETTINGS, SMOOTH_MODEL_SETTINGS, ScoreSdeDPMSolverMultistepScheduler
from .scheduling_score_sde_heun import ScoreSdeHeunScheduler
from .scheduling_score_sde_ode_base import ScoreSdeODESchedulerMixin
from .scheduling_score_sde_pc import ScoreSdePCScheduler, pc_scheduler_class
from .scheduling_subvp_sde import SubVPSDEScheduler
from .scheduling_ve_sde import VESDEScheduler
from .scheduling_vp_sde import VPSDEScheduler

__all__ = [
    "EXACT_MODEL_SETTINGS",
    "SMOOTH_MODEL_SETTINGS",
    "ScoreSdeDPMSolverMultistepScheduler",
    "ScoreSdeHeunScheduler",
    "ScoreSdeODESchedulerMixin",
    "ScoreSdePCScheduler",
    "ScoreSdePCSchedulerMixin",
    "ScoreSdeSchedulerMixin",
    "ScoreSdeSchedulerOutput",
    "SubVPSDEScheduler",
    "VESDEScheduler",
    "VPSDEScheduler",
    "pc_scheduler_class",
]
