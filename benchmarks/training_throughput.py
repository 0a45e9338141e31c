"""Training throughput (samples/s) of the library's training loop (`examples/train.py`) against a bare torch loop
doing the same work by hand, with the same model in the same process.

    python benchmarks/training_throughput.py           # writes the table into docs/benchmarks.md
    python benchmarks/training_throughput.py --quick   # seconds (the test suite)

Ours is `scoresde_diffusers.training.train`, the function `examples/train.py` calls, run with the default
configuration (VP SDE, continuous DSM loss with lambda = sigma^2, Song et al. 2021 eq. 7; the small DDPM++ UNet;
AdamW with warm-up and cosine decay, gradient clipping at 1; EMA of the weights; the 8x8 digits, batch 128) for a
few steps, with EMA on (the default) and off. Throughput is batch size / median time between consecutive calls of
the loss the trainer builds (a thin timing wrapper around it): one period is one full update, data loading, accelerate's
wrappers, loss, backward, clipping, optimiser and schedule, EMA, the per-step loss gather and logging. Start-up
(imports, `Accelerator`, data, model), the first `--warmup` updates, and the final checkpoint, pipeline, sample grid
and plots are excluded; in-loop checkpoints and sample grids are switched off.

The bare loop is the same update written out in plain torch: the same model class and size (built by the trainer's
own `build_model_and_scheduler`), a random permutation of the same in-memory tensor for batches, the VP
perturbation kernel by hand, ||eps_theta(x_t, t N - 1) - z||^2, `torch.optim.AdamW` with the same
hyper-parameters and a `LambdaLR` warm-up + cosine schedule, `clip_grad_norm_`, and score_sde's EMA (decay
min(0.999, (1 + n) / (10 + n))) with `torch._foreach_lerp_`. Its loss is checked against the library's on the same
batch and noise before timing. Loops alternate and the best of several repeats is kept (the machine may be shared).
Below the table, one EMA update is timed both ways (diffusers' `EMAModel.step`, one `torch._foreach_lerp_`).
"""

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import scoresde_diffusers.training.trainer as trainer  # noqa: E402
from scoresde_diffusers.data import load_training_data  # noqa: E402
from scoresde_diffusers.training import TrainingConfig, build_model_and_scheduler, get_loss  # noqa: E402


def make_config(quick: bool, steps: int, use_ema: bool, output_dir: str) -> TrainingConfig:
    """The default `examples/train.py` run (tiny model and batch with `quick`), minus what happens outside the loop."""
    size = {"width": 8, "train_batch_size": 16} if quick else {}
    return TrainingConfig(
        output_dir=output_dir, max_train_steps=steps, use_ema=use_ema, sample_every=0, checkpointing_steps=10**9,
        num_sample_images=1, num_inference_steps=1, report_to="none", progress_bar=False, **size,
    )


def samples_per_second(stamps, batch_size, warmup):
    """Throughput from the start times of consecutive updates, the first `warmup` updates left out: batch size over
    the median update time, which, unlike the mean, ignores the updates during which another process took the core."""
    durations = torch.tensor(stamps[warmup:]).diff()
    return batch_size / float(durations.median())


# ---------------------------------------------------------------------------- ours: the trainer itself
def ours(quick: bool, steps: int, warmup: int, use_ema: bool):
    """A run of `train` (fresh output folder each time); the start time of every update from its loss calls."""

    def run():
        stamps = []
        build_loss = trainer.get_loss

        def timed_get_loss(*args, **kwargs):
            loss_fn = build_loss(*args, **kwargs)

            def timed(*loss_args, **loss_kwargs):
                stamps.append(time.perf_counter())
                return loss_fn(*loss_args, **loss_kwargs)

            return timed

        trainer.get_loss = timed_get_loss
        try:
            with tempfile.TemporaryDirectory(prefix="bench_train_") as output_dir:
                config = make_config(quick, steps, use_ema, output_dir)
                trainer.train(config)
        finally:
            trainer.get_loss = build_loss
        return samples_per_second(stamps, config.train_batch_size, warmup)

    return run


