r"""Log-likelihood accuracy vs number of score evaluations (NFE): exact divergence vs Hutchinson, adaptive vs fixed step.

    python benchmarks/likelihood_vs_nfe.py            # full run: table into docs/benchmarks.md, JSON and plot in docs/
    python benchmarks/likelihood_vs_nfe.py --quick    # seconds: one mixture, tiny batch, two settings (the test suite)

`ScoreSdeLikelihoodPipeline` integrates the augmented probability-flow ODE from t = eps to T (the instantaneous
change of variables, Chen et al. 2018; Song et al. 2021, eq. 39 and Appendix D.2):

    log p_eps(x) = log pi(x_T) + \int_eps^T div f~(x_t, t) dt,

with the divergence computed exactly (D backward passes per evaluation) or by Hutchinson's trace estimator
(Hutchinson 1989; Grathwohl et al. 2019, FFJORD) with one Rademacher or Gaussian probe per sample, held fixed
along the trajectory. The model is `GaussianMixtureScoreModel`, the exact score, so every error is the solver's,
the estimator's or the prior's. The reference is the exact log p_eps(x) of the mixture pushed to t = eps (the
pipeline returns log p_eps, eps = 1e-5, not the data density; the two differ by the "eps offset" in the table, which
for VE includes the smoothing by sigma_min = 0.01 that p_t keeps down to t = 0).
Continuous data: no dequantization. All errors are in **nats per dimension**; NFE counts forward model calls (the
backward passes of the divergence come on top, which the seconds column shows).

The error splits exactly into two parts: with the true marginal p_T in place of the prior pi, the ODE would give
log p_eps(x) up to integration and estimator error, so

    error = [log pi(z) - log p_T(z)]  +  [integration + estimator error],     z = x_T the computed latent.

The first term (the prior mismatch) is known in closed form for a mixture and reported on its own: it is the
floor no solver can go below. It is small for VP / sub-VP (p_1 is N(0, I) up to terms in the data times
m(1) = exp(-1/4 (beta_max - beta_min) - 1/2 beta_min) = 0.0066) and for VE with a sigma_max large enough; the
extra VE rows with score_sde's sigma_max rule (the largest pairwise distance of the data; Song & Ermon 2020) show
how large it gets otherwise.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline  # noqa: E402
from scoresde_diffusers.pipelines.score_sde_likelihood.pipeline_score_sde_likelihood import LIKELIHOOD_EPS  # noqa: E402

#: (label, divergence, probe type) of the estimators compared; one probe per sample, the pipeline's default.
ESTIMATORS = [("exact", "exact", None), ("Hutchinson, Rademacher", "hutchinson", "rademacher"), ("Hutchinson, Gaussian", "hutchinson", "gaussian")]
ADAPTIVE_TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
#: Steps of the fixed-step solvers on the pipeline's uniform t grid: 2 evaluations per step for Heun, 4 for RK4.
FIXED_STEPS = {"heun": (5, 10, 20, 50, 100), "rk4": (3, 5, 10, 25, 50)}
QUICK = {"tols": (1e-3,), "steps": {"rk4": (5,)}, "samples": {"ring2d": 64, "gmm16d": 16}}
FULL_SAMPLES = {"ring2d": 5000, "gmm16d": 1000}


def settings(quick):
    """(solver, kind, setting) triples: dopri5 at rtol = atol = setting, then the fixed-step solvers at `setting` steps."""
    tols = QUICK["tols"] if quick else ADAPTIVE_TOLS
    steps = QUICK["steps"] if quick else FIXED_STEPS
    return [("dopri5", "adaptive", tol) for tol in tols] + [(solver, "fixed", n) for solver, ns in steps.items() for n in ns]


def make_pipeline(model, scheduler):
    pipe = ScoreSdeLikelihoodPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def score_sde_sigma_max(data):
    """score_sde's choice of VE sigma_max: the largest Euclidean distance between two data points (Song & Ermon 2020)."""
    return float(torch.cdist(data, data).max())


