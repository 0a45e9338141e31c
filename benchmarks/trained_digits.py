"""Few-step samplers on a trained network: the digits UNet of ``python examples/train.py`` (issue 13, item 3).

Exact mixtures are smoother than any trained model, so the fast-sampling defaults are also checked here, on the
UNet that the README's main command trains (VP SDE, DDPM-discrete epsilon model, scikit-learn's 8x8 digits).
Every sampler starts from the same prior draws and calls the same UNet:

* ours: `ScoreSdeODEPipeline`'s default (`ScoreSdeDPMSolverMultistepScheduler` from the pipeline's config), and
  the saved scheduler's predictor-corrector sampler at 200 and 1000 steps as reference lines;
* diffusers' `DDIMScheduler`, `DPMSolverMultistepScheduler` (default, and ``use_lu_lambdas=True``) and
  `UniPCMultistepScheduler`, each ``from_config`` of the pipeline's scheduler (our VP config carries the DDPM betas)
  and run in diffusers' own loop.

Samples are scored by a Frechet distance in the 64-d hidden features of a digits classifier trained here (a small
MLP; its held-out accuracy is in the table) against the 1797 real digits; "real" is the distance of a disjoint set of real digits
of the same size, the floor of this estimator at this batch size. Lower is better.

    python benchmarks/trained_digits.py                          # trains the UNet (~5 min on 2 cores), writes docs
    python benchmarks/trained_digits.py --pipeline outputs/digits-vp   # reuse a train.py output folder
    python benchmarks/trained_digits.py --quick                  # seconds; a barely trained UNet, numbers meaningless
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SECTION = "trained_digits"  # + "_ve" for a VE UNet
NFES = (10, 20, 35)
PC_STEPS = (200, 1000)
DIFFUSERS_SCHEDULERS = {
    "diffusers DDIM": ("DDIMScheduler", {}),
    "diffusers DPM-Solver++": ("DPMSolverMultistepScheduler", {}),
    "diffusers DPM-Solver++ (use_lu_lambdas)": ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True}),
    "diffusers UniPC": ("UniPCMultistepScheduler", {}),
}


# ---------------------------------------------------------------------------- the feature distance
def real_digits() -> torch.Tensor:
    """The 1797 digits in [-1, 1], shape (N, 64), as examples/train.py sees them."""
    from scoresde_diffusers.data.datasets import digits

    return torch.stack([item[0] for item in digits().dataset]).reshape(-1, 64)


class DigitFeatures(torch.nn.Module):
    """A 64 -> 128 -> 64 -> 10 MLP classifier of the digits; its 64-d hidden layer is the feature."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU())
        self.head = torch.nn.Linear(64, 10)

    @classmethod
    def trained(cls, seed: int = 0, steps: int = 1500):
        """Trained on the even-indexed digits (held-out accuracy printed on the odd ones), with noise and
        pixel clamping of the inputs so that features of imperfect samples stay meaningful."""
        from sklearn.datasets import load_digits

        x, y = real_digits(), torch.from_numpy(load_digits().target).long()
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = cls()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        train, held_out = slice(0, None, 2), slice(1, None, 2)
        for _ in range(steps):
            index = torch.randint(0, x[train].shape[0], (128,), generator=generator)
            inputs = (x[train][index] + 0.1 * torch.randn(128, 64, generator=generator)).clamp(-1, 1)
            loss = torch.nn.functional.cross_entropy(net.head(net.body(inputs)), y[train][index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            net.accuracy = float((net.head(net.body(x[held_out])).argmax(1) == y[held_out]).float().mean())
        return net.eval()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.reshape(images.shape[0], -1).float().clamp(-1, 1)).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) of two feature sets (rows), in float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr (C_a C_b)^(1/2) = sum of sqrt of the eigenvalues of C_a^(1/2) C_b C_a^(1/2) (symmetric, PSD).
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


