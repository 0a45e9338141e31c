"""Does the probability-flow ODE at 35 NFE sample a trained network as well as 200-step PC? (issue 13)

Song et al. (2021, sec. 4.3 and Table 2) report the probability-flow ODE a little behind the reverse-time SDE on a
trained network; issue 13 asks that a trained VE digits UNet sample as well with `ScoreSdeODEPipeline`'s default at
35 NFE as with 200-step predictor-corrector. One split of the digits cannot tell: the two samplers' samples are
nearly independent (the SDE draws fresh noise), so their paired KID difference has a standard error of 10-15 (x
1000) where the gap is a few units. This script repeats the comparison of `trained_digits.py` over several seeds,
each a fresh split of the real digits into reference and held-out sets, a fresh set of prior draws and fresh SDE
noise for the PC sampler (seeded from another stream than the draws), for one or more UNets (folders written by examples/train.py, e.g. trained for different numbers of steps):

* per seed: KID x 1000 of the ODE's samples (default scheduler, ``--nfe``), of the saved scheduler's PC samples
  (``--pc_steps``) and of the held-out real digits against the reference set, and the paired difference PC - ODE with
  its jackknife standard error (`scoresde_diffusers.evaluation.kid_difference`); < 0: PC ahead;
* over seeds: the mean difference, +- the seeds' jackknife errors combined (sqrt(sum se^2) / n, as if the seeds were
  independent), and +- the seeds' spread (sample sd / sqrt(n)). The seeds share the UNet, the feature CNN and most of
  the real digits, so neither error is exact; the jackknife is conservative (see trained_digits.py).

    python benchmarks/ode_vs_pc_digits.py --pipeline outputs/digits-ve          # one UNet, 5 seeds (~5 min for VE)
    python benchmarks/ode_vs_pc_digits.py --pipeline a b c --seeds 0 1 2 3 4    # side by side, one row each
    python benchmarks/ode_vs_pc_digits.py --pipeline outputs/digits-ve --quick  # seconds; numbers meaningless
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from scoresde_diffusers.evaluation import kid, kid_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import trained_digits  # noqa: E402

SECTION = "ode_vs_pc_digits"
SEEDS = (0, 1, 2, 3, 4)


def compare(pipeline_path: Path, seeds, batch: int, nfe: int, pc_steps: int, features, log=print) -> dict:
    """The per-seed KIDs and paired differences of one UNet, and their summary over seeds."""
    from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline

    pc = ScoreSdePCPipeline.from_pretrained(str(pipeline_path))
    ode = ScoreSdeODEPipeline.from_pipe(pc)  # with the pipeline's data_range and num_levels
    for pipe in (ode, pc):
        pipe.set_progress_bar_config(disable=True)
    config = pc.unet.config
    per_seed = []
    for seed in seeds:
        reference, held_out = trained_digits.split_real(batch, seed)
        reference_features = features.features(reference)
        latents = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ode_features = features.features(ode(batch, num_inference_steps=nfe, latents=latents.clone(), output_type="pt").images)
            noise = torch.Generator().manual_seed(trained_digits.NOISE_SEED_OFFSET + seed)  # the SDE's, seeded
            pc_features = features.features(pc(batch, num_inference_steps=pc_steps, latents=latents.clone(), generator=noise, output_type="pt").images)
        difference, se = kid_difference(pc_features, ode_features, reference_features)
        row = {
            "seed": seed,
            "ode": 1000 * kid(ode_features, reference_features)[0],
            "pc": 1000 * kid(pc_features, reference_features)[0],
            "real": 1000 * kid(features.features(held_out), reference_features)[0],
            "pc_minus_ode": 1000 * difference,
            "pc_minus_ode_se": 1000 * se,
        }
        log(f"{pipeline_path}  seed {seed}: ODE {row['ode']:7.2f}  PC {row['pc']:7.2f}  real {row['real']:7.2f}  PC - ODE {row['pc_minus_ode']:+7.2f} +- {row['pc_minus_ode_se']:.2f}")
        per_seed.append(row)
    differences = [r["pc_minus_ode"] for r in per_seed]
    n = len(per_seed)
    return {
        "pipeline": str(pipeline_path),
        "sde": pc.scheduler.sde_name,
        "training_steps": trained_digits.training_steps(pipeline_path),
        "predictor": pc.scheduler.config.predictor,
        "corrector": pc.scheduler.config.corrector,
        "seeds": per_seed,
        "ode": statistics.mean(r["ode"] for r in per_seed),
        "pc": statistics.mean(r["pc"] for r in per_seed),
        "real": statistics.mean(r["real"] for r in per_seed),
        "pc_minus_ode": statistics.mean(differences),
        "pc_minus_ode_se": math.sqrt(sum(r["pc_minus_ode_se"] ** 2 for r in per_seed)) / n,
        "pc_minus_ode_spread": statistics.stdev(differences) / math.sqrt(n) if n > 1 else float("nan"),
        "pc_ahead": sum(d < 0 for d in differences),
    }


def table(results, batch: int, nfe: int, pc_steps: int, accuracy: float, seconds: float, quick: bool) -> str:
    seeds = len(results[0]["seeds"])
    lines = [
        f"The probability-flow ODE (`ScoreSdeODEPipeline`'s default, {nfe} NFE) against the saved scheduler's "
        f"predictor-corrector sampler ({pc_steps} steps) on the same prior draws, KID x 1000 in the digits CNN's features "
        f"(held-out accuracy {accuracy:.3f}), {batch} samples against the other {1797 - batch} real digits, averaged over "
        f"{seeds} seeds (each a fresh split, fresh prior draws and fresh SDE noise); PC - ODE < 0: PC ahead. Run time {seconds / 60:.1f} min."
        + (" Quick run: numbers meaningless." if quick else ""),
        "",
        "| UNet | training steps | PC sampler | ODE KID | PC KID | real digits KID | PC - ODE | +- jackknife | +- seeds' spread | seeds with PC ahead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        steps = "?" if r["training_steps"] is None else r["training_steps"]
        lines.append(
            f"| {r['sde'].upper()} | {steps} | {r['predictor']}/{r['corrector']} | {r['ode']:.2f} | {r['pc']:.2f} | {r['real']:.2f} "
            f"| {r['pc_minus_ode']:+.2f} | {r['pc_minus_ode_se']:.2f} | {r['pc_minus_ode_spread']:.2f} | {r['pc_ahead']} of {seeds} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pipeline", type=Path, nargs="+", required=True, help="Folders written by examples/train.py, one table row each.")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="Seeds of the real digits' split, of the prior draws and of the PC sampler's noise.")
    parser.add_argument("--batch", type=int, default=512, help="Samples per sampler and held-out real digits per seed.")
    parser.add_argument("--nfe", type=int, default=35, help="Steps of the ODE's default scheduler.")
    parser.add_argument("--pc_steps", "--pc-steps", type=int, default=200, help="Steps of the predictor-corrector sampler.")
    parser.add_argument("--quick", action="store_true", help="Seconds: tiny batches, few steps, two seeds (numbers meaningless).")
    parser.add_argument("--out_dir", "--out-dir", type=Path, default=common.DOCS, help="Where benchmarks.md and ode_vs_pc_digits.json go.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    batch, nfe, pc_steps, seeds = (32, 3, 5, args.seeds[:2]) if args.quick else (args.batch, args.nfe, args.pc_steps, args.seeds)
    features = trained_digits.DigitFeatures.trained("cnn", steps=50 if args.quick else None)
    results = [compare(path, seeds, batch, nfe, pc_steps, features, log=lambda line: print(line, flush=True)) for path in args.pipeline]
    text = table(results, batch, nfe, pc_steps, features.accuracy, time.perf_counter() - start, args.quick)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{SECTION}.json").write_text(json.dumps(results, indent=1))
    common.write_section(SECTION, text, args.out_dir / "benchmarks.md")
    return results


if __name__ == "__main__":
    main()
