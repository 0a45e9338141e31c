"""Few-step samplers on a trained network: the digits UNet of ``python examples/train.py`` (issue 13, item 3).

Exact mixtures are smoother than any trained model, so the fast-sampling defaults are also checked here, on the
UNet that the README's main command trains (VP SDE, DDPM-discrete epsilon model, scikit-learn's 8x8 digits).
Every sampler starts from the same prior draws and calls the same UNet:

* ours: `ScoreSdeODEPipeline`'s default (`ScoreSdeDPMSolverMultistepScheduler` from the pipeline's config), the
  same scheduler with `SMOOTH_MODEL_SETTINGS` (UniPC-3 on the logSNR grid, the exact-model choice), and the saved
  scheduler's predictor-corrector sampler at 200 and 1000 steps as reference lines;
* diffusers' `DDIMScheduler`, `DPMSolverMultistepScheduler` (default, and ``use_lu_lambdas=True``) and
  `UniPCMultistepScheduler`, each ``from_config`` of the pipeline's scheduler (our VP config carries the DDPM betas)
  and run in diffusers' own loop.

The yardstick. The 1797 real digits are split once (seeded permutation, ``--seed``) into a reference set (all but
``--batch``) and a held-out set of ``--batch`` real digits. Every sampler's ``--batch`` samples, and the held-out real
digits, are compared with the same reference set in the 128-d last hidden layer of a small digits CNN trained here
(seeded, a few seconds; trained on the even-indexed digits with light noise, its accuracy on the odd-indexed ones is
in the table; ``--features mlp`` gives the earlier, weaker MLP), scaled by one constant so that the training digits'
mean ||f||^2 / d is 1:

* KID x 1000, the primary score: the unbiased estimator of MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3
  (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 3), computed exactly on the full sets. Unlike the Frechet
  distance it has no finite-sample bias, so the held-out real digits score 0 up to noise: that line is the floor,
  and a sampler's KID is how far its samples are from real digits, whatever their diversity. Its +- is a standard
  error from the two-sample delete-one jackknife (Arvesen 1969): the estimate is recomputed leaving out each sample
  and, separately, each reference digit (closed forms in the kernel matrices' row sums, so exact and cheap), and
  se^2 = (m - 1)/m sum_i (theta_(-i) - mean)^2 + (n - 1)/n sum_j (theta_(-j) - mean)^2. It is the standard error of
  the full-set estimate (torchmetrics' ``kid_std`` is instead the spread over subsets of a smaller size).
  The jackknife is conservative (on real digits, 40 random splits gave KIDs of mean 0.3 and spread 7.7 against a
  mean se of 9.9). The reference set is shared by all lines, so differences between them are known better than the
  +- says: the JSON's ``kid_se_samples`` is the samples' part of the se alone (the error given the reference set).
* Paired differences: every sampler starts from the same prior draws and is compared with the same reference, so
  KID(sampler) - KID(default) at the same NFE has a much smaller error than either KID: its jackknife leaves prior
  draw i out of both sample sets at once (and each reference digit out of both), a third table and the JSON's
  ``kid_vs_default`` / ``kid_vs_default_se`` (the PC lines against the default at its largest NFE).
* The Frechet distance (FID's formula) in the same features against the same reference set, a second table. It
  is biased upwards by an amount that grows with the samples' diversity, so it can rank blurry few-step samples
  above better ones; compare it only with the real-digits line's value, not with zero.

    python benchmarks/trained_digits.py                          # trains the UNet (~5 min on 2 cores), writes docs
    python benchmarks/trained_digits.py --pipeline outputs/digits-vp   # reuse a train.py output folder
    python benchmarks/trained_digits.py --quick                  # seconds; a barely trained UNet, numbers meaningless
    python benchmarks/trained_digits.py --max_train_steps 6400    # a 4x longer-trained UNet (~20 min on 2 cores)

A UNet trained for other than examples/train.py's default number of steps (read from the folder's
``training_config.json``) gets its own section and JSON files, suffixed with its step count, so that the README
UNet's tables and a longer-trained one's stand side by side: how a sampler ranks depends on how well the network
has learnt the score (a trained network's few-step error can land closer to, or farther from, the data than its
exact probability-flow solution).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scoresde_diffusers.evaluation import frechet_distance, kid, kid_difference
from scoresde_diffusers.schedulers import SMOOTH_MODEL_SETTINGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REAL = "real digits (held-out set)"
DEFAULT = "ours: ScoreSdeODEPipeline default"
SMOOTH = "ours: SMOOTH_MODEL_SETTINGS"
#: Steps of the converged solution that the ODE accuracy table measures the samplers against.
CONVERGED_NFE = 400
SECTION = "trained_digits"  # + "_ve" for a VE UNet, + "_<steps>steps" for a non-default training length
NFES = (10, 20, 35)
PC_STEPS = (200, 1000)
#: The PC samplers' SDE noise comes from seed + this: a stream other than the prior draws' (with the same seed the
#: first step's noise would equal the starting point).
NOISE_SEED_OFFSET = 10_000
DIFFUSERS_SCHEDULERS = {
    "diffusers DDIM": ("DDIMScheduler", {}),
    "diffusers DPM-Solver++": ("DPMSolverMultistepScheduler", {}),
    "diffusers DPM-Solver++ (use_lu_lambdas)": ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True}),
    "diffusers UniPC": ("UniPCMultistepScheduler", {}),
}


# ---------------------------------------------------------------------------- the yardstick
def real_digits() -> torch.Tensor:
    """The 1797 digits in [-1, 1], shape (N, 64), as examples/train.py sees them."""
    from scoresde_diffusers.data.datasets import digits

    return torch.stack([item[0] for item in digits().dataset]).reshape(-1, 64)


def split_real(batch: int, seed: int):
    """The 1797 digits split once by a seeded permutation: (reference set of all but `batch`, held-out set of `batch`)."""
    real = real_digits()
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    return real[perm[batch:]], real[perm[:batch]]


class DigitFeatures(torch.nn.Module):
    """A digits classifier whose last hidden layer (after its ReLU) is the feature of KID and the Frechet distance.

    ``cnn`` (default): conv 3x3 1->16, conv 3x3 16->32, max-pool to 4x4, conv 3x3 32->64, max-pool to 2x2, a hidden
    layer of 128 features, a linear head to the 10 classes. ``mlp``: the earlier 64 -> 128 -> 64 -> 10 MLP (64
    features)."""

    def __init__(self, kind: str = "cnn"):
        super().__init__()
        nn = torch.nn
        if kind == "cnn":
            self.body = nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(256, 128), nn.ReLU(),
            )  # fmt: skip
            self.head = nn.Linear(128, 10)
        elif kind == "mlp":
            self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
            self.head = nn.Linear(64, 10)
        else:
            raise ValueError(f"unknown feature network {kind!r} (cnn, mlp)")
        self.kind = kind
        self.scale = 1.0  # of the features; set by `trained`

    @classmethod
    def trained(cls, kind: str = "cnn", seed: int = 0, steps: int = None):
        """Trained (seeded, deterministic on the CPU; Adam, cosine-decayed learning rate, batches of 128; the CNN in
        about 4 s of one core) on the even-indexed digits, with Gaussian noise of std 0.1 and
        pixel clamping of the inputs so that features of imperfect samples stay meaningful; ``accuracy`` is on the
        odd-indexed (held-out) digits."""
        from sklearn.datasets import load_digits

        steps = {"cnn": 400, "mlp": 1500}[kind] if steps is None else steps
        x, y = real_digits(), torch.from_numpy(load_digits().target).long()
        x_train, y_train, x_held, y_held = x[0::2], y[0::2], x[1::2], y[1::2]
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # the initial weights
        net = cls(kind)
        optimizer = torch.optim.Adam(net.parameters(), lr={"cnn": 1e-2, "mlp": 3e-3}[kind])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            index = torch.randint(0, x_train.shape[0], (128,), generator=generator)
            inputs = (x_train[index] + 0.1 * torch.randn(128, 64, generator=generator)).clamp(-1, 1)
            loss = torch.nn.functional.cross_entropy(net.head(net.body(inputs)), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            net.accuracy = float((net.head(net.body(x_held)).argmax(1) == y_held).float().mean())
            # The ReLU features' overall scale is arbitrary and KID's kernel is not scale-free: fix it so that the
            # training digits' mean ||f||^2 / d is 1 (x.y / d of order 1, as for Inception features in KID).
            hidden = net.body(x_train).double()
            net.scale = float(hidden.square().sum(1).mean() / hidden.shape[1]) ** -0.5
        return net

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features (float64 rows) of images of any shape (N, ...) with 64 pixels, clamped to [-1, 1] first."""
        return self.scale * self.body(images.reshape(images.shape[0], -1).float().clamp(-1, 1)).double()


