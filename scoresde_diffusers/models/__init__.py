"""Models: the exact Gaussian-mixture score model (score networks and classifiers come with training)."""

from .gaussian_mixture import GaussianMixtureScoreModel

__all__ = ["GaussianMixtureScoreModel"]
