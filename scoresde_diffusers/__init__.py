"""scoresde_diffusers: score-based generative modelling through SDEs (Song et al., ICLR 2021) for diffusers."""

__version__ = "0.1.0"

from .registry import CORRECTORS, ODE_SOLVERS, PREDICTORS, SDES, TIMESTEP_MAPS, Registry
from .sdes import SDE, SubVPSDE, VESDE, VPSDE, get_sde
from .sampling import PREDICTION_TYPES, from_score, to_score
from .models import GaussianMixtureScoreModel
from .schedulers import (
    ScoreSdeSchedulerMixin,
    ScoreSdeSchedulerOutput,
    SubVPSDEScheduler,
    VESDEScheduler,
    VPSDEScheduler,
)

__all__ = [
    "CORRECTORS",
    "GaussianMixtureScoreModel",
    "ODE_SOLVERS",
    "PREDICTION_TYPES",
    "PREDICTORS",
    "Registry",
    "SDE",
    "SDES",
    "ScoreSdeSchedulerMixin",
    "ScoreSdeSchedulerOutput",
    "SubVPSDE",
    "SubVPSDEScheduler",
    "TIMESTEP_MAPS",
    "VESDE",
    "VESDEScheduler",
    "VPSDE",
    "VPSDEScheduler",
    "from_score",
    "get_sde",
    "to_score",
]
