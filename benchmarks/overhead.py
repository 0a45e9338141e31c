"""Overhead of the library's scheduler + pipeline per sampling step, against a bare torch loop and against diffusers'
own `ScoreSdeVeScheduler` / `ScoreSdeVePipeline`, with the same model in the same process.

    python benchmarks/overhead.py           # writes the table into docs/benchmarks.md
    python benchmarks/overhead.py --quick   # seconds (the test suite)

All three run VE predictor-corrector sampling (reverse-diffusion predictor + Langevin corrector, one corrector
step: two model calls per step) with a small diffusers `UNet2DModel` on 16x16 images. Timings alternate between
the three loops and keep the best of several repeats (the machine may be shared); the ratio is what matters.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def make_model(quick):
    from diffusers import UNet2DModel

    channels = (8, 16) if quick else (16, 32)
    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=channels, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()


def ours(model, steps, batch):
    from scoresde_diffusers import VESDEScheduler
    from scoresde_diffusers.pipelines import ScoreSdePCPipeline

    pipe = ScoreSdePCPipeline(unet=model, scheduler=VESDEScheduler(sigma_max=50.0))
    pipe.set_progress_bar_config(disable=True)
    return lambda: pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt").images


def diffusers_ve(model, steps, batch):
    from diffusers import ScoreSdeVePipeline, ScoreSdeVeScheduler

    pipe = ScoreSdeVePipeline(unet=model, scheduler=ScoreSdeVeScheduler(sigma_max=50.0, sampling_eps=1e-5))
    pipe.set_progress_bar_config(disable=True)
    return lambda: pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt").images


def bare(model, steps, batch, sigma_min=0.01, sigma_max=50.0, snr=0.16, eps=1e-5):
    """The same sampler written out in plain torch: score_sde's ReverseDiffusionPredictor and LangevinCorrector."""

    @torch.no_grad()
    def run():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, 16, 16, generator=g) * sigma_max
        t = torch.linspace(1, eps, steps, dtype=torch.float64)
        sigmas = (sigma_min * (sigma_max / sigma_min) ** t).float()
        for i in range(steps):
            sigma = sigmas[i].expand(batch)
            score = model(x, sigma).sample
            noise = torch.randn(x.shape, generator=g)
            step = 2 * (snr * noise.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean()) ** 2
            x = x + step * score + (2 * step).sqrt() * noise
            score = model(x, sigma).sample
            prev = sigmas[i + 1] if i + 1 < steps else torch.tensor(0.0)
            g2 = sigmas[i] ** 2 - prev**2
            x_mean = x + g2 * score
            x = x_mean + g2.sqrt() * torch.randn(x.shape, generator=g)
        return x_mean

    return run


def run(quick: bool, out_path: Path = None, repeats: int = None):
    torch.set_num_threads(1 if quick else max(1, torch.get_num_threads()))
    steps, batch = (3, 2) if quick else (10, 8)
    repeats = repeats or (1 if quick else 7)
    model = make_model(quick)
    loops = {"bare torch loop": bare(model, steps, batch), "scoresde_diffusers (VESDEScheduler + ScoreSdePCPipeline)": ours(model, steps, batch),
             "diffusers (ScoreSdeVeScheduler + ScoreSdeVePipeline)": diffusers_ve(model, steps, batch)}
    for fn in loops.values():
        fn()  # warm-up
    best = {name: float("inf") for name in loops}
    for _ in range(repeats):
        for name, fn in loops.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    base = best["bare torch loop"]
    lines = ["### Overhead per sampling step" + (" (quick mode)" if quick else ""), "",
             f"VE predictor-corrector, {steps} steps (2 model calls each), batch {batch} of 3x16x16, UNet2DModel, best of {repeats}, "
             f"CPU, {torch.get_num_threads()} torch thread(s).", "",
             "| loop | seconds / step | relative to bare torch |", "|---|---|---|"]
    for name, seconds in best.items():
        lines.append(f"| {name} | {seconds:.5f} | {seconds / base:.3f} |")
        print(f"{name:60s} {seconds:.5f} s/step  x{seconds / base:.3f}")
    common.write_section("overhead", "\n".join(lines), out_path)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write the section into (default docs/benchmarks.md; a temp file with --quick)")
    args = parser.parse_args(argv)
    out = args.out
    if out is None and args.quick:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="bench_overhead_")) / "benchmarks.md"
    run(args.quick, out)


if __name__ == "__main__":
    main()
