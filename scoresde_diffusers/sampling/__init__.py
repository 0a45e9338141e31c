"""Sampling building blocks: predictors, correctors, model-output parametrisations and timestep maps."""

from ..registry import CORRECTORS, FINAL_STEPS, ODE_SOLVERS, PREDICTORS, TIMESTEP_MAPS
from . import adaptive_sde, correctors, exponential_integrators, final_steps, ode_solvers, predictors, time_grids
from .adaptive_sde import SDE_SOLVERS, gotta_go_fast
from .exponential_integrators import dpm_solver_multistep, requires_sde
from .time_grids import TIME_GRIDS, t_from_noise_level, time_grid
from .parametrization import PREDICTION_TYPES, from_score, to_score
from .timesteps import TimestepMap, t_to_timestep, timestep_to_t

__all__ = [
    "SDE_SOLVERS",
    "TIME_GRIDS",
    "dpm_solver_multistep",
    "gotta_go_fast",
    "requires_sde",
    "t_from_noise_level",
    "time_grid",
    "CORRECTORS",
    "FINAL_STEPS",
    "PREDICTORS",
    "PREDICTION_TYPES",
    "TIMESTEP_MAPS",
    "TimestepMap",
    "from_score",
    "to_score",
    "t_to_timestep",
    "timestep_to_t",
]
