"""Shared pieces of the benchmark scripts: the exact mixtures, the samplers under test, and writing results into
``docs/benchmarks.md`` between ``<!-- name:start -->`` / ``<!-- name:end -->`` markers."""

import math
import re
from pathlib import Path

import torch

from scoresde_diffusers import GaussianMixtureScoreModel, ODE_SOLVERS, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.sampling.adaptive_sde import gotta_go_fast
from scoresde_diffusers.sampling.parametrization import from_score
from scoresde_diffusers.sampling.time_grids import t_from_noise_level, time_grid

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The earlier fast default, `ScoreSdeODEPipeline(solver="unipc_3m")`: UniPC-3 (DPM-Solver++(3M) + corrector) on the logSNR grid whose
#: first step jumps to u = 3 sqrt(D) (1.5 times the largest distance between two points of [-1, 1]^D), ending at u = 0.03 and
#: stepping to zero noise.
MAX_NOISE_FACTOR = 3.0
MIN_NOISE = 0.03


def default_max_noise(dim: int) -> float:
    return MAX_NOISE_FACTOR * math.sqrt(dim)


# ---------------------------------------------------------------------------- mixtures
def ring_mixture(scheduler, std=0.05, radius=1.0):
    """Eight equal Gaussians of std `std` on a circle of radius `radius` (2-D, sharp)."""
    angles = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    means = radius * torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixtureScoreModel.from_mixture(torch.ones(8), means, torch.full((8,), std), scheduler=scheduler).double()


def mixture_16d(scheduler):
    """Four unequal components in 16-D with diagonal stds 0.1-0.3 and means 1.5 N(0, I) (fixed seed)."""
    g = torch.Generator().manual_seed(7)
    means = torch.randn(4, 16, generator=g, dtype=torch.float64) * 1.5
    stds = 0.1 + 0.2 * torch.rand(4, 16, generator=g, dtype=torch.float64)
    return GaussianMixtureScoreModel.from_mixture([0.1, 0.2, 0.3, 0.4], means, stds, scheduler=scheduler).double()


# builder, VE sigma_max: large enough that N(0, sigma_max^2) is the true p_1 to 0.1% in variance (a smaller one, as
# score_sde's "largest pairwise distance" rule gives, leaves a prior mismatch that no sampler can remove).
MIXTURES = {"ring2d": (ring_mixture, 20.0), "gmm16d": (mixture_16d, 50.0)}


def make_scheduler(sde: str, sigma_max: float):
    return {"vp": VPSDEScheduler, "subvp": SubVPSDEScheduler}[sde]() if sde != "ve" else VESDEScheduler(sigma_max=sigma_max)


# ---------------------------------------------------------------------------- samplers
def denoiser_of(model, sde):
    def denoiser(t, x):
        tb = t.expand(x.shape[0]).to(x.dtype)
        return from_score(sde, model.score(x, tb), x, tb, "sample")

    return denoiser


def run_exponential(model, scheduler, latents, nfe, solver="unipc_3m", grid="log_snr", max_noise="auto", min_noise=MIN_NOISE, final="extrapolate"):
    """An exponential integrator with `nfe` evaluations in all, the last one for the step to zero noise."""
    sde = scheduler.sde
    max_noise = default_max_noise(latents[0].numel()) if max_noise == "auto" else max_noise
    t_min = max(t_from_noise_level(sde, min_noise), scheduler.config.sampling_eps) if min_noise else scheduler.config.sampling_eps
    options = {"max_noise": max_noise} if grid == "log_snr" and max_noise else {}
    t = time_grid(grid, sde, nfe - 1, t_min=t_min, **options)
    final_order = None if final == "extrapolate" else 1
    out = ODE_SOLVERS.get(solver)(None, latents * sde.prior_std, t, sde=sde, denoiser=denoiser_of(model, sde), denoise_to_zero=True, final_order=final_order)
    return out.y, out.nfe


def run_edm_heun(model, scheduler, latents, nfe, min_noise=0.002):
    """EDM's Heun sampler (rho = 7 grid down to u = 0.002, then Euler to zero): 2 K + 1 evaluations."""
    sde = scheduler.sde
    steps = max(1, (nfe - 1) // 2)
    t_min = max(t_from_noise_level(sde, min_noise), 1e-6)
    t = time_grid("edm", sde, steps, t_min=t_min)
    out = ODE_SOLVERS.get("edm_heun")(None, latents * sde.prior_std, t, sde=sde, denoiser=denoiser_of(model, sde), denoise_to_zero=True)
    return out.y, out.nfe


def run_pc(model, scheduler, latents, nfe, predictor, corrector="none"):
    """The library's PC pipeline (`ScoreSdePCPipeline`), `nfe` evaluations in all."""
    from scoresde_diffusers.pipelines import ScoreSdePCPipeline

    steps = nfe if corrector == "none" else nfe // 2
    pipe = ScoreSdePCPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=latents.shape[0], num_inference_steps=steps, predictor=predictor, corrector=corrector, correct_steps=1, latents=latents, generator=torch.Generator().manual_seed(3), output_type="pt")
    return out.images, out.nfe


def run_ode_t(model, scheduler, latents, nfe, solver="heun"):
    """A Runge-Kutta solver of `ODE_SOLVERS` on the uniform t grid (score_sde's probability-flow sampler, fixed step)."""
    sde = scheduler.sde
    stages = {"euler": 1, "heun": 2, "rk4": 4}[solver]
    t = time_grid("uniform", sde, max(1, nfe // stages), t_min=scheduler.config.sampling_eps)

    def func(t_, x):
        tb = t_.expand(x.shape[0]).to(x.dtype)
        return sde.reverse_drift(x, tb, model.score(x, tb), probability_flow=True)

    out = ODE_SOLVERS.get(solver)(func, latents * sde.prior_std, t)
    return out.y, out.nfe


def run_ggf(model, scheduler, latents, rtol):
    sde = scheduler.sde
    out = gotta_go_fast(sde, model.score, latents * sde.prior_std, t_end=scheduler.config.sampling_eps, rtol=rtol, atol=rtol / 10, generator=torch.Generator().manual_seed(3))
    return out.x, out.nfe


def run_diffusers_ve(model, scheduler, latents, nfe):
    """diffusers' own `ScoreSdeVeScheduler` (PC: Langevin corrector + reverse diffusion), its pipeline's loop."""
    from diffusers import ScoreSdeVeScheduler

    steps = max(1, nfe // 2)
    ve = ScoreSdeVeScheduler(sigma_min=scheduler.config.sigma_min, sigma_max=scheduler.config.sigma_max, snr=scheduler.config.snr, sampling_eps=scheduler.config.sampling_eps)
    ve.set_timesteps(steps)
    ve.set_sigmas(steps)
    generator = torch.Generator().manual_seed(3)
    sample = latents * ve.init_noise_sigma
    model_dtype = sample.dtype
    for i, t in enumerate(ve.timesteps):
        sigma_t = ve.sigmas[i] * torch.ones(sample.shape[0], dtype=model_dtype)
        sample = ve.step_correct(model(sample, sigma_t).sample, sample, generator=generator).prev_sample
        output = ve.step_pred(model(sample, sigma_t).sample, t, sample, generator=generator)
        sample, sample_mean = output.prev_sample, output.prev_sample_mean
    return sample_mean, 2 * steps


# ---------------------------------------------------------------------------- docs
def write_section(name: str, text: str, path: Path = None) -> Path:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` of `path` (appended if absent)."""
    path = DOCS / "benchmarks.md" if path is None else Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    content = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in content and end in content:
        content = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, content, flags=re.DOTALL)
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path
