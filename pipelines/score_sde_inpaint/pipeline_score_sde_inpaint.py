"""`ScoreSdeInpaintPipeline`: imputation / inpainting with an unconditional score model (Song et al. 2021,
Appendix I.2), by the reverse SDE (predictor-corrector) or the probability-flow ODE."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from scoresde_diffusers.conditioning import Imputation
from scoresde_diffusers.guidance import prepare_mask
from scoresde_diffusers.utils import check_in_range

from ..pipeline_score_sde_utils import ScoreSdePipelineOutput
from ..score_sde_ode.pipeline_score_sde_ode import ProbabilityFlowMixin, check_sampler


def preprocess_image(image, data_range: Tuple[float, float], dtype: Optional[torch.dtype] = None, device=None) -> torch.Tensor:
    """`image` as a float tensor in the model's data range, channels first.

    Floating-point tensors are taken to be in the data range already (like ``output_type="pt"`` outputs), shape
    (B, C, H, W), (C, H, W) or, for vector data, (B, D); uint8 tensors are 8-bit images in [0, 255], as in the
    likelihood pipeline. PIL images (one or a list) and numpy arrays are images in [0, 1] (uint8 in [0, 255]),
    numpy ones channels-last ((H, W), (H, W, C) or (B, H, W, C)). Images in [0, 1] or [0, 255] are mapped
    linearly onto `data_range`. The result has `dtype` (default: a floating tensor's own dtype, else float32).
    Other integer tensors are a ValueError (is 1 the data's maximum, or 1/255 of it?).
    """
    low, high = data_range
    if isinstance(image, torch.Tensor):
        x = image.detach()
        x = x[None] if x.ndim == 3 else x
        if x.dtype == torch.uint8:
            return (low + (high - low) * (x.float() / 255.0)).to(device=device, dtype=dtype or torch.float32)
        if not x.is_floating_point():
            raise ValueError(
                f"image tensors must be floating point in the data range {list(data_range)}, or uint8 in [0, 255]; "
                f"got dtype {x.dtype}."
            )
        return x.to(device=device, dtype=dtype or x.dtype)
    if isinstance(image, PIL.Image.Image):
        image = [image]
    if isinstance(image, (list, tuple)) and image and isinstance(image[0], PIL.Image.Image):
        if len({i.mode for i in image}) > 1:  # mixed modes (e.g. "L" and "RGB"): all as RGB
            image = [i.convert("RGB") for i in image]
        arrays = [np.asarray(i) for i in image]
        image = np.stack([a[..., None] if a.ndim == 2 else a for a in arrays])  # (B, H, W, C), uint8
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a torch tensor, a numpy array or PIL image(s); got {type(image).__name__}.")
    array = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    x = torch.from_numpy(array)
    if x.ndim == 2:
        x = x[None, :, :, None]  # (H, W) -> (1, H, W, 1)
    elif x.ndim == 3:
        x = x[None] if x.shape[-1] in (1, 3) else x[..., None]  # (H, W, C) with C = 1 or 3, else (B, H, W)
    if x.ndim != 4:
        raise ValueError(f"A numpy / PIL image must be (H, W), (H, W, C) or (B, H, W, C); got shape {tuple(image.shape)}.")
    x = x.permute(0, 3, 1, 2)
    return (low + (high - low) * x).to(device=device, dtype=dtype or torch.float32)


class ScoreSdeInpaintPipeline(ProbabilityFlowMixin, DiffusionPipeline):
    r"""Imputation of the unknown part of `image` (Song et al. 2021, Appendix I.2
    and Algorithm 4 (Appendix G); score_sde's `get_pc_inpainter`), with diffusers' mask convention: white (1) = repaint.

    Before every model evaluation at time t the known part of the state is replaced by a sample of the forward-
    noised observation, x <- mask * x + (1 - mask) * (m(t) y + sigma(t) z), so that the unknown part is driven by
    grad log p_t([x_unknown, y_t]) (an `Imputation` conditioning built for the call and handed to the sampling
    loop); the final sample carries y exactly on the known part (`Imputation.finalize`). ``sampler="pc"`` runs
    `ScoreSdePCPipeline`'s loop (`pc_loop`) with fresh z at every step (the paper's method); ``sampler="ode"``
    runs `ScoreSdeODEPipeline`'s probability-flow ODE (`ode_loop`) with the known
    part on the noise-free forward path m(t) y, so the unknown part solves a deterministic ODE (any solver,
    adaptive ones included). A random but fixed path m(t) y + sigma(t) z was tried and is worse: on the test
    mixture of tests/test_inpaint.py it biases the mode weights by about 0.01 (z = 0: no bias detectable).

    Exactness: when, within each mode of the data, known and unknown coordinates are independent and the known
    coordinates tell the modes apart at noise levels where the unknown part is still undecided, the samples are
    those of p(x_unknown | x_known) (tests/test_inpaint.py checks this on Gaussian mixtures). In general the
    replacement is an approximation of the conditional score (Song et al. 2021, Appendix I.2).

    Args:
        unet (`ModelMixin`): the unconditional score model (see `ScoreSdePCPipeline`).
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range of the model's data; PIL / numpy
            inputs in [0, 1] are mapped onto it; saved in model_index.json.
        num_levels (`int`, defaults to 256): values one data entry takes, evenly spaced over `data_range` (256 for
            8-bit images, 17 for scikit-learn's digits); the ODE scheduler's grid ends at their spacing. Saved in
            model_index.json.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["sample"]

    # ------------------------------------------------------------------ the space imputation happens in
    def transform(self, sample: torch.Tensor) -> torch.Tensor:
        """Map samples to the space where the known part is a set of coordinates (the identity here; colorization
        decouples gray and chroma). Must be orthogonal, so the SDE's noise stays isotropic."""
        return sample

    def inverse_transform(self, sample: torch.Tensor) -> torch.Tensor:
        """The inverse of `transform`."""
        return sample

    # ------------------------------------------------------------------ inputs
    def prepare_image(self, image) -> torch.Tensor:
        """`image` as a tensor in the data range, of the model's sample shape (a ValueError otherwise)."""
        if isinstance(image, np.ndarray) and self.sample_shape(1)[1:] == tuple(image.shape[1:]):
            x = torch.from_numpy(image)  # vector data (B, D) given as numpy: values as they are
        else:
            x = preprocess_image(image, self.data_range)
        self.check_sample(x, name="image")
        if x.ndim == 4:  # image models: values outside the data range would be an observation the model never saw
            check_in_range(x, self.data_range, "image")
        return x

    # ------------------------------------------------------------------ sampling
    def imputation(self, observation: torch.Tensor, mask: torch.Tensor, sampler: str) -> Imputation:
        """The `Imputation` of one call for (`observation`, `mask`), both in `transform` space: fresh noise at every
        step of the reverse SDE, the noise-free path m(t) y for the ODE (see the class docstring)."""
        device, dtype = self._execution_device, self.unet.dtype
        observation, mask = observation.to(device=device, dtype=dtype), mask.to(device=device, dtype=dtype)
        return Imputation(observation, mask, self.scheduler, sampler == "pc", self.transform, self.inverse_transform)

    def impute(self, observation: torch.Tensor, mask: torch.Tensor, num_inference_steps: Optional[int], sampler: str, **loop_kwargs):
        """Run the loop of `sampler` with the `imputation` of (`observation`, `mask`); `loop_kwargs` are the loop's
        arguments. Inpainting and colorization both sample through it."""
        check_sampler(sampler)
        self.check_output_type(loop_kwargs.get("output_type", "pil"))
        self.check_scheduler()
        return self.run_sampler(sampler, self.imputation(observation, mask, sampler), num_inference_steps, **loop_kwargs)

    @torch.no_grad()
    def __call__(
        self,
        image: Union[torch.Tensor, np.ndarray, PIL.Image.Image, List[PIL.Image.Image]] = None,
        mask_image: Union[torch.Tensor, np.ndarray, PIL.Image.Image, List[PIL.Image.Image]] = None,
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
        r"""Fill in the masked part of `image`.

        Args:
            image (`torch.Tensor`, `np.ndarray` or PIL image(s)): the images (B, C, H, W) or vectors (B, D) whose
                unmasked part is known; tensors in the model's data range, PIL / numpy in [0, 1] (see
                `preprocess_image`). Masked values are ignored.
            mask_image (`torch.Tensor`, `np.ndarray` or PIL image(s)): 1 / white where to generate, 0 / black where
                `image` is kept; (H, W), (B, 1, H, W), (B, C, H, W), or (D,) / (B, D) for vectors; thresholded at 0.5.
            num_inference_steps (`int`, *optional*): grid size; defaults to the loop's default (1000 PC steps; an
                adaptive solver for the ODE).
            sampler (`str`, defaults to ``"pc"``): ``"pc"`` (reverse SDE) or ``"ode"`` (probability flow).
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs, latents:
                as in `ScoreSdePCPipeline.__call__` / `ScoreSdeODEPipeline.__call__`. The callback sees the state
                before the final restoration of the known part.
            sampler_kwargs: other options of the chosen loop (``snr``, ``corrector``, ... or ``solver``, ``rtol``, ...).

        Returns:
            `ScoreSdePipelineOutput` ``(images, nfe)`` or the tuple; the known part equals `image` exactly.

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines.score_sde_inpaint import ScoreSdeInpaintPipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)  # modes at (+-2, +-2)
        >>> pipe = ScoreSdeInpaintPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> image = torch.tensor([[2.0, 0.0]]).repeat(4, 1)  # x = 2 known, y unknown
        >>> out = pipe(image, mask_image=torch.tensor([0.0, 1.0]), num_inference_steps=100, output_type="pt")
        >>> bool((out.images[:, 0] == 2).all()), bool((out.images[:, 1].abs() > 1).all())  # y near +-2
        (True, True)

        ```
        """
        if image is None or mask_image is None:
            raise ValueError("Inpainting needs both `image` and `mask_image`.")
        self.check_scheduler()
        observation = self.prepare_image(image)
        mask = prepare_mask(mask_image, observation.shape, dtype=observation.dtype)
        return self.impute(
            observation, mask, num_inference_steps, sampler, batch_size=observation.shape[0], generator=generator,
            output_type=output_type, return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, latents=latents, **sampler_kwargs,
        )  # fmt: skip
