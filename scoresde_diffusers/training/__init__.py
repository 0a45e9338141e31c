"""Training of score models with accelerate: losses, configuration, the loop, checkpoints and the Hub.

``accelerate launch examples/train.py`` is a thin command line over `train`; see docs/training.md.
"""

from .checkpointing import CheckpointError, CheckpointParts, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainingConfig, build_parser, parse_args
from .losses import (
    LOSSES,
    DDPMLoss,
    DenoisingScoreMatchingLoss,
    ImportanceSampledLikelihoodLoss,
    LikelihoodWeightedLoss,
    LossOutput,
    ScoreMatchingLoss,
    SMLDLoss,
    get_loss,
    model_score,
)
from .classifier import ClassifierTrainingConfig, ClassifierTrainingResult, train_classifier
from .trainer import TrainingResult, build_model_and_scheduler, generate_samples, train

__all__ = [
    "ClassifierTrainingConfig",
    "ClassifierTrainingResult",
    "train_classifier",
    "CheckpointError",
    "CheckpointParts",
    "DDPMLoss",
    "DenoisingScoreMatchingLoss",
    "ImportanceSampledLikelihoodLoss",
    "LOSSES",
    "LikelihoodWeightedLoss",
    "LossOutput",
    "SMLDLoss",
    "ScoreMatchingLoss",
    "TrainingConfig",
    "TrainingResult",
    "build_model_and_scheduler",
    "build_parser",
    "generate_samples",
    "get_loss",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "model_score",
    "parse_args",
    "save_checkpoint",
    "train",
]
