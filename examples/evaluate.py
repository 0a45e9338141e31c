"""Evaluate a trained score-SDE pipeline: FID and KID of its samples against a data set, and bits/dim of a data set
split under its likelihood. Writes a JSON report.

    python examples/evaluate.py --pipeline ./my-pipeline --dataset digits --num-samples 2000 \
        --num-inference-steps 20 --inception-weights ~/weights-inception-2015-12-05-6726825d.pth --out report.json

FID / KID use torchmetrics (``pip install torchmetrics torch-fidelity``). The Inception-v3 weights are never
downloaded: they come from ``--inception-weights`` or the torch hub cache, and a clear error says what to do when
they are in neither. ``--feature-extractor pixels`` (raw pixels, for toy data and tests) or ``module:callable`` (a
function returning a `torch.nn.Module` that maps uint8 images (N, C, H, W) to features (N, F)) replaces Inception.
Bits/dim runs `ScoreSdeLikelihoodPipeline.evaluate` on ``--bpd-samples`` items of the data set (0 to skip).
"""

import argparse
import importlib
import json
import sys
import time

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
        raise ValueError(f"--feature-extractor must be 'pixels' or 'module:callable', got {spec!r}.")
    return getattr(importlib.import_module(module), attr)()


def dataset_tensor(dataset, count: int) -> torch.Tensor:
    """The first `count` items of a map-style data set of tensors (or (tensor, label) pairs) as one tensor."""
    items = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        items.append(item[0] if isinstance(item, (tuple, list)) else item["image"] if isinstance(item, dict) else item)
    return torch.stack(items).float()


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="folder (or Hub id) of a saved score-SDE pipeline")
    parser.add_argument("--dataset", default="digits", help="built-in name, local folder or Hub data set")
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--num-samples", type=int, default=1000, help="generated and real images for FID / KID")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sampler", choices=["ode", "pc", "adaptive"], default="ode")
    parser.add_argument("--num-inference-steps", type=int, default=None)
    parser.add_argument("--solver", default=None, help="ODE solver name (ODE sampler)")
    parser.add_argument("--no-fid", action="store_true", help="skip FID / KID")
    parser.add_argument("--inception-weights", default=None, help="path of the FID Inception-v3 weights file")
    parser.add_argument("--feature-extractor", default=None, help="'pixels' or 'module:callable' instead of Inception")
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--bpd-samples", type=int, default=0, help="data items for bits/dim (0: skip)")
    parser.add_argument("--bpd-rtol", type=float, default=1e-5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="evaluation.json")
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
        from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline

        likelihood = ScoreSdeLikelihoodPipeline.from_pretrained(args.pipeline).to(args.device)
        likelihood.set_progress_bar_config(disable=True)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data.dataset, range(min(args.bpd_samples, len(data.dataset)))), batch_size=args.batch_size)
        result = likelihood.evaluate(loader, rtol=args.bpd_rtol, atol=args.bpd_rtol, generator=torch.Generator().manual_seed(args.seed))
        report.update(bits_per_dim=result.bits_per_dim, bits_per_dim_stderr=result.bits_per_dim_stderr, bpd_num_samples=int(result.per_sample_bits_per_dim.numel()))
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ImportError) as error:
        sys.exit(f"error: {error}")
