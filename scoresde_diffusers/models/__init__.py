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
