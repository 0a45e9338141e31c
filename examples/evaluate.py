"""Evaluate a trained score-SDE pipeline: FID and KID of its samples against a data set, and bits/dim of a data set
split under its likelihood. Writes a JSON report.

    python examples/evaluate.py --pipeline ./my-pipeline --dataset digits --num_samples 2000 \
        --num_inference_steps 20 --inception_weights ~/weights-inception-2015-12-05-6726825d.pth --out report.json

FID / KID use torchmetrics and torch-fidelity (``pip install "scoresde_diffusers[eval]"``). The Inception-v3 weights are never
downloaded: they come from ``--inception_weights`` or the torch hub cache, and a clear error says what to do when
they are in neither. ``--feature_extractor pixels`` (raw pixels, for toy data and tests) or ``module:callable`` (a
function returning a `torch.nn.Module` that maps uint8 images (N, C, H, W) to features (N, F)) replaces Inception.
The likelihood runs `ScoreSdeLikelihoodPipeline.evaluate` on ``--bpd_samples`` items of the data set (0 to skip):
bits/dim of discrete data dequantized at its own number of levels (``--num_levels``: 256 for 8-bit images, 17 for the
digits), nats/dim of continuous data; the report says which (``num_levels``).
"""

import argparse
import importlib
import json
import math
import sys
import time
from typing import Optional

import torch


class PixelFeatures(torch.nn.Module):
    """Raw pixels as features (scaled to [0, 1]): a stand-in for Inception on toy data and in tests."""

    def forward(self, x):
        return x.float().flatten(1) / 255.0


def feature_extractor(spec: str):
    if spec == "pixels":
        return PixelFeatures()
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--feature_extractor must be 'pixels' or 'module:callable', got {spec!r}.")
    return getattr(importlib.import_module(module), attr)()


def dataset_tensor(dataset, count: int) -> torch.Tensor:
    """The first `count` items of a map-style data set of tensors (or (tensor, label) pairs) as one tensor."""
    items = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        items.append(item[0] if isinstance(item, (tuple, list)) else item["image"] if isinstance(item, dict) else item)
    return torch.stack(items).float()


def data_levels(data, requested: Optional[int]) -> Optional[int]:
    """The number of levels bits/dim dequantizes at: `requested` (0: continuous), else the data set's own
    (`TrainingData.num_levels`: 17 for the digits at their own size, 256 for 8-bit images); vectors are continuous."""
    if requested is not None:
        return requested or None
    return data.num_levels if data.is_image else None


def as_levels(x: torch.Tensor, data_range, num_levels: int) -> Optional[torch.Tensor]:
    """Data in `data_range` as integers in {0, ..., num_levels - 1}, or None if it does not lie on those levels
    (images resized to another resolution are averages of pixels, no longer discrete)."""
    low, high = data_range
    k = (x.double() - low) / (high - low) * (num_levels - 1)
    if (k - k.round()).abs().max() > 1e-4:
        return None
    return k.round().to(torch.int64)


def likelihood_report(args, data) -> dict:
    """Bits/dim of discrete data, uniformly dequantized at its own number of levels (as Song et al. 2021, Section
    4.3 and Table 2, report 8-bit CIFAR-10), or nats/dim of continuous data, whose log-density is not comparable
    with bits/dim."""
    from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline

    likelihood = ScoreSdeLikelihoodPipeline.from_pretrained(args.pipeline).to(args.device)
    likelihood.set_progress_bar_config(disable=True)
    x = dataset_tensor(data.dataset, args.bpd_samples)
    num_levels = data_levels(data, args.num_levels)
    note = None
    levels = as_levels(x, data.data_range, num_levels) if num_levels else None
    if num_levels and levels is None:
        if args.num_levels is not None:
            raise ValueError(
                f"--num_levels {num_levels}: the {args.dataset!r} data does not lie on {num_levels} levels of "
                f"{list(data.data_range)} (resized with --resolution?). Evaluate at the data's own resolution, "
                f"or pass --num_levels 0 to score it as continuous data (nats/dim)."
            )
        note = f"not on the data set's {num_levels} levels at this resolution: scored as continuous data"
        num_levels = None
    if not num_levels and data.is_image:
        # continuous images go in as values of the model's range (integers are dequantized into it by the pipeline)
        (low, high), (model_low, model_high) = data.data_range, likelihood.data_range
        x = (x - low) / (high - low) * (model_high - model_low) + model_low
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(levels if num_levels else x), batch_size=args.batch_size)
    kwargs = {"num_levels": num_levels} if num_levels else {"dequantize": False}
    result = likelihood.evaluate(loader, rtol=args.bpd_rtol, atol=args.bpd_rtol, generator=torch.Generator().manual_seed(args.seed), **kwargs)
    count = int(result.per_sample_bits_per_dim.numel())
    if num_levels:
        return {"bits_per_dim": result.bits_per_dim, "bits_per_dim_stderr": result.bits_per_dim_stderr, "num_levels": num_levels, "bpd_num_samples": count}
    nats = math.log(2)
    report = {"nats_per_dim": result.bits_per_dim * nats, "nats_per_dim_stderr": result.bits_per_dim_stderr * nats, "num_levels": None, "bpd_num_samples": count}
    report["likelihood_note"] = note or "continuous data: a log-density per dimension in nats, not comparable with the bits/dim of discrete data"
    return report


