"""Data sets for training score models: see the package docstring."""

import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, TensorDataset

from ..registry import Registry

#: Built-in data sets by name: each is a function ``(resolution, num_samples, seed, **options) -> TrainingData``.
DATASETS = Registry("dataset", "scoresde_diffusers.datasets")


@dataclass
class TrainingData:
    """A training set and what the model needs to know about it.

    Args:
        dataset (`torch.utils.data.Dataset`): items are float tensors of shape `sample_shape` (or 1-tuples of one).
        sample_shape (`Tuple[int, ...]`): (C, H, W) for images, (D,) for vectors.
        name (`str`): the name the data set was loaded by (for the model card and logs).
        data_range (`Tuple[float, float]`): the range images are scaled to; for display of vectors it is nominal.
        num_levels (`int`): the values one entry takes, evenly spaced over `data_range`: 256 for 8-bit images (and,
            nominally, for continuous data), 17 for the 8x8 digits. Saved with the pipeline (the ODE scheduler's
            grid ends at their spacing).
    """

    dataset: Dataset
    sample_shape: Tuple[int, ...]
    name: str
    data_range: Tuple[float, float] = (-1.0, 1.0)
    num_levels: int = 256
    info: dict = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3


def _tensor_data(x: torch.Tensor, name: str, num_levels: int = 256, **info) -> TrainingData:
    return TrainingData(TensorDataset(x.float()), tuple(x.shape[1:]), name, num_levels=num_levels, info=info)


# ---------------------------------------------------------------------------------------------- built-in sets
@DATASETS.register("digits")
def digits(resolution: int = 8, num_samples: Optional[int] = None, seed: int = 0, random_flip: bool = False, **_) -> TrainingData:
    """scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), scaled to [-1, 1] and resized (bilinear) to
    `resolution` x `resolution`; 1 channel. Flips are off by default (a flipped digit is another symbol)."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float()[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    if resolution != 8:
        images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(0, 1)
    if num_samples is not None:
        images = images[:num_samples]
    x = images * 2 - 1
    num_levels = 17 if resolution == 8 else 256  # resizing interpolates between the 17 grey levels
    if random_flip:
        return TrainingData(_FlipDataset(x), tuple(x.shape[1:]), "digits", num_levels=num_levels)
    return _tensor_data(x, "digits", num_levels=num_levels)


@DATASETS.register("four_gaussians")
def four_gaussians(num_samples: Optional[int] = None, seed: int = 0, **_) -> TrainingData:
    """Samples of the 2-D four-Gaussian mixture (weights 0.1-0.4, modes at (+-2, +-2))."""
    from ..models.gaussian_mixture import GaussianMixtureScoreModel

    model = GaussianMixtureScoreModel.four_gaussians()
    x = model.sample_data(num_samples or 20000, generator=torch.Generator().manual_seed(seed))
    return _tensor_data(x, "four_gaussians")


@DATASETS.register("two_moons")
def two_moons(num_samples: Optional[int] = None, seed: int = 0, **_) -> TrainingData:
    """scikit-learn's two interleaving half circles with noise 0.05, centred and scaled to unit standard deviation."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(num_samples or 20000, noise=0.05, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return _tensor_data(torch.from_numpy(x), "two_moons")


@DATASETS.register("rings")
def rings(num_samples: Optional[int] = None, seed: int = 0, **_) -> TrainingData:
    """Two concentric rings (scikit-learn's `make_circles`, factor 0.5, noise 0.03), radii 2 and 1."""
    from sklearn.datasets import make_circles

    x, _ = make_circles(num_samples or 20000, factor=0.5, noise=0.03, random_state=seed)
    return _tensor_data(torch.from_numpy(2 * x), "rings")


class _FlipDataset(Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        return x.flip(-1) if torch.rand(()) < 0.5 else x


# ---------------------------------------------------------------------------------------------- images
class ImageTransform:
    """PIL image -> float tensor (C, H, W) in [-1, 1], as diffusers' training examples preprocess:
    resize the shorter side to `resolution` (bilinear), centre or random crop to a square, optional random
    horizontal flip, scale [0, 255] -> [-1, 1].

    Args:
        resolution (`int`): output height = width.
        num_channels (`int`, defaults to 3): 1 converts to greyscale (mode ``L``), 3 to ``RGB``.
        center_crop (`bool`, defaults to `True`): crop the centre; otherwise a random square.
        random_flip (`bool`, defaults to `False`): flip horizontally with probability 1/2.
    """

    def __init__(self, resolution: int, num_channels: int = 3, center_crop: bool = True, random_flip: bool = False):
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}.")
        self.resolution = resolution
        self.num_channels = num_channels
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __call__(self, image: PIL.Image.Image) -> torch.Tensor:
        image = image.convert("L" if self.num_channels == 1 else "RGB")
        w, h = image.size
        scale = self.resolution / min(w, h)
        new_w, new_h = max(self.resolution, round(w * scale)), max(self.resolution, round(h * scale))
        image = image.resize((new_w, new_h), PIL.Image.BILINEAR)
        if self.center_crop:
            left, top = (new_w - self.resolution) // 2, (new_h - self.resolution) // 2
        else:
            left = int(torch.randint(0, new_w - self.resolution + 1, ()))
            top = int(torch.randint(0, new_h - self.resolution + 1, ()))
        image = image.crop((left, top, left + self.resolution, top + self.resolution))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        x = torch.from_numpy(array.reshape(self.resolution, self.resolution, self.num_channels)).permute(2, 0, 1)
        if self.random_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x.contiguous()


