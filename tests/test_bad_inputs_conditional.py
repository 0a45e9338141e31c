"""Bad input to inpainting and colorization is caught at the door, with the argument named and what is allowed:
masks hold only 0 and 1, images lie in the model's data range (uint8 tensors are 8-bit images, as in the likelihood
pipeline), and nothing is silently ignored."""

import numpy as np
import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeColorizationPipeline, ScoreSdeInpaintPipeline


def image_pipeline(pipeline_class, channels):
    scheduler = VPSDEScheduler()
    dim = channels * 2 * 2
    model = GaussianMixtureScoreModel.from_mixture(
        [1.0], torch.zeros(1, dim), 0.1 * torch.ones(1, dim), scheduler=scheduler, sample_size=2, in_channels=channels
    )
    pipe = pipeline_class(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


IMAGE = torch.zeros(1, 1, 2, 2)
MASK = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])

INPAINT_CASES = {
    "mask_of_halves": ({"image": IMAGE, "mask_image": MASK * 0.5}, r"mask_image must hold only 0 and 1 .* 2 of 4 entries are other values \(0.5\)"),
    "mask_of_twos": ({"image": IMAGE, "mask_image": MASK * 2}, r"mask_image must hold only 0 and 1 .*\(2\)"),
    "uint8_mask_of_greys": ({"image": IMAGE, "mask_image": (MASK * 128).to(torch.uint8)}, r"mask_image must hold only 0 and 255"),
    "numpy_mask_of_halves": ({"image": IMAGE, "mask_image": np.full((2, 2), 0.5, dtype=np.float32)}, r"mask_image must hold only 0 and 1"),
    "image_outside_the_data_range": ({"image": IMAGE + 3.0, "mask_image": MASK}, r"image must lie in the model's data range \[-1.0, 1.0\]; 4 of 4 entries are outside"),
    "image_of_integers": ({"image": torch.ones(1, 1, 2, 2, dtype=torch.int64), "mask_image": MASK}, r"image tensors must be floating point .* or uint8 in \[0, 255\]; got dtype torch.int64"),
    "image_with_nan": ({"image": IMAGE.clone().index_fill_(3, torch.tensor([1]), float("nan")), "mask_image": MASK}, r"image has NaN or infinite values in 2 of 4 entries"),
}


@pytest.mark.parametrize("case", sorted(INPAINT_CASES))
def test_inpainting_refuses(case):
    inputs, message = INPAINT_CASES[case]
    with pytest.raises(ValueError, match=message):
        image_pipeline(ScoreSdeInpaintPipeline, 1)(num_inference_steps=2, output_type="pt", **inputs)


def test_a_uint8_image_tensor_is_an_8_bit_image_mapped_onto_the_data_range():
    pipe = image_pipeline(ScoreSdeInpaintPipeline, 1)
    white = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    out = pipe(image=white, mask_image=torch.zeros(1, 1, 2, 2), num_inference_steps=2, output_type="pt")
    torch.testing.assert_close(out.images, torch.ones(1, 1, 2, 2))  # nothing repainted: the observation, at 1.0


COLORIZATION_CASES = {
    "grey_values_of_fifty": (torch.full((1, 1, 2, 2), 50.0), r"image must lie in the model's data range \[-1.0, 1.0\]; 4 of 4 entries are outside"),
    "grey_integers": (torch.full((1, 1, 2, 2), 1, dtype=torch.int32), r"image tensors must be floating point"),
}


@pytest.mark.parametrize("case", sorted(COLORIZATION_CASES))
def test_colorization_refuses(case):
    gray, message = COLORIZATION_CASES[case]
    with pytest.raises(ValueError, match=message):
        image_pipeline(ScoreSdeColorizationPipeline, 3)(gray, num_inference_steps=2, output_type="pt")