# ---------------------------------------------------------------------------- the samplers
def train_pipeline(folder: Path, sde: str, quick: bool, max_train_steps: int = None) -> Path:
    """Run the README's training command (examples/train.py, its defaults but `sde` and `max_train_steps`) into
    `folder`."""
    command = [sys.executable, str(common.ROOT / "examples" / "train.py"), "--output_dir", str(folder), "--sde", sde, "--report_to", "none", "--no-progress_bar"]
    if max_train_steps is not None:
        command += ["--max_train_steps", str(max_train_steps)]
    if quick:
        command += ["--max_train_steps", "20", "--sample_every", "0", "--checkpointing_steps", "1000", "--num_sample_images", "4", "--num_inference_steps", "5"]
    print("training:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return folder


def training_steps(path: Path):
    """The number of training steps recorded in a train.py output folder (None if the folder has no record)."""
    record = Path(path) / "training_config.json"
    return json.loads(record.read_text()).get("max_train_steps") if record.is_file() else None


def section(sde_name: str, steps) -> tuple:
    """(docs section and JSON file stem, heading) of a UNet's tables: one per SDE, and one more per training length
    other than examples/train.py's default."""
    from scoresde_diffusers.training.config import TrainingConfig

    name, heading = SECTION + ("_ve" if sde_name == "ve" else ""), f"#### {sde_name.upper()} UNet"
    if steps is None or steps == TrainingConfig.max_train_steps:
        return name, heading
    return f"{name}_{steps}steps", f"{heading}, {steps} training steps"


def diffusers_loop(scheduler, unet, latents: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """diffusers' DDPMPipeline loop with `scheduler` (the same prior draws scaled by its ``init_noise_sigma``)."""
    scheduler.set_timesteps(num_inference_steps)
    sample = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        sample = scheduler.step(unet(scheduler.scale_model_input(sample, t), t).sample, t, sample).prev_sample
    return sample


def samplers(pipe, quick: bool, seed: int = 0):
    """(name, nfe, function(latents) -> samples) for every sampler under test; the PC lines' SDE noise is seeded
    (`NOISE_SEED_OFFSET` + `seed`), so a rerun gives the same numbers."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # our VP config's SDE keys are unknown to diffusers' schedulers
    from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline

    ode = ScoreSdeODEPipeline.from_pipe(pipe)  # with the pipeline's data_range and num_levels
    smooth = ode_with(pipe, **SMOOTH_MODEL_SETTINGS)
    pc = ScoreSdePCPipeline.from_pipe(pipe)
    for p in (ode, pc):
        p.set_progress_bar_config(disable=True)
    nfes = (3, 5) if quick else NFES
    # diffusers' DDPM-family schedulers sample VP models only (their betas are our VP SDE's).
    others = DIFFUSERS_SCHEDULERS if pipe.scheduler.config.get("beta_start") is not None else {}
    for nfe in nfes:
        yield DEFAULT, nfe, lambda z, n=nfe: ode(z.shape[0], num_inference_steps=n, latents=z, output_type="pt").images
        yield SMOOTH, nfe, lambda z, n=nfe: smooth(z.shape[0], num_inference_steps=n, latents=z, output_type="pt").images
        for name, (class_name, options) in others.items():
            scheduler_class = getattr(diffusers, class_name)

            def run(z, n=nfe, scheduler_class=scheduler_class, options=options):
                return diffusers_loop(scheduler_class.from_config(pipe.scheduler.config, **options), pipe.unet, z, n)

            yield name, nfe, run
    for steps in (5,) if quick else PC_STEPS:
        yield f"ours: predictor-corrector ({pipe.scheduler.config.predictor}/{pipe.scheduler.config.corrector})", steps, lambda z, n=steps: pc(z.shape[0], num_inference_steps=n, latents=z, generator=torch.Generator().manual_seed(NOISE_SEED_OFFSET + seed), output_type="pt").images


def ode_with(pipe, **scheduler_config):
    """`ScoreSdeODEPipeline` of `pipe`'s UNet and data config stepping `ScoreSdeDPMSolverMultistepScheduler` with
    `scheduler_config` (its other settings the defaults)."""
    from scoresde_diffusers.pipelines import ScoreSdeODEPipeline
    from scoresde_diffusers.schedulers import ScoreSdeDPMSolverMultistepScheduler

    ode = ScoreSdeODEPipeline.from_pipe(pipe)
    ode.scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(pipe.scheduler.config, **scheduler_config)
    ode.set_progress_bar_config(disable=True)
    return ode


def ode_accuracy(pipe, latents: torch.Tensor, nfes, converged_nfe: int = CONVERGED_NFE) -> list:
    """How far each ODE sampler's samples lie from the network's converged probability-flow solution from the same
    prior draws: rms over pixels and draws, both integrated to the grid's end (``final_sigmas_type="sigma_min"``:
    the step to zero noise extrapolates from the last few steps, which differ between grids even when converged),
    the converged solution `SMOOTH_MODEL_SETTINGS` at `converged_nfe` steps (its distance to the default's at as
    many steps is the first row)."""
    settings = {DEFAULT: {}, SMOOTH: SMOOTH_MODEL_SETTINGS}

    def sample(config, nfe):
        with torch.no_grad():
            ode = ode_with(pipe, final_sigmas_type="sigma_min", **config)
            return ode(latents.shape[0], num_inference_steps=nfe, latents=latents.clone(), output_type="pt").images

    converged = sample(SMOOTH_MODEL_SETTINGS, converged_nfe)
    difference = float((sample({}, converged_nfe) - converged).square().mean().sqrt())
    rows = [{"sampler": f"{DEFAULT} (converged)", "nfe": converged_nfe, "rms": difference, "draws": latents.shape[0]}]
    for nfe in nfes:
        for name, config in settings.items():
            x = sample(config, nfe)
            rows.append({"sampler": name, "nfe": nfe, "rms": float((x - converged).square().mean().sqrt())})
    return rows


# ---------------------------------------------------------------------------- the run
def score(features: torch.Tensor, reference: torch.Tensor) -> dict:
    """KID x 1000 with its standard error (and the part of it from `features` alone, given the shared reference), and
    the Frechet distance, of `features` against the reference features."""
    value, se, se_samples = kid(features, reference, given_y=True)
    return {"kid": 1000 * value, "kid_se": 1000 * se, "kid_se_samples": 1000 * se_samples, "frechet": frechet_distance(features, reference)}


def run(pipeline_path: Path, batch: int, seed: int, quick: bool, feature_net: str = "cnn"):
    from scoresde_diffusers.pipelines import ScoreSdePCPipeline

    pipe = ScoreSdePCPipeline.from_pretrained(str(pipeline_path))
    features = DigitFeatures.trained(feature_net, steps=50 if quick else None)
    reference, held_out = split_real(batch, seed)
    reference_features = features.features(reference)
    rows = [{"sampler": REAL, "nfe": 0, **score(features.features(held_out), reference_features), "seconds": 0.0}]
    config = pipe.unet.config
    latents = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=torch.Generator().manual_seed(seed))
    sample_features = {}
    for name, nfe, function in samplers(pipe, quick, seed):
        start = time.perf_counter()
        with torch.no_grad():
            images = function(latents.clone())
        seconds = time.perf_counter() - start
        sample_features[name, nfe] = features.features(images)
        rows.append({"sampler": name, "nfe": nfe, **score(sample_features[name, nfe], reference_features), "seconds": seconds})
        r = rows[-1]
        print(f"{name:45s} NFE {nfe:5d}  KID {r['kid']:7.3f} +- {r['kid_se']:.3f}  Frechet {r['frechet']:.3f}  ({seconds:.1f} s)", flush=True)
    # Paired comparisons with our default at the same NFE (its largest for the PC lines): same draws, same reference.
    ours = {nfe: f for (name, nfe), f in sample_features.items() if name == DEFAULT}
    for r in rows[1:]:
        if r["sampler"] != DEFAULT and ours:
            nfe = r["nfe"] if r["nfe"] in ours else max(ours)
            value, se = kid_difference(sample_features[r["sampler"], r["nfe"]], ours[nfe], reference_features)
            r.update({"kid_vs_default": 1000 * value, "kid_vs_default_se": 1000 * se, "kid_vs_default_nfe": nfe})
    ode_rows = ode_accuracy(pipe, latents[:256], (3, 5) if quick else NFES, converged_nfe=20 if quick else CONVERGED_NFE)
    return rows, features.accuracy, pipe.scheduler.sde_name, reference.shape[0], ode_rows


def table(rows, batch: int, accuracy: float, seconds: float, reference_size: int = None, feature_net: str = "cnn", ode_rows=None) -> str:
    reference_size = 1797 - batch if reference_size is None else reference_size
    nfes = sorted({r["nfe"] for r in rows if r["sampler"].startswith(("ours: ScoreSdeODE", "diffusers"))})
    names = list(dict.fromkeys(r["sampler"] for r in rows if r["nfe"] in nfes and not r["sampler"].startswith("ours: pred")))
    network = {"cnn": "CNN", "mlp": "MLP"}.get(feature_net, feature_net)
    lines = [
        f"KID x 1000 (unbiased, cubic polynomial kernel; +- jackknife standard error) in the hidden features of a digits {network} "
        f"(held-out accuracy {accuracy:.3f}), {batch} samples against a reference set of {reference_size} real digits; the same "
        f"UNet and prior draws for every sampler; lower is better, and the real-digits line ({batch} held-out digits against "
        f"the same reference) is the floor. Run time {seconds / 60:.1f} min.",
        "",
    ]

    def grid(fmt, names=names):
        out = ["| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
        for name in names:
            values = {r["nfe"]: r for r in rows if r["sampler"] == name}
            out.append(f"| {name} | " + " | ".join(fmt(values[n]) if n in values else "" for n in nfes) + " |")
        return out

    lines += grid(lambda r: f"{r['kid']:.2f} +- {r['kid_se']:.2f}")
    lines.append("")
    for r in rows:
        if r["sampler"].startswith(("ours: pred", "real")):
            versus = f"; minus the default's at {r['kid_vs_default_nfe']} NFE: {r['kid_vs_default']:+.2f} +- {r['kid_vs_default_se']:.2f}" if "kid_vs_default" in r else ""
            lines.append(f"- {r['sampler']}" + (f", {r['nfe']} steps" if r["nfe"] else "") + f": KID {r['kid']:.2f} +- {r['kid_se']:.2f}{versus}, Frechet {r['frechet']:.3f}")
    given = [r["kid_se_samples"] for r in rows if "kid_se_samples" in r]
    if given:
        lines += [
            "",
            f"The +- includes the reference set's share of the error, common to every line; given the reference, the samples' own "
            f"standard error is {min(given):.2f}-{max(given):.2f} (`kid_se_samples` in the JSON).",
        ]
    others = [name for name in names if name != DEFAULT]
    if any("kid_vs_default" in r for r in rows) and others:
        lines += [
            "",
            f"KID x 1000 minus the default's ({DEFAULT}) at the same NFE, +- the paired jackknife standard error (the same prior "
            "draws and reference set, so the errors the two share cancel); > 0: behind the default:",
            "",
        ]
        lines += grid(lambda r: f"{r['kid_vs_default']:+.2f} +- {r['kid_vs_default_se']:.2f}", others)
    lines += ["", "Frechet distance in the same features against the same reference set (biased at this sample size; lower is better):", ""]
    lines += grid(lambda r: f"{r['frechet']:.3f}")
    if ode_rows:
        lines += ode_accuracy_table(ode_rows)
    return "\n".join(lines)


def ode_accuracy_table(ode_rows) -> list:
    """Markdown lines for `ode_accuracy`'s rows: the converged solution's, then the samplers'."""
    converged, samplers_rows = ode_rows[0], ode_rows[1:]
    lines = [
        "",
        f"How accurately each ODE sampler solves this network's probability-flow ODE: rms distance (per pixel, data in "
        f"[-1, 1]) to the converged solution from the same {converged['draws']} prior draws, both integrated to the grid's end; the "
        f"converged solution is `SMOOTH_MODEL_SETTINGS` at {converged['nfe']} steps, {converged['rms']:.1e} from the default's "
        "at as many.",
        "",
    ]
    nfes = sorted({r["nfe"] for r in samplers_rows})
    lines += ["| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for name in dict.fromkeys(r["sampler"] for r in samplers_rows):
        values = {r["nfe"]: r for r in samplers_rows if r["sampler"] == name}
        lines.append(f"| {name} | " + " | ".join(f"{values[n]['rms']:.4f}" for n in nfes) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=None, help="A folder written by examples/train.py (default: train one).")
    parser.add_argument("--sde", default="vp", choices=["vp", "ve"], help="SDE of the UNet trained when --pipeline is not given (diffusers' schedulers run on VP only).")
    parser.add_argument("--batch", type=int, default=512, help="Samples per sampler (the same prior draws for all).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the prior draws and of the real digits' reference / held-out split.")
    parser.add_argument("--features", default="cnn", choices=["cnn", "mlp"], help="Feature network of KID and the Frechet distance (the MLP is the earlier, weaker one).")
    parser.add_argument("--max_train_steps", type=int, default=None, help="Training steps of the UNet trained when --pipeline is not given (default: examples/train.py's).")
    parser.add_argument("--quick", action="store_true", help="Seconds: a 20-step UNet, tiny batches (numbers meaningless).")
    parser.add_argument("--out_dir", "--out-dir", type=Path, default=common.DOCS, help="Where benchmarks.md and trained_digits.json go.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    batch = 32 if args.quick else args.batch
    with tempfile.TemporaryDirectory() as tmp:
        path = args.pipeline or train_pipeline(Path(tmp) / f"digits-{args.sde}", args.sde, args.quick, args.max_train_steps)
        rows, accuracy, sde_name, reference_size, ode_rows = run(path, batch, args.seed, args.quick, args.features)
        steps = training_steps(path)
    text = table(rows, batch, accuracy, time.perf_counter() - start, reference_size, args.features, ode_rows)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name, heading = section(sde_name, steps)
    (args.out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1))
    (args.out_dir / f"{name}_ode_accuracy.json").write_text(json.dumps(ode_rows, indent=1))
    common.write_section(name, heading + "\n\n" + text, args.out_dir / "benchmarks.md")


if __name__ == "__main__":
    main()
