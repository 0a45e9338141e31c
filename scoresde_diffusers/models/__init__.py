"""Models: the exact Gaussian-mixture score model, score networks (UNet presets, an MLP for 2-D data)."""

from .classifier import (
    CLASSIFIER_PRESETS,
    GaussianMixtureClassifier,
    MLPClassifier,
    TimeDependentClassifier,
    TimeDependentClassifierOutput,
)
from .gaussian_mixture import GaussianMixtureScoreModel
from .mlp import MLPScoreModel
from .unet_presets import MODEL_PRESETS, create_unet

__all__ = [
    "CLASSIFIER_PRESETS",
    "GaussianMixtureClassifier",
    "MLPClassifier",
    "TimeDependentClassifier",
    "TimeDependentClassifierOutput",
    "GaussianMixtureScoreModel", "MLPScoreModel", "MODEL_PRESETS",
    "create_unet",
]

# score_sde's own networks and configs (converted checkpoints).
from .ddpm_score_sde import ScoreSdeDDPMModel
from .ncsnpp import NCSNppModel
from .score_sde_configs import (
    CHECKPOINT_ALIASES,
    SCORE_SDE_CONFIGS,
    ScoreSdeConfig,
    convert_score_sde_checkpoint,
    get_score_sde_config,
)

__all__ += [
    "CHECKPOINT_ALIASES",
    "NCSNppModel",
    "SCORE_SDE_CONFIGS",
    "ScoreSdeConfig",
    "ScoreSdeDDPMModel",
    "convert_score_sde_checkpoint",
    "get_score_sde_config",
]