# ---------------------------------------------------------------------------- the same update by hand
class BareLoop:
    """The trainer's update in plain torch (module docstring); `loss` draws t and z exactly as the library's DSM loss,
    so that with the same generator state both give the same number."""

    def __init__(self, quick: bool, use_ema: bool, steps: int):
        config = make_config(quick, steps, use_ema, tempfile.gettempdir())
        data = load_training_data(config.dataset, num_samples=config.num_samples, seed=config.seed)
        torch.manual_seed(config.seed)
        self.model, self.scheduler = build_model_and_scheduler(config, data)
        self.model.train()
        self.config, self.use_ema = config, use_ema
        self.x = data.dataset.tensors[0]
        sde = self.scheduler.sde
        self.beta_min, self.beta_max, self.n_train = sde.beta_min, sde.beta_max, config.num_train_timesteps
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                           eps=config.adam_epsilon, weight_decay=config.adam_weight_decay)
        warm, total = config.lr_warmup_steps, config.max_train_steps
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: n / max(1, warm) if n < warm else 0.5 * (1 + math.cos(math.pi * (n - warm) / max(1, total - warm)))
        )
        self.ema = [p.detach().clone() for p in self.params] if use_ema else None
        self.generator = torch.Generator().manual_seed(config.seed)

    def loss(self, x0, generator):
        # t ~ U[eps, 1], then z: the library's draw order, so the check below compares like with like.
        eps = self.config.train_eps
        t = eps + (1 - eps) * torch.rand(x0.shape[0], generator=generator)
        z = torch.randn(x0.shape, generator=generator)
        # VP kernel: log m(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min, sigma(t)^2 = 1 - m(t)^2 (Song et al. eq. 29).
        log_mean = (-0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)[:, None, None, None]
        x_t = log_mean.exp() * x0 + (1 - (2 * log_mean).exp()).sqrt() * z
        # An epsilon-predicting model: sigma s_theta + z = z - eps_theta, so lambda = sigma^2 DSM is the DDPM loss.
        return ((self.model(x_t, t * self.n_train - 1).sample - z) ** 2).mean()

    def run(self, steps: int, warmup: int):
        stamps, batch = [], self.config.train_batch_size
        order, position = torch.randperm(len(self.x), generator=self.generator), 0
        for step in range(steps):
            stamps.append(time.perf_counter())
            if position + batch > len(order):
                order, position = torch.randperm(len(self.x), generator=self.generator), 0
            x0 = self.x[order[position : position + batch]]
            position += batch
            loss = self.loss(x0, self.generator)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.optimizer.step()
            self.lr_schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                decay = min(self.config.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(self.ema, self.params, 1 - decay)
            float(loss.detach())  # the trainer reads its loss back every update too
        return samples_per_second(stamps, batch, warmup)


def check_same_loss(bare: BareLoop) -> float:
    """Relative difference between the bare loss and the library's (`get_loss("dsm")`) on one batch and noise."""
    config = bare.config
    library = get_loss(config.loss, bare.scheduler, reduce_mean=config.reduce_mean, eps=config.train_eps)
    x0 = bare.x[: config.train_batch_size]
    bare.model.eval()  # no dropout by default; eval() makes sure
    with torch.no_grad():
        ours_value = library(bare.model, x0, generator=torch.Generator().manual_seed(1)).loss
        bare_value = bare.loss(x0, torch.Generator().manual_seed(1))
    bare.model.train()
    return float((ours_value - bare_value).abs() / bare_value.abs())


def ema_update_seconds(model, repeats: int):
    """Seconds per EMA update of `model`'s weights: diffusers' `EMAModel.step` as the trainer calls it (its default
    per-tensor loop), and the bare loop's single `torch._foreach_lerp_`; best of three batches of `repeats`."""
    from diffusers.training_utils import EMAModel

    params = [p for p in model.parameters() if p.requires_grad]
    ema, shadow = EMAModel(params, decay=0.999), [p.detach().clone() for p in params]

    def lerp():
        with torch.no_grad():
            torch._foreach_lerp_(shadow, params, 0.001)

    best = {}
    for name, fn in (("EMAModel.step", lambda: ema.step(params)), ("_foreach_lerp_", lerp)):
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times.append((time.perf_counter() - start) / repeats)
        best[name] = min(times)
    return best


def run(quick: bool, out_path: Path = None, repeats: int = None, steps: int = None, warmup: int = None):
    torch.set_num_threads(1)
    steps = steps or (4 if quick else 60)
    warmup = warmup or (1 if quick else 5)
    repeats = repeats or (1 if quick else 8)
    bare = {ema: BareLoop(quick, ema, steps) for ema in (False, True)}
    mismatch = check_same_loss(bare[False])
    if mismatch > 1e-5:
        raise RuntimeError(f"The bare loop's loss differs from the library's by {mismatch:.2e} (relative): it is not the same update.")
    loops = {
        ("bare torch loop", False): lambda: bare[False].run(steps, warmup),
        ("bare torch loop", True): lambda: bare[True].run(steps, warmup),
        ("train() (examples/train.py)", False): ours(quick, steps, warmup, use_ema=False),
        ("train() (examples/train.py)", True): ours(quick, steps, warmup, use_ema=True),
    }
    best = {key: 0.0 for key in loops}
    for _ in range(repeats):
        for key, fn in loops.items():
            best[key] = max(best[key], fn())
    config = bare[False].config
    num_params = sum(p.numel() for p in bare[False].model.parameters())
    num_tensors = sum(1 for p in bare[False].model.parameters() if p.requires_grad)
    ema_cost = ema_update_seconds(bare[False].model, 5 if quick else 200)
    update_ms = 1e3 * config.train_batch_size / best[("bare torch loop", False)]
    lines = [
        "### Training throughput" + (" (quick mode)" if quick else ""),
        "",
        f"{type(bare[False].model).__name__} ({num_params / 1e6:.2f}M parameters), {config.dataset} {tuple(bare[False].x.shape[1:])}, batch "
        f"{config.train_batch_size}, VP SDE, DSM loss, AdamW + clipping; {steps} updates per run, the first {warmup} not timed, "
        f"batch / median update time, best of {repeats} runs, "
        f"CPU, {torch.get_num_threads()} thread. Bare loss = library loss on the same batch and noise ({'exactly' if mismatch == 0 else f'to {mismatch:.0e}, relative'}).",
        "",
        "| loop | EMA | samples / s | relative to bare torch (same EMA) |",
        "|---|---|---|---|",
    ]
    footer = [
        "",
        f"One EMA update of the {num_tensors} weight tensors: {1e3 * ema_cost['EMAModel.step']:.2f} ms with diffusers' `EMAModel.step` "
        f"(the trainer's), {1e3 * ema_cost['_foreach_lerp_']:.2f} ms with one `torch._foreach_lerp_` (the bare loop's), "
        f"against {update_ms:.0f} ms for a whole update of the bare loop without EMA.",
    ]
    for (name, ema), value in best.items():
        relative = value / best[("bare torch loop", ema)]
        lines.append(f"| {name} | {'yes' if ema else 'no'} | {value:.1f} | {relative:.3f} |")
        print(f"{name:30s} EMA={'yes' if ema else 'no ':3s} {value:9.1f} samples/s  x{relative:.3f}")
    print(footer[-1])
    common.write_section("training_throughput", "\n".join(lines + footer), out_path)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and batch, a few updates (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write the section into (default docs/benchmarks.md; a temp file with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each loop, the best kept (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="updates per run (default 60)")
    parser.add_argument("--warmup", type=int, default=None, help="first updates of each run left out of the timing (default 5)")
    args = parser.parse_args(argv)
    # `train` asks for INFO logging only if nothing is configured yet: keep accelerate's per-checkpoint lines out.
    logging.basicConfig(level=logging.WARNING)
    out = args.out
    if out is None and args.quick:
        out = Path(tempfile.mkdtemp(prefix="bench_training_")) / "benchmarks.md"
    run(args.quick, out, args.repeats, args.steps, args.warmup)


if __name__ == "__main__":
    main()
