"""What every score-SDE pipeline shares: scheduler checks, sample shapes, the model call, the data range and output.

A pipeline is the loop (the scheduler is the step, the SDE the maths): it asks the scheduler for the grid, the steps
and every piece of SDE maths (denoiser, drift, prior, solvers), and never reaches the SDE itself. This mixin holds the pieces the
loops have in common so that no pipeline repeats them, and the predictor-corrector loop itself (`pc_loop`), which
`ScoreSdePCPipeline` runs as it is and the conditional pipelines run with a `Conditioning`
(`scoresde_diffusers.conditioning`); the probability-flow loop is `ProbabilityFlowMixin.ode_loop`.

Data range. Samples live in the model's data range, ``[-1, 1]`` by default (diffusers' convention); score_sde's
own checkpoints use ``[0, 1]`` (``config.data.centered = False``). A pipeline takes it as the ``data_range``
argument of its `__init__`, registers it with `register_to_config`, so it is saved in ``model_index.json`` and
restored by `from_pretrained`. ``output_type="np"``/``"pil"`` map ``data_range`` linearly onto [0, 1].

Hub layouts. Every pipeline's `from_pretrained` also loads the folders (or Hub repos) of diffusers' own pipelines
of the same models, `HUB_LAYOUTS`: `ScoreSdeVePipeline` (NCSN++, e.g. ``google/ncsnpp-celebahq-256``) and
`DDPMPipeline`, `DDIMPipeline`, `PNDMPipeline` (e.g. ``google/ddpm-cifar10-32``). The scheduler becomes the
score-SDE scheduler of the same SDE (`SCHEDULER_SWAPS`; its `from_config` maps the sigmas, betas and sampler
settings), the data range is the one that folder's pipeline samples in, and the model is called as that pipeline
calls it (see `HUB_LAYOUTS`). The same scheduler serves every pipeline: the PC loop steps with it, the ODE and
likelihood pipelines read its SDE and model conventions.

Generic loading. `save_pretrained` also makes every saved folder loadable by diffusers' generic loader,
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (see `ScoreSdePipelineMixin.save_pretrained`).
"""

import itertools
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import diffusers
import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

import scoresde_diffusers.schedulers
from scoresde_diffusers.conditioning import Conditioning
from scoresde_diffusers.schedulers import ScoreSdePCSchedulerMixin, ScoreSdeSchedulerMixin, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.utils import DEFAULT_DATA_RANGE, DEFAULT_NUM_LEVELS, check_data_range, check_finite, check_num_levels, check_num_steps, compute_dtype

OUTPUT_TYPES = ("pil", "np", "pt")

#: diffusers pipelines whose folders load into ours with no swap, and the data range each samples in. The model is
#: called as there with the converted scheduler's defaults: `ScoreSdeVePipeline` calls ``unet(x, sigma_t)`` and
#: reads a score (`VESDEScheduler`: ``timestep_type="sigma"``, ``prediction_type="score"``; the Hub's NCSN++
#: `UNet2DModel` has a Fourier embedding of sigma and divides its output by sigma) and clamps samples to [0, 1]
#: (score_sde's uncentred data, ``data.centered = False``); `DDPMPipeline`, `DDIMPipeline` and `PNDMPipeline` call
#: ``unet(x, t)`` at DDPM's integer steps (`VPSDEScheduler`: ``timestep_type="discrete"``, the DDPM config's
#: ``prediction_type``) and sample in [-1, 1].
HUB_LAYOUTS = {
    "ScoreSdeVePipeline": (0.0, 1.0),
    "DDPMPipeline": (-1.0, 1.0),
    "DDIMPipeline": (-1.0, 1.0),
    "PNDMPipeline": (-1.0, 1.0),
}
#: The score-SDE scheduler that loads each diffusers scheduler's config (its `from_config` converts it).
SCHEDULER_SWAPS = {
    "ScoreSdeVeScheduler": VESDEScheduler,
    "DDPMScheduler": VPSDEScheduler,
    "DDIMScheduler": VPSDEScheduler,
    "PNDMScheduler": VPSDEScheduler,
    "DPMSolverMultistepScheduler": VPSDEScheduler,
}
# `from_pretrained` arguments that say where and how to download files; passed on when reading a Hub layout.
_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")

