r"""`ScoreSdeLikelihoodPipeline`: exact log-likelihoods and bits/dim by the probability-flow ODE (Song et al. 2021,
sec. 4.3 and Appendix D.2, eqs. 39-40;
Chen et al. 2018, Theorem 1, for the instantaneous change of variables)."""

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput

from scoresde_diffusers.likelihood import (
    DIVERGENCE_METHODS,
    bits_per_dim,
    dequantize as dequantize_images,
    dequantized_log_likelihood,
)
from scoresde_diffusers.sampling.ode_solvers import DEFAULT_ATOL, DEFAULT_RTOL, is_adaptive
from scoresde_diffusers.utils import check_in_range, check_num_levels, compute_dtype

from ..score_sde_ode.pipeline_score_sde_ode import ProbabilityFlowMixin

#: score_sde's `get_likelihood_fn(eps=1e-5)`: likelihoods are computed from t = 1e-5 whatever the sampling eps.
LIKELIHOOD_EPS = 1e-5
#: Largest data dimension for which ``divergence="auto"`` picks the exact (D backward passes) divergence.
AUTO_EXACT_MAX_DIM = 32


@dataclass
class ScoreSdeLikelihoodOutput(BaseOutput):
    """Output of `ScoreSdeLikelihoodPipeline`; every tensor has one entry per input sample.

    Args:
        log_likelihood (`torch.Tensor`): (B,) log-likelihood in nats: log p_eps(x) of continuous data in the model's
            space, or, for dequantized integer images, the variational lower bound on log P(u) of the discrete
            data (averaged over dequantization draws; see `dequantized_log_likelihood`).
        bits_per_dim (`torch.Tensor`): (B,) ``-log_likelihood / (D ln 2)``; for 8-bit images this is the number the
            paper's tables report (2.99 bits/dim on CIFAR-10 for the deep sub-VP DDPM++ model).
        prior_logp (`torch.Tensor`): (B,) log p_T(z) of the latent (mean over dequantization draws).
        latents (`torch.Tensor`): z = x_T, the end of the probability-flow ODE: (B, ...) with one dequantization
            draw, (num_dequantization_draws, B, ...) with more.
        nfe (`int`): number of model evaluations (forward passes; the backward passes of the divergence come on top).
        stderr (`torch.Tensor`): (B,) standard error of `log_likelihood` due to the Hutchinson probes, from the spread
            of the per-probe estimates (zero for the exact divergence, and with a single probe, where the spread is
            unknown).
        num_levels (`int`, *optional*): the number of levels the discrete data was dequantized at (256 for 8-bit
            images); None for continuous data, whose `log_likelihood` is a log-density in nats (and whose
            `bits_per_dim`, a differential quantity, is not comparable with the bits/dim of discrete data).
    """

    log_likelihood: torch.Tensor
    bits_per_dim: torch.Tensor
    prior_logp: torch.Tensor
    latents: torch.Tensor
    nfe: int
    stderr: torch.Tensor
    num_levels: Optional[int] = None


@dataclass
class ScoreSdeLikelihoodEvaluation(BaseOutput):
    """Result of `ScoreSdeLikelihoodPipeline.evaluate` over a data set.

    Args:
        bits_per_dim (`float`): mean bits/dim over the data set.
        bits_per_dim_stderr (`float`): standard error of that mean from the spread over samples.
        num_samples (`int`): number of samples evaluated.
        nfe (`int`): total number of model evaluations.
        per_sample_bits_per_dim (`torch.Tensor`): (N,) bits/dim of each sample, on the CPU.
        num_levels (`int`, *optional*): the number of levels the data was dequantized at; None for continuous data
            (then `bits_per_dim` is a differential entropy, not comparable with the bits/dim of discrete data).
    """

    bits_per_dim: float
    bits_per_dim_stderr: float
    num_samples: int
    nfe: int
    per_sample_bits_per_dim: torch.Tensor
    num_levels: Optional[int] = None


