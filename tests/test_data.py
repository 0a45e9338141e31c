"""Training data: built-in sets, image folders, `save_to_disk` folders, transforms and clear errors."""

import numpy as np
import PIL.Image
import pytest
import torch

from scoresde_diffusers.data import DATASETS, ImageTransform, load_training_data


def test_digits_are_scaled_and_resized():
    data = load_training_data("digits")
    assert len(data.dataset) == 1797 and data.sample_shape == (1, 8, 8) and data.is_image
    x = data.dataset.tensors[0]
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1 and x.max() == 1
    big = load_training_data("digits", resolution=16, num_samples=10)
    assert big.sample_shape == (1, 16, 16) and len(big.dataset) == 10


def test_digits_know_their_17_grey_levels():
    data = load_training_data("digits")
    levels = torch.unique(data.dataset.tensors[0])
    assert data.num_levels == levels.numel() == 17
    torch.testing.assert_close(levels, torch.linspace(-1, 1, 17))
    assert load_training_data("digits", resolution=16, num_samples=10).num_levels == 256  # resizing interpolates


@pytest.mark.parametrize("name", ["four_gaussians", "two_moons", "rings"])
def test_toy_sets(name):
    data = load_training_data(name, num_samples=1000, seed=1)
    assert data.sample_shape == (2,) and not data.is_image and len(data.dataset) == 1000
    again = load_training_data(name, num_samples=1000, seed=1)
    assert torch.equal(data.dataset.tensors[0], again.dataset.tensors[0])


def test_four_gaussians_has_the_mixture_weights():
    from scoresde_diffusers import GaussianMixtureScoreModel

    x = load_training_data("four_gaussians", num_samples=20000).dataset.tensors[0]
    labels = GaussianMixtureScoreModel.four_gaussians().component_posteriors(x).argmax(1)
    fractions = torch.bincount(labels, minlength=4).float() / len(x)
    torch.testing.assert_close(fractions, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015, rtol=0)


def _write_mnist_style_folder(root, mode="L", size=(28, 28), per_class=3):
    rng = np.random.default_rng(0)
    for label in ("0", "1"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            shape = size[::-1] if mode == "L" else size[::-1] + (3,)
            PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(root / label / f"{i}.png")
    return root


def test_mnist_style_image_folder(tmp_path):
    root = _write_mnist_style_folder(tmp_path / "mnist")
    data = load_training_data(str(root), resolution=16)
    assert data.sample_shape == (1, 16, 16) and len(data.dataset) == 6
    x = data.dataset[0]
    assert x.shape == (1, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_rgb_folder_and_channel_override(tmp_path):
    root = _write_mnist_style_folder(tmp_path / "rgb", mode="RGB", size=(20, 12))
    data = load_training_data(str(root), resolution=8)
    assert data.sample_shape == (3, 8, 8) and data.dataset[1].shape == (3, 8, 8)
    grey = load_training_data(str(root), resolution=8, num_channels=1)
    assert grey.dataset[0].shape == (1, 8, 8)


def test_save_to_disk_folder_and_image_column(tmp_path):
    import datasets

    images = [PIL.Image.fromarray(np.full((10, 10), 40 * i, dtype=np.uint8)) for i in range(4)]
    ds = datasets.Dataset.from_dict({"img": images, "label": [0, 1, 2, 3]}).cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    data = load_training_data(str(tmp_path / "saved"), resolution=8)
    assert data.info["image_column"] == "img" and data.sample_shape == (1, 8, 8)
    with pytest.raises(ValueError, match=r"Image column 'picture' is not in the data set; its columns are \['img', 'label'\]"):
        load_training_data(str(tmp_path / "saved"), image_column="picture")


def test_unknown_dataset_lists_builtins():
    with pytest.raises(ValueError, match="Unknown dataset 'no-such-dataset-xyz'.*digits.*four_gaussians.*rings.*two_moons"):
        load_training_data("no-such-dataset-xyz")
    assert {"digits", "four_gaussians", "two_moons", "rings"} <= set(DATASETS.names())


def test_image_transform_crop_and_flip():
    array = np.zeros((4, 8), dtype=np.uint8)
    array[:, :4] = 255  # left half white
    image = PIL.Image.fromarray(array, mode="L")
    x = ImageTransform(4, num_channels=1, center_crop=True)(image)  # resize 4x8 -> 4x8, crop the centre 4x4
    assert x.shape == (1, 4, 4)
    assert torch.all(x[..., :2] == 1) and torch.all(x[..., 2:] == -1)
    torch.manual_seed(0)
    flips = [ImageTransform(4, 1, random_flip=True)(image)[0, 0, 0].item() for _ in range(40)]
    assert 5 < sum(v == -1 for v in flips) < 35  # both orientations occur
    with pytest.raises(ValueError, match="num_channels must be 1 or 3"):
        ImageTransform(4, num_channels=2)


def test_a_local_folder_with_no_images_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"holds no images \(no file ending in .png"):
        load_training_data(str(tmp_path))
