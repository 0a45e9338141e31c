"""Sampling building blocks: predictors, correctors, model-output parametrisations and timestep maps."""

from ..registry import CORRECTORS, PREDICTORS, TIMESTEP_MAPS
from . import correctors, predictors
from .parametrization import PREDICTION_TYPES, from_score, to_score
from .timesteps import TimestepMap, t_to_timestep, timestep_to_t

__all__ = [
    "CORRECTORS",
    "PREDICTORS",
    "PREDICTION_TYPES",
    "TIMESTEP_MAPS",
    "TimestepMap",
    "from_score",
    "to_score",
    "t_to_timestep",
    "timestep_to_t",
]