def evaluate(pipe, model, data, reference, divergence, probe_type, solver, kind, setting, seed=0):
    """One likelihood solve of `data`; the per-sample error in nats/dim, split into prior mismatch and the rest."""
    dim = data[0].numel()
    # score_sde's eps, raised to the first time the model is defined (1/N for a discrete timestep map).
    eps = pipe.scheduler.resolve_sampling_eps(default=LIKELIHOOD_EPS)
    kwargs = {"divergence": divergence, "solver": solver, "sampling_eps": eps, "generator": torch.Generator().manual_seed(seed)}
    if probe_type is not None:
        kwargs["probe_type"] = probe_type
    if kind == "adaptive":
        kwargs.update(rtol=setting, atol=setting)
    else:
        kwargs["num_inference_steps"] = setting
    start = time.perf_counter()
    out = pipe(data, **kwargs)
    seconds = time.perf_counter() - start
    error = (out.log_likelihood - reference) / dim
    prior_term = (out.prior_logp - model.log_prob(out.latents, t=pipe.scheduler.sde.T)) / dim
    rest = error - prior_term
    return {
        "nfe": int(out.nfe),
        "mae": float(error.abs().mean()),
        "bias": float(error.mean()),
        "std": float(error.std()),
        "mae_without_prior": float(rest.abs().mean()),
        "prior_term_abs": float(prior_term.abs().mean()),
        "prior_term_mean": float(prior_term.mean()),
        "seconds": seconds,
    }


def plan(quick, extra):
    """(estimator, divergence, probe type, solver, kind, setting) of every solve for one SDE. The extra VE run at
    score_sde's sigma_max only needs the exact divergence at the tightest tolerance: it is there for its prior term."""
    if extra:
        return [(*ESTIMATORS[0], *settings(quick)[0][:2], min(s for _, kind, s in settings(quick) if kind == "adaptive"))]
    return [(*estimator, *setting) for estimator in ESTIMATORS for setting in settings(quick)]


def run(quick: bool, out_dir: Path, mixtures=None, sdes=("vp", "subvp", "ve"), num_samples=None):
    torch.set_num_threads(1)
    rows = []
    mixtures = mixtures or (["ring2d"] if quick else list(common.MIXTURES))
    for mixture in mixtures:
        builder, sigma_max = common.MIXTURES[mixture]
        n = num_samples or (QUICK["samples"] if quick else FULL_SAMPLES)[mixture]
        # The same true data points for every SDE and setting (the mixture itself does not depend on the SDE).
        mixture_model = builder(common.make_scheduler("vp", sigma_max))
        data = mixture_model.sample_data(n, generator=torch.Generator().manual_seed(0))
        # The data density itself: VP and sub-VP have m(0) = 1, sigma(0) = 0 (VE's p_0 is smoothed by sigma_min).
        data_logp = mixture_model.log_prob(data, t=0.0)
        runs = [(sde, sde, sigma_max) for sde in sdes]
        if "ve" in sdes:
            runs.append(("ve", "ve, score_sde sigma_max", score_sde_sigma_max(data)))
        for sde, label, sde_sigma_max in runs:
            scheduler = common.make_scheduler(sde, sde_sigma_max)
            model = builder(scheduler)
            pipe = make_pipeline(model, scheduler)
            reference = model.log_prob(data, t=scheduler.resolve_sampling_eps(default=LIKELIHOOD_EPS))
            eps_offset = float(((reference - data_logp) / data.shape[1]).mean())
            for estimator, divergence, probe_type, solver, kind, setting in plan(quick, extra=label != sde):
                metrics = evaluate(pipe, model, data, reference, divergence, probe_type, solver, kind, setting)
                row = {"mixture": mixture, "sde": label, "sigma_max": sde_sigma_max if sde == "ve" else None, "num_samples": n, "estimator": estimator,
                       "solver": solver, "kind": kind, "setting": setting, "eps_offset": eps_offset, **metrics}
                rows.append(row)
                print(f"{mixture:7s} {label:23s} {estimator:22s} {solver:6s} {setting:<6g} NFE={row['nfe']:5d} MAE={row['mae']:.2e} bias={row['bias']:+.2e} "
                      f"std={row['std']:.2e} w/o prior={row['mae_without_prior']:.2e} prior={row['prior_term_abs']:.2e} ({row['seconds']:.1f} s)", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "likelihood_vs_nfe.json").write_text(json.dumps(rows, indent=1))
    common.write_section("likelihood_vs_nfe", render(rows, quick), out_dir / "benchmarks.md" if out_dir != common.DOCS else None)
    plot(rows, out_dir / "likelihood_vs_nfe.png")
    return rows


