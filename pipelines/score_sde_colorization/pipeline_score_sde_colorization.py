"""`ScoreSdeColorizationPipeline`: colorization of grayscale images as imputation in a decoupled color space
(Song et al. 2021, Appendix I.3)."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import PIL.Image
import torch

from scoresde_diffusers.guidance import colorization_mask, couple, decouple, gray_to_decoupled, to_grayscale
from scoresde_diffusers.utils import check_in_range

from ..pipeline_score_sde_utils import ScoreSdePipelineOutput
from ..score_sde_inpaint import ScoreSdeInpaintPipeline, preprocess_image


class ScoreSdeColorizationPipeline(ScoreSdeInpaintPipeline):
    r"""Colorization of grayscale images with an unconditional RGB score model (Song et al. 2021, Appendix I.3;
    score_sde's `get_pc_colorizer`).

    The gray value of a pixel, mean(r, g, b), is one coordinate of an orthonormal change of color basis: with
    `COLORIZATION_MATRIX` M (first row (1, 1, 1) / sqrt(3)), u = M x has u_0 = sqrt(3) * gray and two chroma
    coordinates u_1, u_2. Colorization is imputation of (u_1, u_2) given u_0: the `Imputation` conditioning of
    `ScoreSdeInpaintPipeline`, handed to the same loops, with `transform` = M and `inverse_transform` = M^T (M
    orthogonal, so the SDE's isotropic noise is the same in both bases). The output's channel mean equals the input gray image exactly (up to rounding).

    Args:
        unet (`ModelMixin`): an unconditional score model of RGB images (``in_channels=3``).
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range of the model's data; gray PIL / numpy
            inputs in [0, 1] are mapped onto it.
        num_levels (`int`, defaults to 256): values one data entry takes, evenly spaced over `data_range` (256 for
            8-bit images, 17 for scikit-learn's digits); the ODE scheduler's grid ends at their spacing. Saved in
            model_index.json.
    """

    def transform(self, sample: torch.Tensor) -> torch.Tensor:
        """RGB -> (gray, chroma, chroma) coordinates, u = M x per pixel."""
        return decouple(sample)

    def inverse_transform(self, sample: torch.Tensor) -> torch.Tensor:
        """(gray, chroma, chroma) -> RGB, x = M^T u."""
        return couple(sample)

    def prepare_gray(self, image) -> torch.Tensor:
        """(B, 1, H, W) gray values in the data range from a 1-channel image or a 3-channel gray image (tensor,
        numpy or PIL; a 3-channel image is reduced to its channel mean); the model must be an RGB image model of
        the same size. A ValueError otherwise."""
        shape = self.sample_shape(1)
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"Colorization needs a score model of RGB images (in_channels=3); this one has samples of shape {shape[1:]}.")
        if isinstance(image, PIL.Image.Image) and image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        x = preprocess_image(image, self.data_range)
        check_in_range(x, self.data_range, "image")
        gray = to_grayscale(x)
        if tuple(gray.shape[2:]) != shape[2:]:
            raise ValueError(f"The gray images are {tuple(gray.shape[2:])} pixels but the model makes {shape[2:]} images.")
        return gray

    @torch.no_grad()
    def __call__(
        self,
        image: Union[torch.Tensor, np.ndarray, PIL.Image.Image, List[PIL.Image.Image]] = None,
        num_inference_steps: Optional[int] = None,
        sampler: str = "pc",
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[[Any, int, torch.Tensor, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        latents: Optional[torch.Tensor] = None,
        **sampler_kwargs,
    ) -> Union[ScoreSdePipelineOutput, Tuple]:
        r"""Colorize grayscale `image`.

        Args:
            image (`torch.Tensor`, `np.ndarray` or PIL image(s)): grayscale images, (B, 1, H, W) or 3-channel gray
                (B, 3, H, W) (reduced to the channel mean); tensors in the model's data range, PIL / numpy in [0, 1].
                Another channel count is a ValueError.
            num_inference_steps, sampler, generator, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs, latents, sampler_kwargs: as in `ScoreSdeInpaintPipeline.__call__`.

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` or the tuple: RGB images whose channel mean is `image`.

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines.score_sde_colorization import ScoreSdeColorizationPipeline

        >>> scheduler = VPSDEScheduler()
        >>> colors = [[0.8, -0.4, -0.4], [-0.4, 0.8, -0.4], [-0.4, -0.4, 0.8]]  # red, green, blue pixels, same gray
        >>> model = GaussianMixtureScoreModel.from_mixture([1, 1, 1], colors, [0.05] * 3, scheduler=scheduler, sample_size=1, in_channels=3)
        >>> pipe = ScoreSdeColorizationPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> gray = torch.zeros(6, 1, 1, 1)  # mean(r, g, b) = 0
        >>> out = pipe(gray, num_inference_steps=100, generator=torch.Generator().manual_seed(0), output_type="pt")
        >>> out.images.shape, bool(torch.allclose(out.images.mean(dim=1, keepdim=True), gray, atol=1e-6))
        (torch.Size([6, 3, 1, 1]), True)

        ```
        """
        if image is None:
            raise ValueError("Colorization needs the grayscale `image`.")
        self.check_scheduler()
        gray = self.prepare_gray(image)
        observation = gray_to_decoupled(gray)
        mask = colorization_mask(observation.shape, dtype=observation.dtype)
        return self.impute(
            observation, mask, num_inference_steps, sampler, batch_size=observation.shape[0], generator=generator,
            output_type=output_type, return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, latents=latents, **sampler_kwargs,
        )  # fmt: skip