def sample(pipe_path: str, args, count: int) -> torch.Tensor:
    from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline
    from scoresde_diffusers.pipelines.score_sde_fast import ScoreSdeAdaptivePipeline

    cls = {"ode": ScoreSdeODEPipeline, "pc": ScoreSdePCPipeline, "adaptive": ScoreSdeAdaptivePipeline}[args.sampler]
    pipe = cls.from_pretrained(pipe_path).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    kwargs = {}
    if args.sampler != "adaptive" and args.num_inference_steps is not None:
        kwargs["num_inference_steps"] = args.num_inference_steps
    if args.sampler == "ode" and args.solver is not None:
        kwargs["solver"] = args.solver
    chunks, nfe = [], 0
    for start in range(0, count, args.batch_size):
        out = pipe(batch_size=min(args.batch_size, count - start), generator=generator, output_type="pt", **kwargs)
        chunks.append(out.images.float().cpu())
        nfe = out.nfe
    return torch.cat(chunks), nfe, pipe


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default."""


#: (flag, keyword arguments) of every option; each also answers to its dashed spelling (hidden), as before.
OPTIONS = [
    ("--pipeline", dict(required=True, help="Folder (or Hub id) of a saved score-SDE pipeline.")),
    ("--dataset", dict(default="digits", help="Built-in name, local folder or Hub data set of the real images.")),
    ("--split", dict(default="train", help="Split of the data set.")),
    ("--resolution", dict(type=int, default=None, help="Image size of the data set (None: its built-in size / 32).")),
    ("--num_samples", dict(type=int, default=1000, help="Generated and real images for FID / KID.")),
    ("--batch_size", dict(type=int, default=256, help="Images per sampling / likelihood batch.")),
    ("--sampler", dict(choices=["ode", "pc", "adaptive"], default="ode", help="Pipeline that generates the images: probability-flow ODE, predictor-corrector, or adaptive-step SDE.")),
    ("--num_inference_steps", dict(type=int, default=None, help="Sampler steps (None: the pipeline's default; not used by the adaptive sampler).")),
    ("--solver", dict(default=None, help="ODE solver name (ODE sampler; None: the pipeline's default).")),
    ("--no_fid", dict(action="store_true", help="Skip FID / KID.")),
    ("--inception_weights", dict(default=None, help="Path of the FID Inception-v3 weights file (None: the torch hub cache).")),
    ("--feature_extractor", dict(default=None, help="'pixels' or 'module:callable' instead of Inception (None: Inception).")),
    ("--kid_subset_size", dict(type=int, default=1000, help="Subset size of the KID estimate.")),
    ("--bpd_samples", dict(type=int, default=0, help="Data items for the likelihood (0: skip).")),
    (
        "--num_levels",
        dict(
            type=int,
            default=None,
            help="Levels of the discrete data, dequantized uniformly for bits/dim: 256 for 8-bit images, 17 for the "
            "8x8 digits; 0: continuous data, reported in nats/dim. None: the data set's own (17 for digits, 256 for "
            "other images, continuous for vectors; continuous if resizing took the data off its levels).",
        ),
    ),
    ("--bpd_rtol", dict(type=float, default=1e-5, help="Relative and absolute tolerance of the likelihood ODE solve.")),
    ("--device", dict(default="cpu", help="torch device to sample on.")),
    ("--seed", dict(type=int, default=0, help="Seed of the sampling noise and the likelihood's Hutchinson probes.")),
    ("--out", dict(default="evaluation.json", help="Path of the JSON report.")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    for flag, kwargs in OPTIONS:
        parser.add_argument(flag, **kwargs)
        if "_" in flag:
            dest = flag[2:]
            hidden = {k: v for k, v in kwargs.items() if k in ("type", "choices", "action")}
            parser.add_argument(flag.replace("_", "-"), dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **hidden)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    from scoresde_diffusers.data import load_training_data
    from scoresde_diffusers.evaluation import image_distribution_metrics, load_inception_feature

    report = {"pipeline": args.pipeline, "dataset": args.dataset, "split": args.split, "sampler": args.sampler}
    data = load_training_data(args.dataset, resolution=args.resolution, split=args.split, seed=args.seed)
    pipe = None
    if not args.no_fid:
        # Resolve the feature extractor first: a missing Inception file fails before any sampling.
        feature = feature_extractor(args.feature_extractor) if args.feature_extractor else load_inception_feature(args.inception_weights)
        start = time.perf_counter()
        fake, nfe, pipe = sample(args.pipeline, args, args.num_samples)
        real = dataset_tensor(data.dataset, args.num_samples)
        metrics = image_distribution_metrics(real, fake, feature=feature, data_range=pipe.data_range, kid_subset_size=args.kid_subset_size)
        report.update(metrics, num_generated=len(fake), num_real=len(real), nfe_per_sample=nfe, sampling_seconds=time.perf_counter() - start)
    if args.bpd_samples > 0:
        report.update(likelihood_report(args, data))
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ImportError, ValueError) as error:
        sys.exit(f"error: {error}")