# Generic loading. diffusers' `DiffusionPipeline.from_pretrained` resolves a plain `_class_name` only among its own
# pipelines; a `_class_name` of the form [file stem, class name] with that file next to model_index.json is its
# custom-pipeline route, the one Hub-hosted community pipelines use. `save_pretrained` writes both: the file is a
# one-line import of the pipeline class from this installed library (no model code, nothing pickled).
CUSTOM_PIPELINE_FILE_NAME = "pipeline.py"
_CUSTOM_PIPELINE_STEM = CUSTOM_PIPELINE_FILE_NAME[: -len(".py")]
_CUSTOM_PIPELINE_TEMPLATE = '''"""Lets `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` build a {name}: diffusers only
resolves the class names of its own pipelines. Needs `pip install scoresde_diffusers`."""

from {module} import {name}  # noqa: F401
'''
#: The one line that loads a saved folder or Hub repo with diffusers' generic loader (``{path}`` to fill in).
GENERIC_LOADING_ONE_LINER = 'pipe = DiffusionPipeline.from_pretrained("{path}", trust_remote_code=True)'


@dataclass
class ScoreSdePipelineOutput(BaseOutput):
    """Output of the score-SDE sampling pipelines.

    Args:
        images (`List[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): the samples, by `output_type`:
            PIL images, a (B, H, W, C) array in [0, 1] (a (B, D) array for vector data), or the raw tensor in the
            model's data range.
        nfe (`int`): number of score-model evaluations used.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]
    nfe: int


class ScoreSdePipelineMixin:
    """Shared helpers of the score-SDE pipelines; `self.unet` is the score model and `self.scheduler` a
    `ScoreSdeSchedulerMixin` scheduler.

    Its `__init__` is that of every pipeline made of a score model and a scheduler (the mixin comes before
    `DiffusionPipeline` in the bases); a pipeline with other components registers them itself and calls
    ``self.register_data_range(data_range)``. Each call starts with ``self.reset_nfe()``; `call_model` and
    `model_score` count evaluations in `self.nfe`. Conditioning is an argument of the loop (`pc_loop`,
    `model_score`, `conditioned_model_output`), never a method a pipeline overrides or state kept on the pipeline.
    """

    def __init__(self, unet, scheduler, data_range: Union[Tuple[float, float], List[float]] = DEFAULT_DATA_RANGE, num_levels: int = DEFAULT_NUM_LEVELS):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_data_range(data_range, num_levels)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        """diffusers' `from_pretrained` (a local folder or a Hub repo id), which also loads the folders of diffusers'
        `ScoreSdeVePipeline`, `DDPMPipeline`, `DDIMPipeline` and `PNDMPipeline` (`HUB_LAYOUTS`): their scheduler
        becomes ours (`SCHEDULER_SWAPS`) and `data_range` theirs, unless `scheduler` or `data_range` is passed. A
        folder of any other diffusers pipeline is an error naming the supported ones."""
        download = {key: kwargs[key] for key in _DOWNLOAD_KWARGS if key in kwargs}
        index = cls.load_config(pretrained_model_name_or_path, **download)
        kwargs.update(cls._hub_layout_kwargs(pretrained_model_name_or_path, index, kwargs, download))
        cls._check_local_weights(pretrained_model_name_or_path, index, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _check_local_weights(cls, path, index: dict, kwargs: dict) -> None:
        """A local folder whose model component (in model_index.json's `index`) has a config but no weights is an
        error naming the safetensors file expected, rather than diffusers' request for a pickled
        ``diffusion_pytorch_model.bin``."""
        if not os.path.isdir(path):
            return  # a Hub id: diffusers downloads and reports
        for name in index:
            folder = os.path.join(path, name)
            if name.startswith("_") or name in kwargs or not os.path.isfile(os.path.join(folder, "config.json")):
                continue
            if not any(file.endswith(".safetensors") or file.endswith(".safetensors.index.json") for file in os.listdir(folder)):
                raise FileNotFoundError(
                    f"{folder} has a config.json but no weights: expected diffusion_pytorch_model.safetensors (only "
                    f"safetensors are loaded, never pickles). Save the {name} with `save_pretrained` (safetensors by "
                    f"default), or pass {name}=... to from_pretrained."
                )

    @classmethod
    def _hub_layout_kwargs(cls, path, index: dict, kwargs: dict, download: dict) -> dict:
        """The `scheduler` and `data_range` arguments that load a `HUB_LAYOUTS` folder (model_index.json's `index`);
        none for our own folders. `download` holds the download arguments of `from_pretrained`."""
        name = index.get("_class_name")
        if name not in HUB_LAYOUTS:
            if isinstance(name, str) and name in dir(diffusers):  # (dir: no import of that pipeline's code)
                ours = "the score-SDE pipelines (ScoreSdePCPipeline, ScoreSdeODEPipeline, ScoreSdeLikelihoodPipeline, ...)"
                raise ValueError(
                    f"{path} holds a {name} (model_index.json's _class_name), which {cls.__name__} cannot load. "
                    f"Supported: folders of {ours} and of diffusers' {', '.join(HUB_LAYOUTS)}."
                )
            return {}  # one of ours (or a subclass's): saved with its own scheduler and data range
        extra = {} if "data_range" in kwargs else {"data_range": HUB_LAYOUTS[name]}
        scheduler_name = (index.get("scheduler") or [None, None])[1]
        if "scheduler" not in kwargs and scheduler_name in SCHEDULER_SWAPS:
            extra["scheduler"] = SCHEDULER_SWAPS[scheduler_name].from_pretrained(path, subfolder="scheduler", **download)
        elif "scheduler" not in kwargs and not hasattr(scoresde_diffusers.schedulers, str(scheduler_name)):
            raise ValueError(
                f"{path} is a {name} folder with a {scheduler_name} scheduler; {cls.__name__} converts the schedulers "
                f"{', '.join(SCHEDULER_SWAPS)} (or loads one of ours). Pass scheduler=... to choose one."
            )
        return extra

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """diffusers' `from_pipe`: this pipeline made of another's components and config (``data_range``,
        ``num_levels``), e.g. ``ScoreSdeODEPipeline.from_pipe(pc_pipe)``. The score model carries over whatever its
        class (diffusers keeps a model only when its class is the one the signature names, and ours names none),
        and so does its dtype unless ``dtype`` (or its older name ``torch_dtype``) says otherwise (diffusers casts to
        float32 by default, which would silently turn a float64 or float16 pipeline into a float32 one)."""
        expected, _ = cls._get_signature_keys(cls)
        components = {name: c for name, c in pipeline.components.items() if name in expected and name not in kwargs}
        # diffusers 0.40 renamed `torch_dtype` to `dtype` (the old name now warns): either spelling is passed on under
        # the installed diffusers' name.
        keyword = "dtype" if tuple(int(part) for part in diffusers.__version__.split(".")[:2]) >= (0, 40) else "torch_dtype"
        if "torch_dtype" in kwargs or "dtype" in kwargs:
            if "torch_dtype" in kwargs and "dtype" in kwargs:
                raise ValueError("from_pipe got both `dtype` and `torch_dtype`; pass one (they are the same setting).")
            dtype = kwargs.pop("dtype") if "dtype" in kwargs else kwargs.pop("torch_dtype")
            return super().from_pipe(pipeline, **components, **{keyword: dtype}, **kwargs)
        # The dtype is the one the models already have: nothing is cast, so diffusers' warning about casting with
        # `to()` would be about a cast that does not happen.
        cast_warnings = diffusers.utils.logging.get_logger("diffusers.models.modeling_utils")
        level = cast_warnings.level
        cast_warnings.setLevel(diffusers.utils.logging.ERROR)
        try:
            return super().from_pipe(pipeline, **components, **{keyword: pipeline.dtype}, **kwargs)
        finally:
            cast_warnings.setLevel(level)

    # ------------------------------------------------------------------ configuration
    def register_data_range(self, data_range: Sequence[float] = DEFAULT_DATA_RANGE, num_levels: int = DEFAULT_NUM_LEVELS) -> None:
        """Validate `data_range` and `num_levels` and store them in the pipeline config (saved in model_index.json)."""
        self.register_to_config(data_range=check_data_range(data_range), num_levels=check_num_levels(num_levels))

    @property
    def data_center(self) -> float:
        """The centre of `data_range`: the pipelines' estimate of the data's mean, where the VE prior is centred
        (a VE SDE keeps the data's mean: p_1 has mean E[x_0], see `SDE.prior_mean`)."""
        low, high = self.data_range
        return 0.5 * (low + high)

    @property
    def num_levels(self) -> int:
        """The number of values one entry of the data takes, evenly spaced over `data_range`: 256 for 8-bit images
        (also when the pipeline registered none), 17 for scikit-learn's 8x8 digits."""
        value = self.config.get("num_levels", None)
        return int(value) if value is not None else DEFAULT_NUM_LEVELS

    @property
    def data_range(self) -> Tuple[float, float]:
        """(low, high): the range of the model's data; ``[-1, 1]`` when the pipeline registered none."""
        value = self.config.get("data_range", None)
        return tuple(value) if value is not None else DEFAULT_DATA_RANGE

    def check_scheduler(self, scheduler=None, required: type = ScoreSdeSchedulerMixin) -> None:
        """A ValueError unless `scheduler` (default: the pipeline's) is a `required` scheduler: any score-SDE
        scheduler for the ODE-based pipelines, `ScoreSdePCSchedulerMixin` for a predictor-corrector loop."""
        scheduler = self.scheduler if scheduler is None else scheduler
        if not isinstance(scheduler, required):
            if required is ScoreSdeSchedulerMixin:
                allowed = "VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler, ScoreSdeDPMSolverMultistepScheduler, ScoreSdeHeunScheduler"
            else:
                allowed = "VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler; ODE schedulers go with ScoreSdeODEPipeline"
            raise ValueError(f"{type(self).__name__} needs a {required.__name__} scheduler ({allowed}), got {type(scheduler).__name__}.")
        # A model that records the SDE it was trained under (our exact and trained models do) must be sampled under
        # that SDE: a VP model under a VE scheduler returns samples of +-hundreds, with nothing to say why.
        model_sde = getattr(getattr(self, "unet", None), "config", {}).get("sde")
        if isinstance(model_sde, str) and model_sde != scheduler.sde_name:
            raise ValueError(
                f"The model was trained under the {model_sde!r} SDE (its config's `sde`), but the scheduler "
                f"{type(scheduler).__name__} samples the {scheduler.sde_name!r} SDE; use the scheduler of the "
                f"{model_sde!r} SDE (VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler) or an ODE scheduler with "
                f"sde_type={model_sde!r}."
            )

    @staticmethod
    def check_output_type(output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    # ------------------------------------------------------------------ shapes
    def sample_shape(self, batch_size: int) -> Tuple[int, ...]:
        """(B, C, H, W) from the model's `in_channels` and `sample_size`, or (B, D) for vector models."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        config = self.unet.config
        size = getattr(config, "sample_size", None)
        if size is not None:
            height, width = (size, size) if isinstance(size, int) else tuple(size)
            return (int(batch_size), config.in_channels, height, width)
        if getattr(config, "dim", None) is not None:
            return (int(batch_size), config.dim)
        raise ValueError("The model's config has neither `sample_size` (images) nor `dim` (vectors): cannot tell the sample shape.")

    def check_sample(
        self, sample: torch.Tensor, batch_size: Optional[int] = None, name: str = "sample", allow_integer: bool = False
    ) -> None:
        """A clear error, naming the argument `name`, when `sample` is not a finite floating-point tensor (integers
        too when `allow_integer`, e.g. 8-bit images) of the shape the model expects (and `batch_size` rows)."""
        expected = self.sample_shape(1)[1:]
        if not isinstance(sample, torch.Tensor):
            raise ValueError(f"Expected a torch.Tensor of shape (B, {', '.join(map(str, expected))}); got {type(sample).__name__}.")
        if sample.ndim < 1 or tuple(sample.shape[1:]) != expected:
            what = "channels and size" if len(expected) == 3 else "dimension"
            raise ValueError(
                f"Expected samples of shape (B, {', '.join(map(str, expected))}) for this model (its {what}); "
                f"got {tuple(sample.shape)}."
            )
        if batch_size is not None and sample.shape[0] != batch_size:
            raise ValueError(f"Expected {batch_size} samples (batch_size), got {sample.shape[0]} in a tensor of shape {tuple(sample.shape)}.")
        if not (sample.is_floating_point() or allow_integer):
            raise ValueError(
                f"{name} must be a floating-point tensor, got dtype {sample.dtype}: the sampler's arithmetic would be "
                f"done in integers. Convert it with `.float()`."
            )
        if sample.is_floating_point() or sample.is_complex():
            check_finite(sample, name, f"pass finite values as `{name}`.")

    @staticmethod
    def check_generator(generator, batch_size: int) -> None:
        """A list of generators must have one generator per sample, as in diffusers' pipelines."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} generators but batch_size is {batch_size}: pass one "
                f"generator per sample, or a single generator."
            )

    def prepare_latents(self, batch_size: int, dtype: torch.dtype, device: torch.device, generator, latents, scheduler=None):
        """The prior sample x_1 = `prior_mean` + `init_noise_sigma` * z, with z drawn here or given as `latents`
        (standard normal); the prior's mean is the scheduler's ``prior_mean`` of the pipeline's `data_mean`."""
        scheduler = self.scheduler if scheduler is None else scheduler
        shape = self.sample_shape(batch_size)
        self.check_generator(generator, shape[0])
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            self.check_sample(latents, batch_size, name="latents")
            latents = latents.to(device=device, dtype=dtype)
        return latents * scheduler.init_noise_sigma + scheduler.prior_mean(self.data_mean(scheduler, dtype, device))

    def data_mean(self, scheduler=None, dtype: torch.dtype = torch.float32, device=None) -> Union[float, torch.Tensor]:
        """The data's mean E[x_0] that centres the prior (`scheduler.prior_mean`). The centre of `data_range`,
        unless the prior depends on it (`scheduler.data_mean_matters`: a VE SDE keeps the data's mean at t = 1,
        and with a sigma_max of the data's size, e.g. score_sde's largest-distance rule on low-dimensional data,
        a mean off by d costs d^2 / (2 sigma_max^2) nats per entry). Then the model says where the data is:
        Tweedie's E[x_0 | x_1 = c] at the prior's centre c (`scheduler.get_denoised`; Efron 2011, sec. 2),
        which is E[x_0] up to Var[x_0] / (sigma_max^2 + Var[x_0]) of c's offset from it. One evaluation
        on one sample, shared by the batch (so a sample depends on its own latents only); clamped to
        `data_range`; a tensor of one sample's shape with a batch dimension of 1."""
        scheduler = self.scheduler if scheduler is None else scheduler
        if not scheduler.data_mean_matters(self.data_range):
            return self.data_center
        centre = torch.full(self.sample_shape(1), float(scheduler.prior_mean(self.data_center)), device=device, dtype=dtype)
        t = torch.full((1,), float(scheduler.T), device=device, dtype=dtype)
        model_output = self.call_model(centre, scheduler.t_to_timestep(t), scheduler)
        estimate = scheduler.get_denoised(model_output.to(dtype), centre, t)
        check_finite(estimate, "the model's E[x_0 | x_1] at the prior's centre", "check the model's weights and dtype, and that it was trained up to t = 1.")
        low, high = self.data_range
        return estimate.clamp(low, high)

    # ------------------------------------------------------------------ the model
    @property
    def nfe(self) -> int:
        """Number of score-model evaluations since the last `reset_nfe` (the last call of the pipeline)."""
        return getattr(self, "_nfe", 0)

    def reset_nfe(self) -> None:
        self._nfe = 0

    def model_dtype(self) -> torch.dtype:
        """The dtype of the model's weights. Read off its first floating-point tensor: diffusers' `ModelMixin.dtype`
        walks every submodule, about a millisecond per call, which is 10% of a small UNet's step on a CPU."""
        for tensor in itertools.chain(self.unet.parameters(), self.unet.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return self.unet.dtype

    def call_model(self, sample: torch.Tensor, timestep: torch.Tensor, scheduler=None) -> torch.Tensor:
        """The raw model output at (`sample`, model `timestep`), as diffusers' loops call a UNet; counts one evaluation."""
        scheduler = self.scheduler if scheduler is None else scheduler
        model_input = scheduler.scale_model_input(sample, timestep)
        if isinstance(timestep, torch.Tensor) and timestep.is_floating_point():
            timestep = timestep.to(device=sample.device, dtype=self.model_dtype())
        model_output = self.unet(model_input, timestep).sample
        self._nfe = self.nfe + 1
        return model_output

    def model_score(self, sample: torch.Tensor, t: torch.Tensor, conditioning: Optional[Conditioning] = None) -> torch.Tensor:
        """grad log p_t(sample) from the model, at continuous times `t` of shape (B,), passed through
        `conditioning.condition_score` when a `Conditioning` is given; counts one evaluation."""
        timestep = self.scheduler.t_to_timestep(t)
        model_output = self.call_model(sample, timestep)
        score = self.scheduler.get_score(model_output.to(sample.dtype), sample, t)
        return score if conditioning is None else conditioning.condition_score(score, sample, t)

    def conditioned_model_output(self, sample: torch.Tensor, timestep, scheduler=None, generator=None, conditioning: Optional[Conditioning] = None):
        """``(sample, model_output)`` for one scheduler step at the grid's `timestep`: the `conditioning`'s
        `condition_sample` applied to `sample`, then the model called there, its output carrying the conditioning's
        `condition_score` (converted through the scheduler's ``prediction_type`` and back, so the scheduler's step
        uses the conditional score). Without a conditioning this is exactly `call_model`, so unconditional sampling
        is unchanged bit for bit; methods the conditioning does not override are skipped likewise."""
        scheduler = self.scheduler if scheduler is None else scheduler
        hooked_sample = conditioning is not None and conditioning.overrides_sample
        hooked_score = conditioning is not None and conditioning.overrides_score
        if not (hooked_sample or hooked_score):
            return sample, self.call_model(sample, timestep, scheduler)
        dtype = compute_dtype(sample.dtype)
        index = scheduler.index_for_timestep(timestep)
        t = scheduler.timestep_times[index].to(device=sample.device, dtype=dtype).expand(sample.shape[0])
        if hooked_sample:
            sample = conditioning.condition_sample(sample, t, generator)
        model_output = self.call_model(sample, timestep, scheduler)
        if hooked_score:
            x = sample.to(dtype)
            score = conditioning.condition_score(scheduler.get_score(model_output.to(dtype), x, t), x, t)
            model_output = scheduler.score_to_model_output(score, x, t).to(model_output.dtype)
        return sample, model_output

    def step_end_callback(self, callback_on_step_end, i: int, timestep, sample: torch.Tensor, tensor_inputs) -> torch.Tensor:
        """diffusers' ``callback_on_step_end(pipe, i, timestep, callback_kwargs)`` with the tensors named in
        `tensor_inputs`; returns the sample, replaced if the callback returned a new one."""
        if callback_on_step_end is None:
            return sample
        tensors = {"sample": sample}
        outputs = callback_on_step_end(self, i, timestep, {name: tensors[name] for name in tensor_inputs})
        return sample if outputs is None else outputs.pop("sample", sample)

    # ------------------------------------------------------------------ the predictor-corrector loop
    # The one predictor-corrector loop of the library: `ScoreSdePCPipeline` runs it unconditionally and the
    # conditional pipelines run it with their `Conditioning` object, so no pipeline copies it or inherits it from
    # another pipeline (score_sde's controllable_generation.py copies the sampler once per task).
    _callback_tensor_inputs = ["sample"]

    def sampling_scheduler(
        self,
        snr: Optional[float] = None,
        correct_steps: Optional[int] = None,
        predictor: Optional[str] = None,
        corrector: Optional[str] = None,
    ):
        """`self.scheduler`, or, when an argument differs from its config, a `from_config` copy with that value.

        The copy leaves the pipeline's scheduler untouched, so the overrides hold for one call only; the
        scheduler validates them (unknown predictor or corrector names, snr <= 0) with its usual errors.
        """
        self.check_scheduler(required=ScoreSdePCSchedulerMixin)
        if correct_steps is not None and (isinstance(correct_steps, bool) or not isinstance(correct_steps, int) or correct_steps < 0):
            raise ValueError(f"correct_steps must be an integer >= 0, got {correct_steps!r}.")
        overrides = {"snr": snr, "correct_steps": correct_steps, "predictor": predictor, "corrector": corrector}
        overrides = {k: v for k, v in overrides.items() if v is not None and v != self.scheduler.config[k]}
        if not overrides:
            return self.scheduler
        return type(self.scheduler).from_config(self.scheduler.config, **overrides)

    def callback_inputs(self, callback_on_step_end, callback_on_step_end_tensor_inputs: Optional[List[str]]) -> Optional[List[str]]:
        """The tensors handed to `callback_on_step_end`: a diffusers `PipelineCallback` names its own; checked
        against the pipeline's ``_callback_tensor_inputs``."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}, got {unknown}.")
        return callback_on_step_end_tensor_inputs

    @torch.no_grad()
    def pc_loop(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 1000,
        generator=None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: List[str] = ["sample"],
        snr: Optional[float] = None,
        correct_steps: Optional[int] = None,
        predictor: Optional[str] = None,
        corrector: Optional[str] = None,
        latents: Optional[torch.Tensor] = None,
        conditioning: Optional[Conditioning] = None,
    ):
        """Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3), the body of `ScoreSdePCPipeline.__call__`
        (see there for the arguments), conditioned by `conditioning` (None: unconditional): its `condition_sample`
        and `condition_score` at every model evaluation, its `finalize` on the last sample."""
        # 1. Check the arguments before any work: a bad one fails fast with a clear message.
        self.check_output_type(output_type)
        num_inference_steps = check_num_steps(num_inference_steps)
        callback_on_step_end_tensor_inputs = self.callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        scheduler = self.sampling_scheduler(snr=snr, correct_steps=correct_steps, predictor=predictor, corrector=corrector)
        use_predictor = scheduler.config.predictor != "none"  # the "none" predictor takes no step: no score needed
        num_corrections = scheduler.config.correct_steps if scheduler.config.corrector != "none" else 0
        if not use_predictor and num_corrections == 0:
            raise ValueError("predictor and corrector are both 'none' (or correct_steps is 0): there is nothing to sample with.")

        # 2. The prior sample x_1 and the grid.
        device = self._execution_device
        self.reset_nfe()  # before the prior: it may ask the model for the data's mean (`data_mean`)
        sample = self.prepare_latents(batch_size, self.unet.dtype, device, generator, latents, scheduler)
        scheduler.set_timesteps(num_inference_steps, device=device)
        last = num_inference_steps - 1

        # 3. At each time: corrector steps at t_i, then the predictor step t_i -> t_{i+1} (Algorithms 2-3).
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(scheduler.timesteps):
                for _ in range(num_corrections):
                    sample, model_output = self.conditioned_model_output(sample, t, scheduler, generator, conditioning)
                    corrected = scheduler.step_correct(model_output, sample, t, generator=generator)
                    sample = corrected.prev_sample
                if use_predictor:
                    sample, model_output = self.conditioned_model_output(sample, t, scheduler, generator, conditioning)
                    sample = scheduler.step(model_output, t, sample, generator=generator).prev_sample
                elif i == last:
                    sample = corrected.prev_sample_mean  # corrector-only: end on the last step's noise-free mean

                sample = self.step_end_callback(callback_on_step_end, i, t, sample, callback_on_step_end_tensor_inputs)
                progress_bar.update()

        # 4. Output.
        return self.finish(sample, output_type, return_dict, conditioning)

    # ------------------------------------------------------------------ output
    def postprocess(self, sample: torch.Tensor, output_type: str):
        """Turn a final sample into `output_type`: ``pt`` (as is), ``np`` or ``pil`` (scaled from `data_range` to [0, 1])."""
        self.check_output_type(output_type)
        if output_type == "pt":
            return sample
        if output_type == "pil" and sample.ndim != 4:
            raise ValueError("output_type='pil' needs image-shaped samples (B, C, H, W); use 'np' or 'pt' for vectors.")
        low, high = self.data_range
        scaled = ((sample - low) / (high - low)).clamp(0, 1).cpu().float()
        if scaled.ndim == 4:
            scaled = scaled.permute(0, 2, 3, 1)
        array = scaled.numpy()
        return array if output_type == "np" else self.numpy_to_pil(array)

    def finish(self, sample: torch.Tensor, output_type: str, return_dict: bool, conditioning: Optional[Conditioning] = None):
        """The pipeline output of a loop's last `sample`: in the model's dtype, through `conditioning.finalize`
        (e.g. the known pixels of an imputation restored), as `output_type`, with the number of model evaluations."""
        sample = sample.to(self.unet.dtype)
        if conditioning is not None:
            sample = conditioning.finalize(sample)
        images = self.postprocess(sample, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, self.nfe)
        return ScoreSdePipelineOutput(images=images, nfe=self.nfe)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, write_pipeline_file: bool = True, **kwargs):
        """diffusers' `save_pretrained` (model_index.json, one folder per component, safetensors weights), made
        loadable by diffusers' generic loader.

        Args:
            write_pipeline_file (`bool`, defaults to `True`): write ``pipeline.py``, a one-line import of this class,
                and name it in model_index.json's ``_class_name`` (``["pipeline", "ScoreSdePCPipeline"]``), so that
                ``DiffusionPipeline.from_pretrained(path, trust_remote_code=True)`` builds this class, from a local
                folder or a Hub repo (`push_to_hub` uploads both). diffusers executes that file, hence
                ``trust_remote_code``. Loading with a class of ours, ``ScoreSdePCPipeline.from_pretrained(path)``,
                never reads it. `False` writes diffusers' plain layout.
        """
        self._write_pipeline_file = write_pipeline_file
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            del self._write_pipeline_file

    def _writes_pipeline_file(self) -> bool:
        return getattr(self, "_write_pipeline_file", True)

    def save_config(self, save_directory: Union[str, os.PathLike], *args, **kwargs):
        """diffusers' `save_config` (model_index.json; `save_pretrained` calls it before any upload), preceded by
        ``pipeline.py`` for generic loading."""
        if self._writes_pipeline_file():
            os.makedirs(save_directory, exist_ok=True)
            source = _CUSTOM_PIPELINE_TEMPLATE.format(name=type(self).__name__, module=_public_module(type(self)))
            with open(os.path.join(save_directory, CUSTOM_PIPELINE_FILE_NAME), "w", encoding="utf-8") as file:
                file.write(source)
        super().save_config(save_directory, *args, **kwargs)

    def to_json_string(self) -> str:
        """model_index.json's text; ``_class_name`` is [file stem, class name] when ``pipeline.py`` is written."""
        text = super().to_json_string()
        if not self._writes_pipeline_file():
            return text
        config = json.loads(text)
        config["_class_name"] = [_CUSTOM_PIPELINE_STEM, type(self).__name__]
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def _dict_from_json_file(cls, json_file: Union[str, os.PathLike], **kwargs) -> dict:
        """model_index.json as diffusers reads it for this class: a generic-loading ``_class_name`` [file stem,
        class name] is read as the class name, so our own classes never take diffusers' custom-code route (which
        would execute ``pipeline.py``, locally or from the Hub, and need ``trust_remote_code``). Other keywords go
        to diffusers' reader as they come (``dduf_entries`` in diffusers 0.33 to 0.40)."""
        config = super()._dict_from_json_file(json_file, **kwargs)
        name = config.get("_class_name")
        if isinstance(name, (list, tuple)) and len(name) == 2:
            config["_class_name"] = name[1]
        return config


def _public_module(cls) -> str:
    """The shortest importable module that exports `cls` (``scoresde_diffusers`` once re-exported there)."""
    import importlib

    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        name = ".".join(parts[:end])
        try:
            if getattr(importlib.import_module(name), cls.__name__, None) is cls:
                return name
        except ImportError:
            continue
    return cls.__module__
