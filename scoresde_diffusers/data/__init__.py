"""Training data: built-in offline data sets (registered in `DATASETS`) and any Hugging Face `datasets` data set.

`load_training_data(name, ...)` returns a `TrainingData`: a torch `Dataset` whose items are float tensors in the
model's range (images (C, H, W) scaled to [-1, 1], vectors (D,) as they are) and the shape of one item.

Built in (no network): ``digits`` (scikit-learn's 8x8 digits), ``four_gaussians`` (the 2-D mixture of
`GaussianMixtureScoreModel.four_gaussians`), ``two_moons`` and ``rings`` (scikit-learn's `make_moons` /
`make_circles`, scaled). Any other name is a `datasets` data set: a local folder of images (``imagefolder``,
e.g. MNIST-style class sub-folders), a folder written by `Dataset.save_to_disk`, or a Hub name for `load_dataset`.
"""

from .datasets import (
    DATASETS,
    ImageTransform,
    TrainingData,
    load_training_data,
)

__all__ = ["DATASETS", "ImageTransform", "TrainingData", "load_training_data"]
