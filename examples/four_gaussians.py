"""The four-Gaussian demo (a 2-D mixture of four unequal, correlated Gaussians), on the exact score: forward diffusion, then sampling back with the
predictor-corrector sampler and the probability-flow ODE, for the VE, VP and sub-VP SDEs.

    python examples/four_gaussians.py [--output_dir outputs/four_gaussians] [--num_samples 2000]

Writes `four_gaussians.png` (true samples, PC samples and ODE samples for each SDE) and prints, per sampler, the
mode weights and the mean exact log-density of the samples next to those of true samples.
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from scoresde_diffusers import (  # noqa: E402
    GaussianMixtureScoreModel,
    ScoreSdeODEPipeline,
    ScoreSdePCPipeline,
    SubVPSDEScheduler,
    VESDEScheduler,
    VPSDEScheduler,
)

SCHEDULERS = {
    "VE": lambda: VESDEScheduler(sigma_max=10.0),  # the demo's data lies within a distance of ~6
    "VP": lambda: VPSDEScheduler(prediction_type="score", corrector="langevin", predictor="reverse_diffusion"),
    "sub-VP": lambda: SubVPSDEScheduler(prediction_type="score", corrector="langevin", predictor="reverse_diffusion"),
}


def summarise(model, samples):
    weights = model.component_posteriors(samples).mean(0)
    return ", ".join(f"{w:.3f}" for w in weights.tolist()), model.log_prob(samples).mean().item()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/four_gaussians", help="Folder of four_gaussians.png.")
    parser.add_argument("--num_samples", type=int, default=2000, help="Samples per SDE and sampler (and true samples).")
    parser.add_argument("--num_inference_steps", type=int, default=500, help="PC steps (the ODE is adaptive).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the true samples and the samplers' noise.")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)

    figure, axes = plt.subplots(len(SCHEDULERS), 3, figsize=(10, 3.3 * len(SCHEDULERS)), squeeze=False)
    print(f"{'SDE':8s} {'sampler':10s} {'mode weights':28s} {'mean log p':>10s} {'NFE':>6s}")
    for row, (name, make_scheduler) in enumerate(SCHEDULERS.items()):
        scheduler = make_scheduler()
        model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
        generator = torch.Generator().manual_seed(args.seed)
        true = model.sample_data(args.num_samples, generator=generator)
        weights, log_p = summarise(model, true)
        print(f"{name:8s} {'exact':10s} {weights:28s} {log_p:10.3f} {'':>6s}")
        panels = [("exact samples", true, None)]

        pc = ScoreSdePCPipeline(unet=model, scheduler=scheduler)
        out = pc(batch_size=args.num_samples, num_inference_steps=args.num_inference_steps, generator=generator, output_type="pt")
        panels.append(("PC", out.images, out.nfe))
        ode = ScoreSdeODEPipeline.from_pipe(pc)
        out = ode(batch_size=args.num_samples, generator=generator, output_type="pt")
        panels.append(("ODE (dopri5)", out.images, out.nfe))

        for col, (title, samples, nfe) in enumerate(panels):
            if nfe is not None:
                weights, log_p = summarise(model, samples)
                print(f"{name:8s} {title:10s} {weights:28s} {log_p:10.3f} {nfe:6d}")
            axis = axes[row][col]
            axis.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
            axis.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", title=f"{name}: {title}" + (f" ({nfe} NFE)" if nfe else ""))
    figure.tight_layout()
    path = os.path.join(args.output_dir, "four_gaussians.png")
    figure.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