class HFImageDataset(Dataset):
    """A `datasets.Dataset` of images seen as a torch `Dataset` of transformed tensors."""

    def __init__(self, hf_dataset, image_column: str, transform: Callable):
        self.hf_dataset = hf_dataset
        self.image_column = image_column
        self.transform = transform

    def __len__(self):
        return len(self.hf_dataset)

    def __getitem__(self, i):
        image = self.hf_dataset[int(i)][self.image_column]
        if not isinstance(image, PIL.Image.Image):
            image = PIL.Image.fromarray(np.asarray(image))
        return self.transform(image)


#: File endings `datasets`' imagefolder reads as images (the common ones).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFolderError(ValueError):
    """A local folder given as a data set that holds nothing to train on."""


def _is_image_file(file: str) -> bool:
    return file.lower().endswith(IMAGE_EXTENSIONS)


def _load_hf_dataset(name: str, split: str, cache_dir: Optional[str], config_name: Optional[str] = None):
    import datasets

    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "dataset_info.json")) or os.path.isfile(os.path.join(name, "dataset_dict.json")):
            loaded = datasets.load_from_disk(name)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if not any(_is_image_file(file) for _, _, files in os.walk(name) for file in files):
            raise ImageFolderError(
                f"The folder {name!r} holds no images (no file ending in {', '.join(IMAGE_EXTENSIONS)}, in it or its "
                f"sub-folders) and is not a `save_to_disk` data set (no dataset_info.json / dataset_dict.json)."
            )
        return datasets.load_dataset("imagefolder", data_dir=name, split=split, cache_dir=cache_dir)
    return datasets.load_dataset(name, config_name, split=split, cache_dir=cache_dir)


def _pick_image_column(hf_dataset, image_column: Optional[str]) -> str:
    import datasets

    columns = list(hf_dataset.column_names)
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"Image column {image_column!r} is not in the data set; its columns are {columns}.")
        return image_column
    image_columns = [c for c, f in hf_dataset.features.items() if isinstance(f, datasets.Image)]
    for candidate in image_columns + [c for c in ("image", "img", "pixel_values") if c in columns]:
        return candidate
    raise ValueError(f"No image column found (no `datasets.Image` feature, no 'image' / 'img' column); columns are {columns}. Pass image_column.")


def load_training_data(
    name: str = "digits",
    resolution: Optional[int] = None,
    num_channels: Optional[int] = None,
    image_column: Optional[str] = None,
    split: str = "train",
    center_crop: bool = True,
    random_flip: bool = False,
    num_samples: Optional[int] = None,
    seed: int = 0,
    cache_dir: Optional[str] = None,
    config_name: Optional[str] = None,
) -> TrainingData:
    """Load a training set by name: a built-in (`DATASETS`), a local folder, or a Hub data set.

    Args:
        name (`str`, defaults to ``"digits"``): a built-in name, a local path (image folder or `save_to_disk`
            folder) or a `datasets` Hub name.
        resolution (`int`, *optional*): image height = width (8 for digits, 32 for other images by default).
        num_channels (`int`, *optional*): 1 or 3 for images; by default that of the first image (greyscale -> 1).
        image_column (`str`, *optional*): the column holding the images; found automatically if not given.
        split (`str`, defaults to ``"train"``): the split of a `datasets` data set.
        center_crop (`bool`, defaults to `True`): centre crop (else random crop) after resizing.
        random_flip (`bool`, defaults to `False`): random horizontal flips.
        num_samples (`int`, *optional*): size of a generated toy set / cap on the number of items.
        seed (`int`, defaults to 0): seed of generated toy sets.
        cache_dir (`str`, *optional*): `datasets` cache folder.
        config_name (`str`, *optional*): the configuration (subset) of a Hub data set, passed to
            `datasets.load_dataset` as its second argument (diffusers' ``--dataset_config_name``).

    Example:

    >>> from scoresde_diffusers.data import load_training_data
    >>> data = load_training_data("digits")
    >>> len(data.dataset), data.sample_shape
    (1797, (1, 8, 8))
    """
    if config_name is not None and (name in DATASETS or os.path.isdir(name)):
        raise ValueError(
            f"A data set configuration (config_name / --dataset_config_name {config_name!r}) selects a subset of a Hub "
            f"data set; {name!r} is a {'built-in' if name in DATASETS else 'local folder'}, which has none: leave it out."
        )
    if name in DATASETS:
        kwargs = {"num_samples": num_samples, "seed": seed, "random_flip": random_flip}
        if resolution is not None:
            kwargs["resolution"] = resolution
        return DATASETS.get(name)(**kwargs)
    try:
        hf_dataset = _load_hf_dataset(name, split, cache_dir, config_name)
    except ImageFolderError:
        raise
    except Exception as error:  # datasets raises many kinds (FileNotFoundError, ConnectionError, DatasetNotFoundError)
        raise ValueError(
            f"Unknown dataset {name!r}{'' if config_name is None else f' (configuration {config_name!r})'}: it is not a "
            f"built-in ({', '.join(DATASETS.names())}), not a local folder, and `datasets` could not load it ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
        ) from error
    column = _pick_image_column(hf_dataset, image_column)
    if num_samples is not None:
        hf_dataset = hf_dataset.select(range(min(num_samples, len(hf_dataset))))
    if len(hf_dataset) == 0:
        raise ValueError(f"Dataset {name!r} (split {split!r}) is empty.")
    if num_channels is None:
        first = hf_dataset[0][column]
        mode = first.mode if isinstance(first, PIL.Image.Image) else ("L" if np.asarray(first).ndim == 2 else "RGB")
        num_channels = 1 if mode in ("L", "1", "I", "I;16", "F") else 3
    resolution = resolution or 32
    transform = ImageTransform(resolution, num_channels, center_crop=center_crop, random_flip=random_flip)
    return TrainingData(HFImageDataset(hf_dataset, column, transform), (num_channels, resolution, resolution), name, info={"image_column": column, "split": split})