class ScoreSdeLikelihoodPipeline(ProbabilityFlowMixin, DiffusionPipeline):
    r"""Log-likelihood of data under a score-based model, by the augmented probability-flow ODE.

    The state [x, Delta] follows d[x, Delta]/dt = [f~(x, t), div f~(x, t)] from [x, 0] at t = eps to T, where
    f~ = f - 1/2 g^2 s_theta is the probability-flow drift (eq. 13), and log p_eps(x) = log p_T(x_T) + Delta(T)
    (Chen et al. 2018, Theorem 1; Song et al. 2021, Appendix D.2, eqs. 39-40). The divergence is exact (autograd, one backward pass
    per dimension: small D) or Hutchinson's unbiased estimate with Rademacher or Gaussian probes held fixed along
    the trajectory (`scoresde_diffusers.likelihood`). Integer images in {0, ..., 255} (or {0, ..., num_levels - 1}) are uniformly dequantized
    and the change of variables to the model's `data_range` is accounted for, so bits/dim compare with the
    paper's tables (`scoresde_diffusers.likelihood.dequantized_log_likelihood` derives it).

    Args:
        unet (`ModelMixin`): the score model (as for `ScoreSdeODEPipeline`).
        scheduler (`ScoreSdeSchedulerMixin`): `VESDEScheduler`, `VPSDEScheduler` or `SubVPSDEScheduler`.
        data_range (`Tuple[float, float]`, defaults to ``(-1.0, 1.0)``): range [a, b] of the model's data; integer
            images are mapped onto it, and continuous image data must lie in it.
        num_levels (`int`, defaults to 256): values one data entry takes, evenly spaced over `data_range` (256 for
            8-bit images, 17 for scikit-learn's digits); the ODE scheduler's grid ends at their spacing. Saved in
            model_index.json.
    """

    model_cpu_offload_seq = "unet"

    # ------------------------------------------------------------------ data preparation
    def _is_image_model(self) -> bool:
        return len(self.sample_shape(1)) == 4

    def prepare_data(
        self, data, dequantize: Optional[bool] = None, check_range: Optional[bool] = None, num_levels: Optional[int] = None
    ) -> Tuple[torch.Tensor, bool]:
        """(data as a (B, ...) tensor in the model's layout, whether it is integer data to dequantize).

        Accepts a tensor, a numpy array, a PIL image or a list of them. Numpy arrays and PIL images in (H, W, C)
        or (H, W) layout are moved to (C, H, W). Integer dtypes and PIL images are discrete data in
        {0, ..., `num_levels` - 1} (the pipeline's ``num_levels`` by default; 8-bit: 256 levels) to dequantize unless
        `dequantize` says otherwise; float data is continuous data in the model's space.
        """
        num_levels = check_num_levels(self.num_levels if num_levels is None else num_levels)
        if isinstance(data, PIL.Image.Image):
            data = [data]
        from_pil = isinstance(data, (list, tuple)) and any(isinstance(d, PIL.Image.Image) for d in data)
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise ValueError("No data: got an empty list.")
            if all(isinstance(d, torch.Tensor) for d in data):
                data = torch.stack(list(data))
            else:
                data = np.stack([np.asarray(d) for d in data])
        channels_last = isinstance(data, np.ndarray)
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(np.ascontiguousarray(data))
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"Data must be a torch.Tensor, numpy array, PIL image or a list of them; got {type(data).__name__}.")
        is_integer = from_pil or not (data.is_floating_point() or data.is_complex())
        discrete = is_integer if dequantize is None else bool(dequantize)

        # Layout: the model's (B, C, H, W), from (B, H, W, C) or (B, H, W) arrays.
        expected = self.sample_shape(1)[1:]
        if len(expected) == 3 and tuple(data.shape[1:]) != expected:
            c, h, w = expected
            if channels_last and data.ndim == 4 and tuple(data.shape[1:]) == (h, w, c):
                data = data.permute(0, 3, 1, 2)
            elif data.ndim == 3 and c == 1 and tuple(data.shape[1:]) == (h, w):
                data = data.unsqueeze(1)
        self.check_sample(data, name="data", allow_integer=True)

        data = data.to(torch.float64)
        if discrete:
            if not torch.all(data == data.round()) or data.min() < 0 or data.max() > num_levels - 1:
                raise ValueError(
                    f"Dequantized likelihoods need discrete data: integer values in {{0, ..., {num_levels - 1}}} "
                    f"(num_levels={num_levels}); got values from {float(data.min()):g} to {float(data.max()):g}"
                    f"{'' if torch.all(data == data.round()) else ' (not integers)'}. Pass float images in [0, 1] as "
                    f"round((num_levels - 1) * x), set num_levels to the data's number of levels, or pass continuous "
                    f"data in the model's range with dequantize=False."
                )
        else:
            if self._is_image_model() if check_range is None else check_range:
                check_in_range(data, self.data_range, "data", tolerance=0.0, hint="Pass 8-bit images as integers (uint8) to dequantize them.")
        return data, discrete

    # ------------------------------------------------------------------ the likelihood
    @torch.no_grad()
    def __call__(
        self,
        data: Union[torch.Tensor, np.ndarray, PIL.Image.Image, List],
        dequantize: Optional[bool] = None,
        num_dequantization_draws: int = 1,
        divergence: str = "auto",
        probe_type: str = "rademacher",
        num_probes: int = 1,
        solver: str = "dopri5",
        num_inference_steps: Optional[int] = None,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        sampling_eps: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        check_range: Optional[bool] = None,
        num_levels: Optional[int] = None,
        return_dict: bool = True,
        solver_options: Optional[Dict[str, Any]] = None,
    ) -> Union[ScoreSdeLikelihoodOutput, Tuple]:
        r"""Per-sample log-likelihood, bits/dim, prior term and latent of `data`.

        Args:
            data (`torch.Tensor`, `np.ndarray`, `PIL.Image.Image` or a list of them): a batch. Float data is
                continuous data in the model's space; integer data (uint8, PIL images) is discrete data in
                {0, ..., num_levels - 1}, dequantized.
            dequantize (`bool`, *optional*): force (`True`: the data must be integer-valued in {0, ..., num_levels - 1}) or
                forbid dequantization; by default, dequantize integer dtypes and PIL images.
            num_dequantization_draws (`int`, defaults to 1): uniform noise draws per image, averaged (each draw is
                one more ODE solve, batched together); integer data only.
            divergence (`str`, defaults to ``"auto"``): ``"exact"`` (autograd, D backward passes per evaluation),
                ``"hutchinson"``, or ``"auto"``: exact for D <= 32, Hutchinson above.
            probe_type (`str`, defaults to ``"rademacher"``): Hutchinson probes, ``"rademacher"`` or ``"gaussian"``.
            num_probes (`int`, defaults to 1): Hutchinson probes per sample, averaged; with more than one the output's
                `stderr` gives the estimator's standard error.
            solver (`str`, defaults to ``"dopri5"``): a name in `ODE_SOLVERS` (score_sde uses RK45).
            num_inference_steps (`int`, *optional*): steps of a fixed-step solver (euler, heun, rk4).
            rtol (`float`, defaults to 1e-5): relative tolerance of an adaptive solver; positive.
            atol (`float`, defaults to 1e-5): absolute tolerance of an adaptive solver; positive.
            sampling_eps (`float`, *optional*): the start time eps: the result is log p_eps. By default score_sde's
                likelihood eps 1e-5 (not the scheduler's sampling eps), raised to the first time the model was
                trained on (1/N for a ``discrete`` timestep map: its step 0).
            generator (`torch.Generator`, *optional*): for the dequantization noise and the probes.
            check_range (`bool`, *optional*): require continuous data to lie in `data_range` (a ValueError
                otherwise); by default on for image-shaped models, off for vector models.
            num_levels (`int`, *optional*): the number of levels of discrete data (integers in
                {0, ..., num_levels - 1}): 256 for 8-bit images, 17 for scikit-learn's 8x8 digits; by default the
                pipeline's ``num_levels``. Dequantization and the bits/dim are at this resolution (Theis et al.
                2016); the output says which was used.
            return_dict (`bool`, defaults to `True`): return a `ScoreSdeLikelihoodOutput` instead of a tuple.
            solver_options (`dict`, *optional*): extra keywords for the solver.

        Returns:
            `ScoreSdeLikelihoodOutput`, or the tuple ``(log_likelihood, bits_per_dim, prior_logp, latents, nfe, stderr)``.

        Examples:

        ```py
        >>> import torch
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
        >>> pipe = ScoreSdeLikelihoodPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> x = model.sample_data(4, generator=torch.Generator().manual_seed(0))
        >>> out = pipe(x, divergence="exact")
        >>> exact = model.log_prob(x, t=1e-5)  # the ODE gives log p_eps, eps = 1e-5
        >>> bool((out.log_likelihood - exact).abs().max() < 0.01)
        True

        ```
        """
        # 1. Check the arguments.
        self.check_scheduler()
        if divergence not in DIVERGENCE_METHODS + ("auto",):
            raise ValueError(f"divergence must be one of {DIVERGENCE_METHODS + ('auto',)}, got {divergence!r}.")
        if isinstance(num_dequantization_draws, bool) or not isinstance(num_dequantization_draws, int) or num_dequantization_draws < 1:
            raise ValueError(f"num_dequantization_draws must be an integer >= 1, got {num_dequantization_draws!r}.")
        eps = self.resolve_sampling_eps(sampling_eps, default=LIKELIHOOD_EPS)
        name, ode_solver = self.resolve_solver(solver, num_inference_steps, rtol, atol)
        if not is_adaptive(ode_solver) and num_inference_steps is None:
            raise ValueError(f"Fixed-step solver {name!r} needs num_inference_steps (steps on a uniform grid from eps to 1).")
        num_levels = self.num_levels if num_levels is None else num_levels
        data, discrete = self.prepare_data(data, dequantize, check_range, num_levels)
        if not discrete and num_dequantization_draws != 1:
            raise ValueError("num_dequantization_draws applies to discrete (integer) data only; this data is continuous.")
        batch, dim = data.shape[0], data[0].numel()
        if divergence == "auto":
            divergence = "exact" if dim <= AUTO_EXACT_MAX_DIM else "hutchinson"

        # 2. The points y in the model's space: dequantized draws (draws * B of them) or the data itself.
        device, dtype = self._execution_device, compute_dtype(self.unet.dtype)
        if discrete:
            images = data.to(device).repeat(num_dequantization_draws, *([1] * (data.ndim - 1)))
            y = dequantize_images(images, self.data_range, num_bins=num_levels, generator=generator, dtype=dtype)
        else:
            y = data.to(device=device, dtype=dtype)

        # 3. One solve of the augmented probability-flow ODE from eps to T, with a progress bar over time; the
        # prior term is the sampling pipelines' prior (its mean from `data_mean`).
        self.reset_nfe()
        data_mean = self.data_mean(self.scheduler, dtype, device)
        T = self.scheduler.T
        with self.progress_bar(total=100) as progress_bar:

            def drift(x, t):
                done = min(100, int(100 * (float(t[0]) - eps) / (T - eps)))
                if done > progress_bar.n:
                    progress_bar.update(done - progress_bar.n)
                return self.probability_flow_drift(x, t)

            result = self.scheduler.probability_flow_log_likelihood(
                drift, y, eps, data_mean=data_mean, divergence=divergence, probe_type=probe_type,
                num_probes=num_probes, solver=name, num_steps=num_inference_steps, rtol=rtol, atol=atol,
                generator=generator, **(solver_options or {}),
            )
            progress_bar.update(100 - progress_bar.n)

        # 4. Average the dequantization draws and change variables to the discrete data.
        draws = num_dequantization_draws
        log_likelihood = result.log_likelihood.reshape(draws, batch).mean(0)
        prior_logp = result.prior_logp.reshape(draws, batch).mean(0)
        stderr = result.stderr.reshape(draws, batch).pow(2).sum(0).sqrt() / draws
        if discrete:
            log_likelihood = dequantized_log_likelihood(log_likelihood, dim, self.data_range, num_bins=num_levels)
        bpd = bits_per_dim(log_likelihood, dim)
        latents = result.latent if draws == 1 else result.latent.reshape(draws, batch, *data.shape[1:])

        self.maybe_free_model_hooks()
        output = ScoreSdeLikelihoodOutput(log_likelihood, bpd, prior_logp, latents, self.nfe, stderr, num_levels if discrete else None)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------ whole data sets
    def _batches(self, dataset, batch_size: int, image_column: str) -> Tuple[Iterable, Optional[int]]:
        """Batches of raw data from a `datasets.Dataset`, a torch DataLoader or any iterable of batches."""
        if hasattr(dataset, "column_names") and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            if image_column not in dataset.column_names:
                raise ValueError(f"The dataset has no column {image_column!r}; its columns are {dataset.column_names}.")
            n = len(dataset)
            return ((dataset[start : start + batch_size][image_column]) for start in range(0, n, batch_size)), math.ceil(n / batch_size)

        def unpack(batch):
            if isinstance(batch, dict):
                if image_column not in batch:
                    raise ValueError(f"Batches have no key {image_column!r}; their keys are {sorted(batch)}.")
                return batch[image_column]
            if isinstance(batch, (list, tuple)) and len(batch) > 0 and isinstance(batch[0], torch.Tensor) and batch[0].ndim >= 2:
                return batch[0]  # (images, labels) as torchvision datasets give
            return batch

        total = len(dataset) if hasattr(dataset, "__len__") else None
        return (unpack(batch) for batch in dataset), total

    def evaluate(
        self,
        dataset,
        batch_size: int = 64,
        image_column: str = "image",
        max_samples: Optional[int] = None,
        **call_kwargs,
    ) -> ScoreSdeLikelihoodEvaluation:
        """Mean bits/dim over a data set, with a progress bar over its batches.

        Args:
            dataset: a `datasets.Dataset` (read `batch_size` rows at a time from `image_column`: PIL images, arrays
                or lists), a torch `DataLoader` (batches as tensors, ``(images, labels)`` tuples or dicts with
                `image_column`), or any iterable of such batches.
            batch_size (`int`, defaults to 64): rows per batch for a `datasets.Dataset` (a DataLoader has its own).
            image_column (`str`, defaults to ``"image"``): the column or dict key holding the data.
            max_samples (`int`, *optional*): stop after this many samples.
            call_kwargs: passed to `__call__` (``num_dequantization_draws``, ``divergence``, ``num_probes``,
                ``rtol``, ``generator``, ...).

        Returns:
            `ScoreSdeLikelihoodEvaluation` with the mean bits/dim, its standard error, the sample count, the total
            NFE and the per-sample bits/dim.

        Examples:

        ```py
        >>> import torch, datasets
        >>> from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
        >>> from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline

        >>> scheduler = VPSDEScheduler()
        >>> model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
        >>> pipe = ScoreSdeLikelihoodPipeline(unet=model, scheduler=scheduler)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> points = model.sample_data(6, generator=torch.Generator().manual_seed(0))
        >>> dataset = datasets.Dataset.from_dict({"x": points.tolist()}).with_format("torch")
        >>> result = pipe.evaluate(dataset, batch_size=3, image_column="x", rtol=1e-4, atol=1e-4)
        >>> result.num_samples
        6

        ```
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        batches, total = self._batches(dataset, batch_size, image_column)
        per_sample, nfe, seen = [], 0, 0
        outer_config = dict(getattr(self, "_progress_bar_config", {}))
        with self.progress_bar(total=total if total is not None else float("inf")) as progress_bar:
            # The per-call bars would interleave with this one: silence them while evaluating.
            self.set_progress_bar_config(**{**outer_config, "disable": True})
            try:
                for raw in batches:
                    if max_samples is not None and seen >= max_samples:
                        break
                    data, discrete = self.prepare_data(
                        raw, call_kwargs.get("dequantize"), call_kwargs.get("check_range"), call_kwargs.get("num_levels")
                    )
                    if max_samples is not None:
                        data = data[: max_samples - seen]
                    # prepare_data returns float64 values: pass on whether they are discrete data to dequantize.
                    output = self(data, **{**call_kwargs, "dequantize": discrete})
                    per_sample.append(output.bits_per_dim.detach().cpu())
                    nfe += output.nfe
                    seen += data.shape[0]
                    progress_bar.update()
            finally:
                self._progress_bar_config = outer_config
        if not per_sample:
            raise ValueError("The dataset yielded no samples.")
        values = torch.cat(per_sample).double()
        stderr = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else float("nan")
        return ScoreSdeLikelihoodEvaluation(float(values.mean()), stderr, values.numel(), nfe, values, output.num_levels)
