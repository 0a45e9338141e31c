"""scoresde_diffusers: score-based generative modelling through SDEs (Song et al., ICLR 2021) for diffusers.

Names are imported lazily, the first time they are used (PEP 562, as diffusers does with its `_LazyModule`):
``import scoresde_diffusers.sdes`` or ``from scoresde_diffusers import VPSDE`` loads the SDE mathematics and torch
only, not diffusers, accelerate, the pipelines or the trainer.
"""

import importlib
from typing import Any, Dict, List

__version__ = "0.1.0"

# Public name -> the submodule that defines it. A registry is taken from the module whose import fills it with the
# built-in entries, so that ``from scoresde_diffusers import PREDICTORS`` lists the predictors.
_IMPORT_STRUCTURE: Dict[str, List[str]] = {
    "registry": ["Registry"],
    "sdes": ["SDE", "SDES", "SubVPSDE", "VESDE", "VPSDE", "get_sde"],
    "sampling": [
        "CORRECTORS", "FINAL_STEPS", "ODE_SOLVERS", "PREDICTION_TYPES", "PREDICTORS", "SDE_SOLVERS", "TIMESTEP_MAPS", "TIME_GRIDS",
        "dpm_solver_multistep", "from_score", "gotta_go_fast", "requires_sde", "t_from_noise_level", "time_grid",
        "to_score",
    ],
    "sampling.ode_solvers": ["ODESolution", "get_ode_solver"],
    "models": [
        "MODEL_PRESETS", "GaussianMixtureClassifier", "GaussianMixtureScoreModel", "MLPClassifier", "MLPScoreModel",
        "NCSNppModel", "ScoreSdeDDPMModel",
        "TimeDependentClassifier", "TimeDependentClassifierOutput", "create_unet",
    ],
    "schedulers": [
        "EXACT_MODEL_SETTINGS", "SMOOTH_MODEL_SETTINGS", "ScoreSdeDPMSolverMultistepScheduler", "ScoreSdeHeunScheduler", "ScoreSdeODESchedulerMixin",
        "ScoreSdePCScheduler", "ScoreSdePCSchedulerMixin", "ScoreSdeSchedulerMixin", "ScoreSdeSchedulerOutput", "SubVPSDEScheduler",
        "VESDEScheduler", "VPSDEScheduler",
    ],
    "evaluation": ["image_distribution_metrics", "mixture_sample_metrics"],
    "conditioning": ["ClassGuidance", "Conditioning", "Imputation"],
    "likelihood": [
        "bits_per_dim", "dequantize", "dequantized_log_likelihood", "divergence_exact", "divergence_hutchinson",
        "ode_log_likelihood",
    ],
    "data": ["DATASETS", "load_training_data"],
    "training": ["LOSSES", "ClassifierTrainingConfig", "TrainingConfig", "get_loss", "train", "train_classifier"],
    "pipelines": [
        "ScoreSdeAdaptivePipeline", "ScoreSdeAnnealedLangevinPipeline", "ScoreSdeClassConditionalPipeline",
        "ScoreSdeColorizationPipeline", "ScoreSdeInpaintPipeline", "ScoreSdeLikelihoodEvaluation",
        "ScoreSdeLikelihoodOutput", "ScoreSdeLikelihoodPipeline", "ScoreSdeODEPipeline", "ScoreSdePCPipeline",
        "ScoreSdePipelineMixin", "ScoreSdePipelineOutput",
    ],
}
_MODULE_OF_NAME = {name: module for module, names in _IMPORT_STRUCTURE.items() for name in names}
__all__ = sorted(_MODULE_OF_NAME)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF_NAME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