def tightest(rows):
    """The dopri5 row at the smallest tolerance: the most accurate solve, whose prior term is the floor."""
    adaptive = [r for r in rows if r["kind"] == "adaptive"]
    return min(adaptive, key=lambda r: r["setting"]) if adaptive else None


def setting_label(row):
    return f"rtol = atol = {row['setting']:g}" if row["kind"] == "adaptive" else f"{row['setting']} steps"


def render(rows, quick):
    main = [r for r in rows if "score_sde" not in r["sde"]]
    lines = [
        "### Log-likelihood accuracy vs NFE on exact mixtures" + (" (quick mode: tiny batches, numbers meaningless)" if quick else ""),
        "",
        "`ScoreSdeLikelihoodPipeline` on the same true data points for every SDE and setting ("
        + ", ".join(f"{m}: {n}" for m, n in dict.fromkeys((r["mixture"], r["num_samples"]) for r in rows)) + "),",
        f"against the exact log p_eps of the mixture, eps = {LIKELIHOOD_EPS:g} (1/N for models with a discrete timestep map, whose first trained time it is). Errors in **nats/dim**, per sample: MAE = mean |error|,",
        "bias = mean error, std = standard deviation of the error over samples (for Hutchinson mostly the estimator's noise,",
        "one probe per sample, the same probes at every setting). \"w/o prior\" = MAE of the error minus the prior-mismatch term",
        "log pi(z) - log p_T(z), i.e. integration + estimator error alone. NFE = forward model calls per batch (dopri5's steps",
        "are shared by the batch); the exact divergence adds D backward passes per call, Hutchinson one.",
        "",
        "**Summary**: smallest NFE (among those run; `-`: not reached) with MAE < 0.01 nats/dim, and with integration +",
        "estimator error (MAE w/o prior) < 0.001 nats/dim; then MAE (NFE), bias and std of dopri5 at the tightest tolerance.",
        "",
        "| mixture | SDE | estimator | MAE < 1e-2: dopri5 / Heun / RK4 | w/o prior < 1e-3: dopri5 / Heun / RK4 | tightest dopri5: MAE (NFE) | bias | std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mixture in dict.fromkeys(r["mixture"] for r in main):
        for sde in dict.fromkeys(r["sde"] for r in main if r["mixture"] == mixture):
            for estimator in dict.fromkeys(r["estimator"] for r in main if r["mixture"] == mixture and r["sde"] == sde):
                sub = [r for r in main if r["mixture"] == mixture and r["sde"] == sde and r["estimator"] == estimator]
                cells = []
                for key, threshold in (("mae", 1e-2), ("mae_without_prior", 1e-3)):
                    nfes = []
                    for solver in ("dopri5", "heun", "rk4"):
                        ok = [r["nfe"] for r in sub if r["solver"] == solver and r[key] < threshold]
                        nfes.append(str(min(ok)) if ok else "-")
                    cells.append(" / ".join(nfes))
                tight = tightest(sub)
                lines.append(f"| {mixture} | {sde} | {estimator} | " + " | ".join(cells) + f" | {tight['mae']:.1e} ({tight['nfe']}) | {tight['bias']:+.1e} | {tight['std']:.1e} |")
    lines += ["", "**Prior mismatch** (exact divergence, dopri5 at the tightest tolerance): the floor of the error, log pi(z) - log p_T(z),",
              "and the eps offset: the mean of log p_eps(x) - log p_data(x) over the data, what separates the exact answer of the pipeline",
              "from the density of the data itself (for VE, p_eps is the data smoothed by sigma_min).", "",
              "| mixture | SDE | sigma_max | prior term: mean | prior term: mean abs | MAE | MAE w/o prior | eps offset |", "|---|---|---|---|---|---|---|---|"]
    for mixture, sde in dict.fromkeys((r["mixture"], r["sde"]) for r in rows):
        r = tightest([x for x in rows if x["mixture"] == mixture and x["sde"] == sde and x["estimator"] == "exact"])
        if r is not None:
            sigma = f"{r['sigma_max']:.3g}" if r["sigma_max"] else "-"
            lines.append(f"| {r['mixture']} | {r['sde']} | {sigma} | {r['prior_term_mean']:+.1e} | {r['prior_term_abs']:.1e} | {r['mae']:.1e} | {r['mae_without_prior']:.1e} | {r['eps_offset']:+.1e} |")
    lines += ["", "**All runs**:", "",
              "| mixture | SDE | estimator | solver | setting | NFE | MAE | bias | std | MAE w/o prior | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in main:
        lines.append(f"| {r['mixture']} | {r['sde']} | {r['estimator']} | {r['solver']} | {setting_label(r)} | {r['nfe']} | {r['mae']:.2e} | {r['bias']:+.2e} | {r['std']:.2e} | {r['mae_without_prior']:.2e} | {r['seconds']:.2f} |")
    lines += ["", "![log-likelihood error vs NFE](likelihood_vs_nfe.png)"]
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in rows if "score_sde" not in r["sde"]]
    mixtures = list(dict.fromkeys(r["mixture"] for r in main))
    sdes = list(dict.fromkeys(r["sde"] for r in main))
    colors = {"dopri5": "C0", "heun": "C1", "rk4": "C2"}
    styles = {"exact": "-", "Hutchinson, Rademacher": "--", "Hutchinson, Gaussian": ":"}
    fig, axes = plt.subplots(len(mixtures), len(sdes), figsize=(5 * len(sdes), 4 * len(mixtures)), squeeze=False)
    for i, mixture in enumerate(mixtures):
        for j, sde in enumerate(sdes):
            ax = axes[i][j]
            sub = [r for r in main if r["mixture"] == mixture and r["sde"] == sde]
            for estimator in dict.fromkeys(r["estimator"] for r in sub):
                for solver in dict.fromkeys(r["solver"] for r in sub):
                    points = sorted((r["nfe"], r["mae"]) for r in sub if r["estimator"] == estimator and r["solver"] == solver)
                    if points:
                        ax.loglog(*zip(*points), marker="o", markersize=3, color=colors.get(solver), linestyle=styles.get(estimator, "-"), label=f"{solver}, {estimator}")
            reference = tightest([r for r in sub if r["estimator"] == "exact"])
            if reference is not None:
                ax.axhline(reference["prior_term_abs"], color="k", linestyle="-.", linewidth=0.8, label="prior-mismatch floor")
            ax.set_title(f"{mixture}, {sde}")
            ax.set_xlabel("NFE (forward calls)")
            ax.set_ylabel("mean |log-likelihood error| (nats/dim)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one mixture, tiny batch, two settings per estimator (seconds)")
    parser.add_argument("--out_dir", "--out-dir", type=Path, default=None, help="where to write the table, JSON and plot (default docs/, or a temp dir with --quick)")
    parser.add_argument("--mixtures", nargs="*", default=None, choices=list(common.MIXTURES))
    parser.add_argument("--sdes", nargs="*", default=["vp", "subvp", "ve"], choices=["vp", "subvp", "ve"])
    parser.add_argument("--num_samples", "--num-samples", type=int, default=None, help="data points per mixture (default: 5000 in 2-D, 1000 in 16-D)")
    parser.add_argument("--render", nargs="*", type=Path, default=None, help="only write the table and plot from these likelihood_vs_nfe.json files")
    args = parser.parse_args(argv)
    if args.render:
        rows = [row for path in args.render for row in json.loads(path.read_text())]
        out_dir = args.out_dir or common.DOCS
        common.write_section("likelihood_vs_nfe", render(rows, False), out_dir / "benchmarks.md" if out_dir != common.DOCS else None)
        plot(rows, out_dir / "likelihood_vs_nfe.png")
        return
    out_dir = args.out_dir
    if out_dir is None:
        if args.quick:
            import tempfile

            out_dir = Path(tempfile.mkdtemp(prefix="bench_likelihood_"))
        else:
            out_dir = common.DOCS
    start = time.perf_counter()
    run(args.quick, out_dir, args.mixtures, tuple(args.sdes), args.num_samples)
    print(f"wrote {out_dir} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
