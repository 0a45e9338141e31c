"""Sample quality vs number of score evaluations (NFE) on exact Gaussian mixtures, for every sampler and SDE.

    python benchmarks/quality_vs_nfe.py            # full run: writes the table into docs/benchmarks.md and a plot
    python benchmarks/quality_vs_nfe.py --quick    # seconds: every sampler once, tiny batches (the test suite)

The model is `GaussianMixtureScoreModel`, the exact score, so every error is the sampler's. Metrics
(`scoresde_diffusers.evaluation.mixture_sample_metrics`): mean exact log-density gap of the samples against true
samples (nats/dim), max per-dimension spread error, mode-weight total variation, each with its sampling-noise floor.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from scoresde_diffusers.evaluation import mixture_sample_metrics  # noqa: E402

GOAL = {"logp_gap": 0.01, "spread": 0.02}

#: Columns of the summary table: sampler-name prefix -> column title.
SUMMARY_COLUMNS = {
    "UniPC-3": "UniPC-3 (ours)",
    "DPM-Solver++(3M)": "DPM-Solver++(3M)",
    "DPM-Solver++(2M)": "DPM-Solver++(2M)+denoise",
    "EDM Heun": "EDM Heun",
    "Euler-Maruyama": "Euler-Maruyama",
    "reverse diffusion": "RD + Langevin",
    "ancestral": "ancestral",
    "Gotta Go Fast": "Gotta Go Fast",
    "diffusers": "diffusers VE (PC)",
}


def samplers(sde_name, quick, ode=None, sde_nfe=None, rtols=None):
    ode = ode or ([10] if quick else [10, 15, 20, 25, 35, 50])
    sde_nfe = sde_nfe or ([20] if quick else [200, 1000])
    rtols = rtols or ([0.3] if quick else [0.1, 0.03])
    out = [
        ("UniPC-3, clipped logSNR, step to 0 (ours, solver=\"unipc_3m\")", "ode", ode, lambda m, s, z, n: common.run_exponential(m, s, z, n)),
        ("DPM-Solver++(3M), clipped logSNR, step to 0", "ode", ode, lambda m, s, z, n: common.run_exponential(m, s, z, n, solver="dpm_solver_3m")),
        ("DPM-Solver++(2M), logSNR, + Tweedie denoise", "ode", ode, lambda m, s, z, n: common.run_exponential(m, s, z, n, solver="dpm_solver_2m", max_noise=None, min_noise=None, final="tweedie")),
        ("EDM Heun, rho = 7", "ode", ode, lambda m, s, z, n: common.run_edm_heun(m, s, z, n)),
        ("Heun (probability flow in t, uniform)", "ode", ode, lambda m, s, z, n: common.run_ode_t(m, s, z, n, "heun")),
        ("Euler-Maruyama (PC pipeline)", "sde", sde_nfe, lambda m, s, z, n: common.run_pc(m, s, z, n, "euler_maruyama")),
        ("reverse diffusion + Langevin (PC pipeline)", "sde", sde_nfe, lambda m, s, z, n: common.run_pc(m, s, z, n, "reverse_diffusion", "langevin")),
        ("ancestral sampling (PC pipeline)", "sde", sde_nfe, lambda m, s, z, n: common.run_pc(m, s, z, n, "ancestral_sampling")),
        ("Gotta Go Fast, adaptive (rtol)", "adaptive", rtols, lambda m, s, z, r: common.run_ggf(m, s, z, r)),
    ]
    if sde_name == "ve":
        out.append(("diffusers ScoreSdeVeScheduler (PC)", "sde", sde_nfe, lambda m, s, z, n: common.run_diffusers_ve(m, s, z, n)))
    return out


def run(quick: bool, out_dir: Path, mixtures=None, sdes=("vp", "subvp", "ve"), ode=None, sde_nfe=None, rtols=None, skip=()):
    torch.set_num_threads(1 if quick else torch.get_num_threads())
    rows = []
    for mixture in mixtures or common.MIXTURES:
        builder, sigma_max = common.MIXTURES[mixture]
        batch = 256 if quick else 20000
        for sde_name in sdes:
            scheduler = common.make_scheduler(sde_name, sigma_max)
            model = builder(scheduler)
            latents = torch.randn(batch, model.config.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
            reference = model.sample_data(5000 if quick else 200_000, generator=torch.Generator().manual_seed(1234))
            reference_logp = model.log_prob(reference)
            for name, kind, settings, fn in samplers(sde_name, quick, ode, sde_nfe, rtols):
                if any(word in name for word in skip):
                    continue
                for setting in settings:
                    start = time.perf_counter()
                    samples, nfe = fn(model, scheduler, latents, setting)
                    metrics = mixture_sample_metrics(model, samples, reference=reference, reference_logp=reference_logp)
                    row = {"mixture": mixture, "sde": sde_name, "sampler": name, "kind": kind, "setting": setting, "nfe": int(nfe), "seconds": time.perf_counter() - start, **metrics}
                    rows.append(row)
                    print(f"{mixture:7s} {sde_name:5s} {name:52s} NFE={nfe:5d} gap={row['logp_gap']:+.4f} spread={row['spread']:.4f} TV={row['mode_tv']:.4f} (floors {row['logp_gap_floor']:.4f} {row['spread_floor']:.4f} {row['mode_tv_floor']:.4f})", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality_vs_nfe.json").write_text(json.dumps(rows, indent=1))
    text = render(rows, quick)
    common.write_section("quality_vs_nfe", text, out_dir / "benchmarks.md" if out_dir != common.DOCS else None)
    plot(rows, out_dir / "quality_vs_nfe.png")
    return rows


def meets_goal(row):
    return abs(row["logp_gap"]) < GOAL["logp_gap"] and row["spread"] < GOAL["spread"] and row["mode_tv"] <= 2 * row["mode_tv_floor"] + 0.005


def render(rows, quick):
    lines = [
        "### Quality vs NFE on exact mixtures" + (" (quick mode: tiny batches, numbers meaningless)" if quick else ""),
        "",
        "Goal (issue 7): |log-density gap| < 0.01 nats/dim, spread error < 2%, mode TV at the noise floor (here: at most",
        "twice the expected TV of as many true samples, + 0.005), at <= 20 NFE for VP / sub-VP and <= 35 for VE.",
        "",
        "**Smallest NFE meeting the goal** (among the NFE values run; `-` = not reached):",
        "",
        "| mixture | SDE | " + " | ".join(SUMMARY_COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    keys = list(SUMMARY_COLUMNS)
    for mixture in dict.fromkeys(r["mixture"] for r in rows):
        for sde in dict.fromkeys(r["sde"] for r in rows if r["mixture"] == mixture):
            cells = []
            for key in keys:
                ok = [r["nfe"] for r in rows if r["mixture"] == mixture and r["sde"] == sde and r["sampler"].startswith(key) and meets_goal(r)]
                cells.append(str(min(ok)) if ok else "-")
            lines.append(f"| {mixture} | {sde} | " + " | ".join(cells) + " |")
    lines += ["", "**All runs** (floors: the same metric for as many true samples):", "",
              "| mixture | SDE | sampler | NFE | log-density gap | spread | mode TV | gap floor | spread floor | TV floor |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mixture']} | {r['sde']} | {r['sampler']} | {r['nfe']} | {r['logp_gap']:+.4f} | {r['spread']:.4f} | {r['mode_tv']:.4f} | {r['logp_gap_floor']:.4f} | {r['spread_floor']:.4f} | {r['mode_tv_floor']:.4f} |")
    lines += ["", "![quality vs NFE](quality_vs_nfe.png)"]
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixtures = list(dict.fromkeys(r["mixture"] for r in rows))
    sdes = list(dict.fromkeys(r["sde"] for r in rows))
    fig, axes = plt.subplots(len(mixtures), len(sdes), figsize=(5 * len(sdes), 4 * len(mixtures)), squeeze=False)
    for i, mixture in enumerate(mixtures):
        for j, sde in enumerate(sdes):
            ax = axes[i][j]
            sub = [r for r in rows if r["mixture"] == mixture and r["sde"] == sde]
            for name in dict.fromkeys(r["sampler"] for r in sub):
                points = sorted((r["nfe"], max(abs(r["logp_gap"]), 1e-4)) for r in sub if r["sampler"] == name)
                ax.loglog(*zip(*points), marker="o", label=name)
            ax.axhline(0.01, color="k", linestyle="--", linewidth=0.8)
            ax.set_title(f"{mixture}, {sde}")
            ax.set_xlabel("NFE")
            ax.set_ylabel("|log-density gap| (nats/dim)")
    # One legend for the figure: some samplers (diffusers' VE scheduler) appear in some panels only.
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


LOG_LINE = re.compile(
    r"^(?P<mixture>\S+)\s+(?P<sde>\S+)\s+(?P<sampler>.+?)\s+NFE=\s*(?P<nfe>\d+) gap=(?P<logp_gap>\S+) spread=(?P<spread>\S+) "
    r"TV=(?P<mode_tv>\S+) \(floors (?P<logp_gap_floor>\S+) (?P<spread_floor>\S+) (?P<mode_tv_floor>[^)\s]+)\)"
)


def parse_log(text):
    """Rows back from the lines `run` prints (to merge runs that were split or stopped before writing JSON)."""
    rows = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            row = match.groupdict()
            rows.append({k: (v if k in ("mixture", "sde", "sampler") else int(v) if k == "nfe" else float(v)) for k, v in row.items()})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny batches, one setting per sampler (seconds)")
    parser.add_argument("--out_dir", "--out-dir", type=Path, default=None, help="where to write the table, JSON and plot (default docs/, or a temp dir with --quick)")
    parser.add_argument("--mixtures", nargs="*", default=None, choices=list(common.MIXTURES))
    parser.add_argument("--sdes", nargs="*", default=["vp", "subvp", "ve"], choices=["vp", "subvp", "ve"])
    parser.add_argument("--ode_nfe", "--ode-nfe", nargs="*", type=int, default=None, help="NFE values of the ODE samplers")
    parser.add_argument("--sde_nfe", "--sde-nfe", nargs="*", type=int, default=None, help="NFE values of the SDE samplers")
    parser.add_argument("--rtols", nargs="*", type=float, default=None, help="tolerances of the adaptive SDE solver")
    parser.add_argument("--skip", nargs="*", default=(), help="skip samplers whose name contains one of these words")
    parser.add_argument("--render", nargs="*", type=Path, default=None, help="only merge these quality_vs_nfe.json files and write the table and plot")
    args = parser.parse_args(argv)
    if args.render:
        rows = [row for path in args.render for row in (json.loads(path.read_text()) if path.suffix == ".json" else parse_log(path.read_text()))]
        # Rows of split runs, grouped by mixture and SDE (in order of first appearance), samplers in run order.
        mixtures, sdes = list(dict.fromkeys(r["mixture"] for r in rows)), list(dict.fromkeys(r["sde"] for r in rows))
        rows.sort(key=lambda r: (mixtures.index(r["mixture"]), sdes.index(r["sde"])))
        out_dir = args.out_dir or common.DOCS
        common.write_section("quality_vs_nfe", render(rows, False), out_dir / "benchmarks.md")
        plot(rows, out_dir / "quality_vs_nfe.png")
        (out_dir / "quality_vs_nfe.json").write_text(json.dumps(rows, indent=1))
        return
    out_dir = args.out_dir
    if out_dir is None:
        if args.quick:
            import tempfile

            out_dir = Path(tempfile.mkdtemp(prefix="bench_quality_"))
        else:
            out_dir = common.DOCS
    run(args.quick, out_dir, args.mixtures, args.sdes, args.ode_nfe, args.sde_nfe, args.rtols, args.skip)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
