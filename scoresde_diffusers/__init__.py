"""scoresde_diffusers: score-based generative modelling through SDEs (Song et al., ICLR 2021) for diffusers."""

__version__ = "0.1.0"

from .registry import CORRECTORS, ODE_SOLVERS, PREDICTORS, SDES, TIMESTEP_MAPS, Registry
from .sdes import SDE, SubVPSDE, VESDE, VPSDE, get_sde
from .sampling import PREDICTION_TYPES, from_score, to_score
from .models import (
    MODEL_PRESETS,
    GaussianMixtureClassifier,
    GaussianMixtureScoreModel,
    MLPClassifier,
    MLPScoreModel,
    TimeDependentClassifier,
    TimeDependentClassifierOutput,
    create_unet,
)
from .schedulers import (
    ScoreSdeSchedulerMixin,
    ScoreSdeSchedulerOutput,
    SubVPSDEScheduler,
    VESDEScheduler,
    VPSDEScheduler,
)
from .sampling import (
    SDE_SOLVERS,
    TIME_GRIDS,
    dpm_solver_multistep,
    gotta_go_fast,
    requires_sde,
    t_from_noise_level,
    time_grid,
)
from .sampling.ode_solvers import ODESolution, get_ode_solver
from .evaluation import image_distribution_metrics, mixture_sample_metrics
from .likelihood import (
    bits_per_dim,
    dequantize,
    dequantized_log_likelihood,
    divergence_exact,
    divergence_hutchinson,
    ode_log_likelihood,
)
from .data import DATASETS, load_training_data
from .training import LOSSES, ClassifierTrainingConfig, TrainingConfig, get_loss, train, train_classifier

# Pipelines last: they import the schedulers and the sampling code above.
from .pipelines import (
    ScoreSdeAdaptivePipeline,
    ScoreSdeAnnealedLangevinPipeline,
    ScoreSdeClassConditionalPipeline,
    ScoreSdeColorizationPipeline,
    ScoreSdeInpaintPipeline,
    ScoreSdeLikelihoodEvaluation,
    ScoreSdeLikelihoodOutput,
    ScoreSdeLikelihoodPipeline,
    ScoreSdeODEPipeline,
    ScoreSdePCPipeline,
    ScoreSdePipelineMixin,
    ScoreSdePipelineOutput,
)

__all__ = [
    "SDE_SOLVERS",
    "ScoreSdeAdaptivePipeline",
    "TIME_GRIDS",
    "dpm_solver_multistep",
    "gotta_go_fast",
    "image_distribution_metrics",
    "mixture_sample_metrics",
    "requires_sde",
    "t_from_noise_level",
    "time_grid",
    "ClassifierTrainingConfig",
    "GaussianMixtureClassifier",
    "MLPClassifier",
    "ScoreSdeClassConditionalPipeline",
    "ScoreSdeColorizationPipeline",
    "ScoreSdeInpaintPipeline",
    "TimeDependentClassifier",
    "TimeDependentClassifierOutput",
    "train_classifier",
    "DATASETS",
    "LOSSES",
    "MLPScoreModel",
    "MODEL_PRESETS",
    "TrainingConfig",
    "create_unet",
    "get_loss",
    "load_training_data",
    "train",
    "ODESolution",
    "ScoreSdeAnnealedLangevinPipeline",
    "ScoreSdeLikelihoodEvaluation",
    "ScoreSdeLikelihoodOutput",
    "ScoreSdeLikelihoodPipeline",
    "ScoreSdeODEPipeline",
    "ScoreSdePCPipeline",
    "ScoreSdePipelineMixin",
    "ScoreSdePipelineOutput",
    "bits_per_dim",
    "dequantize",
    "dequantized_log_likelihood",
    "divergence_exact",
    "divergence_hutchinson",
    "get_ode_solver",
    "ode_log_likelihood",
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