# ---------------------------------------------------------------------------- the samplers
def train_pipeline(folder: Path, sde: str, quick: bool) -> Path:
    """Run the README's training command (examples/train.py, its defaults but `sde`) into `folder`."""
    command = [sys.executable, str(common.ROOT / "examples" / "train.py"), "--output_dir", str(folder), "--sde", sde, "--report_to", "none", "--no-progress_bar"]
    if quick:
        command += ["--max_train_steps", "20", "--sample_every", "0", "--checkpointing_steps", "1000", "--num_sample_images", "4", "--num_inference_steps", "5"]
    print("training:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return folder


def diffusers_loop(scheduler, unet, latents: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """diffusers' DDPMPipeline loop with `scheduler` (the same prior draws scaled by its ``init_noise_sigma``)."""
    scheduler.set_timesteps(num_inference_steps)
    sample = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        sample = scheduler.step(unet(scheduler.scale_model_input(sample, t), t).sample, t, sample).prev_sample
    return sample


def samplers(pipe, quick: bool):
    """(name, nfe, function(latents) -> samples) for every sampler under test."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # our VP config's SDE keys are unknown to diffusers' schedulers
    from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline

    ode = ScoreSdeODEPipeline(unet=pipe.unet, scheduler=pipe.scheduler)
    pc = ScoreSdePCPipeline(unet=pipe.unet, scheduler=pipe.scheduler)
    for p in (ode, pc):
        p.set_progress_bar_config(disable=True)
    nfes = (3, 5) if quick else NFES
    # diffusers' DDPM-family schedulers sample VP models only (their betas are our VP SDE's).
    others = DIFFUSERS_SCHEDULERS if pipe.scheduler.config.get("beta_start") is not None else {}
    for nfe in nfes:
        yield "ours: ScoreSdeODEPipeline default", nfe, lambda z, n=nfe: ode(z.shape[0], num_inference_steps=n, latents=z, output_type="pt").images
        for name, (class_name, options) in others.items():
            scheduler_class = getattr(diffusers, class_name)

            def run(z, n=nfe, scheduler_class=scheduler_class, options=options):
                return diffusers_loop(scheduler_class.from_config(pipe.scheduler.config, **options), pipe.unet, z, n)

            yield name, nfe, run
    for steps in (5,) if quick else PC_STEPS:
        yield f"ours: predictor-corrector ({pipe.scheduler.config.predictor}/{pipe.scheduler.config.corrector})", steps, lambda z, n=steps: pc(z.shape[0], num_inference_steps=n, latents=z, output_type="pt").images


# ---------------------------------------------------------------------------- the run
def run(pipeline_path: Path, batch: int, seed: int, quick: bool):
    from scoresde_diffusers.pipelines import ScoreSdePCPipeline

    pipe = ScoreSdePCPipeline.from_pretrained(str(pipeline_path))
    features = DigitFeatures.trained(steps=50 if quick else 1500)
    real = real_digits()
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    real_features = features.features(real)
    rows = [{"sampler": "real digits (disjoint sets)", "nfe": 0, "frechet": frechet_distance(features.features(real[perm[:batch]]), features.features(real[perm[batch : 2 * batch]])), "seconds": 0.0}]
    config = pipe.unet.config
    latents = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=torch.Generator().manual_seed(seed))
    for name, nfe, function in samplers(pipe, quick):
        start = time.perf_counter()
        with torch.no_grad():
            images = function(latents.clone())
        seconds = time.perf_counter() - start
        rows.append({"sampler": name, "nfe": nfe, "frechet": frechet_distance(features.features(images), real_features), "seconds": seconds})
        print(f"{name:45s} NFE {nfe:5d}  Frechet {rows[-1]['frechet']:.3f}  ({seconds:.1f} s)", flush=True)
    return rows, features.accuracy, pipe.scheduler.sde_name


def table(rows, batch: int, accuracy: float, seconds: float) -> str:
    nfes = sorted({r["nfe"] for r in rows if r["sampler"].startswith(("ours: ScoreSdeODE", "diffusers"))})
    names = list(dict.fromkeys(r["sampler"] for r in rows if r["nfe"] in nfes and not r["sampler"].startswith("ours: pred")))
    lines = [
        f"Frechet distance in digit-classifier features (held-out accuracy {accuracy:.3f}), {batch} samples against the "
        f"1797 digits, same UNet and prior draws for every sampler; lower is better. Run time {seconds / 60:.1f} min.",
        "",
        "| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for name in names:
        values = {r["nfe"]: r["frechet"] for r in rows if r["sampler"] == name}
        lines.append(f"| {name} | " + " | ".join(f"{values[n]:.3f}" if n in values else "" for n in nfes) + " |")
    lines.append("")
    for r in rows:
        if r["sampler"].startswith(("ours: pred", "real")):
            lines.append(f"- {r['sampler']}" + (f", {r['nfe']} steps" if r["nfe"] else "") + f": {r['frechet']:.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=None, help="A folder written by examples/train.py (default: train one).")
    parser.add_argument("--sde", default="vp", choices=["vp", "ve"], help="SDE of the UNet trained when --pipeline is not given (diffusers' schedulers run on VP only).")
    parser.add_argument("--batch", type=int, default=512, help="Samples per sampler (the same prior draws for all).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the prior draws and of the real-digit split.")
    parser.add_argument("--quick", action="store_true", help="Seconds: a 20-step UNet, tiny batches (numbers meaningless).")
    parser.add_argument("--out-dir", type=Path, default=common.DOCS, help="Where benchmarks.md and trained_digits.json go.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    batch = 32 if args.quick else args.batch
    with tempfile.TemporaryDirectory() as tmp:
        path = args.pipeline or train_pipeline(Path(tmp) / f"digits-{args.sde}", args.sde, args.quick)
        rows, accuracy, sde_name = run(path, batch, args.seed, args.quick)
    text = table(rows, batch, accuracy, time.perf_counter() - start)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_ve" if sde_name == "ve" else ""
    (args.out_dir / f"trained_digits{suffix}.json").write_text(json.dumps(rows, indent=1))
    common.write_section(SECTION + suffix, f"#### {sde_name.upper()} UNet\n\n" + text, args.out_dir / "benchmarks.md")


if __name__ == "__main__":
    main()
