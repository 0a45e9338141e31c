"""The last step of the 1000-step PC sampler, option by option, over a random mixture family (issue 13, item 5).

The PC schedulers end with a step from the last grid time eps to noise level 0, the scheduler's ``final_step``
(`scoresde_diffusers.sampling.final_steps`). For a Gaussian mode of variance v along a direction and noise level
u = sigma(eps) / m(eps) at eps, r = u^2 / v, the options' variances are (derivation in docs/benchmarks.md):

- ``score_sde`` (the default, score_sde's ``denoise=True``): Tweedie's mean, v / (1 + r): too narrow by ~ r;
- ``keep_noise``: no denoising, v (1 + r): too wide by r;
- ``probability_flow``: an Euler step of the probability-flow ODE in u^2, v (1 + r^2 / (4 (1 + r)));
- ``tweedie_noise``: Tweedie's mean plus fresh noise u z, v (1 + r^2 / (1 + r)).

Each run draws fresh mixtures (`random_mixture`, seed from the clock unless ``--seed``), four members each as in
``benchmarks/mixture_family.py`` (VE at score_sde's sigma_max rule, VE at 2-4 x the rule, VP, sub-VP, parametrisations
drawn; VE's sigma_min is a quarter of the narrowest mode std). Every member is sampled once by `ScoreSdePCPipeline`
with the scheduler's default predictor and corrector for the first N - 1 steps; the last iteration (the corrector at
eps, if any, then the final step) is run from that same state once per option with the same noise, so the options
are compared on paired samples. Scores: `family_sample_metrics` (log-density gap, spread, mode TV, badness as in
``mixture_family.py``), and the paired log-density difference of each option against ``score_sde`` with its
standard error (mean over samples of log p(y_option) - log p(y_score_sde), per dimension; the option's gap is
``score_sde``'s gap minus it). Each option is also applied alone to the reference samples noised to eps (exact
p_eps draws), which measures the last step's own error, paired sample by sample.

    python benchmarks/pc_last_step.py                    # full run, writes docs/benchmarks.md
    python benchmarks/pc_last_step.py --seed 9100 --mixtures 3 --out /tmp/b.md
    python benchmarks/pc_last_step.py --quick            # seconds; tiny members, numbers meaningless
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import mixture_family  # noqa: E402

from scoresde_diffusers.models.mixture_family import family_member, family_sample_metrics, random_mixture  # noqa: E402
from scoresde_diffusers.pipelines import ScoreSdePCPipeline  # noqa: E402

SECTION = "pc_last_step"
OPTIONS = ("score_sde", "keep_noise", "probability_flow", "tweedie_noise")
PC_STEPS = 1000
#: Work per PC evaluation (batch * K * D^2, the exact score's cost), and the batch range.
PC_WORK, MIN_BATCH, MAX_BATCH = 2e7, 500, 4000


def pc_batch(dim: int, modes: int, quick: bool) -> int:
    if quick:
        return 128
    return int(min(MAX_BATCH, max(MIN_BATCH, PC_WORK // (modes * dim * dim))))


def sample_options(member, latents, steps, data_range, seed, options=OPTIONS):
    """`ScoreSdePCPipeline` for the first `steps` - 1 iterations, then the last iteration (corrector at eps, final
    step) once per option from the same state and with the same noise. Returns {option: samples}, nfe."""
    pipe = ScoreSdePCPipeline(unet=member.model, scheduler=member.scheduler, data_range=data_range)
    pipe.set_progress_bar_config(disable=True)
    last = steps - 1
    saved = {}

    def stop_before_last(pipeline, i, t, kwargs):
        if i == last - 1:
            saved["sample"] = kwargs["sample"].clone()
        return None

    pipe(batch_size=latents.shape[0], num_inference_steps=steps, latents=latents, generator=torch.Generator().manual_seed(seed),
         output_type="pt", callback_on_step_end=stop_before_last, callback_on_step_end_tensor_inputs=["sample"])
    nfe = pipe.nfe
    out = {}
    for option in options:
        scheduler = type(member.scheduler).from_config(member.scheduler.config, final_step=option)
        scheduler.set_timesteps(steps)
        generator = torch.Generator().manual_seed(seed + 1)
        t = scheduler.timesteps[last]
        x = saved["sample"]
        corrections = scheduler.config.correct_steps if scheduler.config.corrector != "none" else 0
        for _ in range(corrections):
            x = scheduler.step_correct(pipe.call_model(x, t, scheduler), x, t, generator=generator).prev_sample
        out[option] = scheduler.step(pipe.call_model(x, t, scheduler), t, x, generator=generator).prev_sample
    return out, nfe


def exact_start_options(member, clean, generator, options=OPTIONS):
    """The final step alone: each option applied to exact draws of p_eps made by noising the true samples `clean`
    (x_eps = m x_0 + sigma z), same draws and noise for all options, so that the gap E log p(x_0) - E log p(y) is
    paired sample by sample. Isolates the last step's error from the rest of the sampler's. Returns {option: samples}."""
    scheduler = member.scheduler
    scheduler.set_timesteps(2)
    t_eps = scheduler.timestep_times[-1:].expand(clean.shape[0])
    mean, std = scheduler.sde.marginal_prob(clean, t_eps)
    x = mean + std[:, None] * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    seed = int(torch.randint(2**31, (), generator=generator))
    out = {}
    for option in options:
        scheduler = type(member.scheduler).from_config(member.scheduler.config, final_step=option)
        scheduler.set_timesteps(2)
        t = scheduler.timesteps[-1]
        model_output = member.model(scheduler.scale_model_input(x, t), t).sample
        out[option] = scheduler.step(model_output, t, x, generator=torch.Generator().manual_seed(seed)).prev_sample
    return out


def run(seed: int, num_mixtures: int, quick: bool, steps=PC_STEPS, max_dim=256, corrector=None, log=print):
    rows, members = [], []
    for i in range(num_mixtures):
        mixture_seed = seed + i
        generator = torch.Generator().manual_seed(mixture_seed)
        mixture = random_mixture(generator, max_dim=max_dim)
        reference_model = family_member(mixture, "vp", "continuous_score").model
        batch = pc_batch(mixture.dim, mixture.num_modes, quick)
        reference = mixture_family.sample_in_chunks(reference_model, 4000 if quick else max(20000, 5 * batch), generator)
        latents = torch.randn(batch, mixture.dim, generator=generator, dtype=torch.float64)
        for j, (label, member) in enumerate(mixture_family.members_of(mixture, generator)):
            name = f"{mixture_seed}.{j}"
            description = member.description
            if corrector is not None:
                member.scheduler = type(member.scheduler).from_config(member.scheduler.config, corrector=corrector)
            members.append({"member": name, "label": label, "seed": mixture_seed, **description})
            start = time.time()
            samples, nfe = sample_options(member, latents, steps, mixture.data_range, mixture_seed)
            reference_logp = torch.cat([member.model.log_prob(chunk) for chunk in reference.split(5000)])
            base_logp = member.model.log_prob(samples["score_sde"])
            t_eps = member.scheduler.resolve_sampling_eps()
            sde = member.scheduler.sde
            te = torch.tensor(t_eps, dtype=torch.float64)
            u = float(sde.marginal_std(te) / sde.marginal_mean_coeff(te))
            r_max = u**2 / float(mixture.axis_stds.min()) ** 2
            exact = exact_start_options(member, reference, generator)
            exact_base = torch.cat([member.model.log_prob(chunk) for chunk in exact["score_sde"].split(5000)])
            for option, y in samples.items():
                metrics = family_sample_metrics(member.model, y, reference, reference_logp)
                diff = (member.model.log_prob(y) - base_logp) / mixture.dim
                # The last step alone, from the reference samples noised to eps: gap E log p(x_0) - E log p(y).
                exact_logp = torch.cat([member.model.log_prob(chunk) for chunk in exact[option].split(5000)])
                row = {"member": name, "label": label, "sde": description["sde"], "option": option, "nfe": nfe, "batch": y.shape[0],
                       "dim": mixture.dim, "u_eps": u, "r_max": r_max, "paired_diff": float(diff.mean()),
                       "paired_diff_se": float(diff.std() / math.sqrt(y.shape[0])) if y.shape[0] > 1 else 0.0,
                       "exact_start_gap": float(reference_logp.mean() - exact_logp.mean()) / mixture.dim,
                       "exact_start_diff": float((exact_logp - exact_base).mean()) / mixture.dim, **metrics}
                rows.append(row)
                log(f"{name:8s} {label:28s} D={mixture.dim:3d} K={mixture.num_modes:2d} r_max={r_max:.4f} {option:16s} gap={row['logp_gap']:+.4f} "
                    f"(floor {row['logp_gap_floor']:.4f}) vs score_sde {row['paired_diff']:+.5f}+-{row['paired_diff_se']:.5f} spread={row['spread']:.4f} "
                    f"TV={row['mode_tv']:.4f} badness={row['badness']:.2f} | exact start: gap={row['exact_start_gap']:+.5f} vs score_sde {row['exact_start_diff']:+.5f}")
            log(f"         [{time.time() - start:.1f}s, batch {batch}]")
    return rows, members


def summary(rows, options=OPTIONS):
    """Per (SDE label, option): members passing, worst badness, mean and largest |gap|, members where the option's
    |gap| is the smallest of all options."""
    by_member = {}
    for row in rows:
        by_member.setdefault(row["member"], {})[row["option"]] = row
    best = {m: min(opts, key=lambda o: abs(opts[o]["logp_gap"])) for m, opts in by_member.items()}
    best_exact = {m: min(opts, key=lambda o: abs(opts[o]["exact_start_gap"])) for m, opts in by_member.items()}
    out = []
    labels = list(dict.fromkeys(row["label"] for row in rows))
    for label in labels:
        for option in options:
            group = [r for r in rows if r["label"] == label and r["option"] == option]
            if not group:
                continue
            worst = max(group, key=lambda r: r["badness"])
            out.append({"label": label, "option": option, "passing": sum(r["badness"] <= 1 for r in group), "total": len(group),
                        "worst": worst, "mean_abs_gap": sum(abs(r["logp_gap"]) for r in group) / len(group),
                        "max_abs_gap": max(abs(r["logp_gap"]) for r in group), "best": sum(best[r["member"]] == option for r in group),
                        "best_exact": sum(best_exact[r["member"]] == option for r in group),
                        "max_abs_exact_gap": max(abs(r["exact_start_gap"]) for r in group)})
    return out


def render(rows, members, seed, num_mixtures, quick, command, seconds, steps=PC_STEPS, corrector=None):
    lines = [
        "### The last step of the PC samplers over a random mixture family" + (f", corrector `{corrector}`" if corrector else "")
        + (" (quick run: numbers meaningless)" if quick else ""),
        "",
        f"`{command}` (seed {seed}, {num_mixtures} mixtures, {len(members)} members, {seconds / 60:.1f} min on CPU). Members as in "
        "the family table above (VE at the rule, VE at 2-4 x the rule, VP, sub-VP; sigma_min of VE a quarter of the narrowest "
        f"mode std, at most 0.01). `ScoreSdePCPipeline` with the scheduler's default predictor and "
        + (f"the corrector `{corrector}` instead of the default" if corrector else "corrector") + f", {steps} steps; the "
        "last iteration (corrector at eps, final step) is run from the same state with the same noise once per `final_step`, "
        "so the options are compared on paired samples. Pass rule and badness as in the family table. \"closest\": members "
        "where the option's |log-density gap| is the smallest of the four. \"last step alone\": the final step applied to exact "
        "draws of p_eps (as many as the reference samples), which isolates its own error: the closest count and the largest |gap|.",
        "",
        "| SDE | final step | members passing | closest | worst member | badness | gap (floor) | spread (floor) | mean / max abs gap | last step alone: closest, max abs gap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary(rows):
        w = s["worst"]
        lines.append(f"| {s['label']} | `{s['option']}` | {s['passing']}/{s['total']} | {s['best']}/{s['total']} | {w['member']} | {w['badness']:.2f} "
                     f"| {w['logp_gap']:+.4f} ({w['logp_gap_floor']:.4f}) | {w['spread']:.4f} ({w['spread_floor']:.4f}) | {s['mean_abs_gap']:.4f} / {s['max_abs_gap']:.4f} "
                     f"| {s['best_exact']}/{s['total']}, {s['max_abs_exact_gap']:.4f} |")
    lines += ["", "Per member: log-density gap of each option (nats/dim; paired difference log p(option) - log p(`score_sde`) "
              "+- its standard error in brackets), then the same for the last step alone from exact p_eps draws (gap, paired "
              "difference). r_max = u(eps)^2 / (narrowest mode variance), the largest r of the derivation.", "",
              "| member | SDE | D | K | batch | r_max | " + " | ".join(f"`{o}`" for o in OPTIONS) + " | " + " | ".join(f"alone: `{o}`" for o in OPTIONS) + " |",
              "|---|---|---|---|---|---|" + "---|" * (2 * len(OPTIONS))]
    by_member = {}
    for row in rows:
        by_member.setdefault(row["member"], {})[row["option"]] = row
    info = {m["member"]: m for m in members}
    for name, opts in by_member.items():
        first = opts[OPTIONS[0]]
        cells = [f"{opts[o]['logp_gap']:+.4f}" + ("" if o == "score_sde" else f" ({opts[o]['paired_diff']:+.4f} +- {opts[o]['paired_diff_se']:.4f})") for o in OPTIONS]
        cells += [f"{opts[o]['exact_start_gap']:+.4f}" + ("" if o == "score_sde" else f" ({opts[o]['exact_start_diff']:+.4f})") for o in OPTIONS]
        lines.append(f"| {name} | {first['label']} | {first['dim']} | {info[name]['num_modes']} | {first['batch']} | {first['r_max']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny mixture, small batches, 30 PC steps (seconds)")
    parser.add_argument("--seed", type=int, default=None, help="first mixture seed (default: from the clock, printed)")
    parser.add_argument("--mixtures", type=int, default=None, help="number of mixtures drawn (default 4, 1 with --quick)")
    parser.add_argument("--max_dim", "--max-dim", type=int, default=None, help="largest dimension drawn (default 256, 8 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help=f"PC steps (default {PC_STEPS}, 30 with --quick)")
    parser.add_argument("--corrector", default=None, help="a corrector name instead of each scheduler's default (a section of its own)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file for the section (default docs/benchmarks.md; a temp file with --quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    num_mixtures = args.mixtures or (1 if args.quick else 4)
    max_dim = args.max_dim or (8 if args.quick else 256)
    steps = args.steps or (30 if args.quick else PC_STEPS)
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="bench_last_step_")) / "benchmarks.md" if args.quick else common.DOCS / "benchmarks.md"
    print(f"seed {seed}", flush=True)
    start = time.time()
    rows, members = run(seed, num_mixtures, args.quick, steps=steps, max_dim=max_dim, corrector=args.corrector, log=lambda line: print(line, flush=True))
    command = "python benchmarks/pc_last_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(rows, members, seed, num_mixtures, args.quick, command.strip(), time.time() - start, steps, args.corrector)
    print(text)
    section = SECTION if args.corrector is None else f"{SECTION}_corrector_{args.corrector}"
    common.write_section(section, text, out)
    out.with_name(f"{section}.json").write_text(json.dumps({"seed": seed, "rows": rows, "members": members}, indent=1, default=float))
    return rows, members


if __name__ == "__main__":
    main()
