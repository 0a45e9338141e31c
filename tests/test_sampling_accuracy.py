"""Reverse-SDE sampling recovers a known distribution (issue 3, item 6).

The 2-D `four_gaussians` mixture (weights 0.1, 0.2, 0.3, 0.4) is sampled with every SDE scheduler (VE, VP, sub-VP),
with every predictor alone and with PC (reverse diffusion + each corrector), at 1000 steps, in float64, driven by
its exact score. The samples are compared with the exact mixture, not with golden numbers.

Tolerances (n = N_SAMPLES samples, z = Z standard errors, plus a small allowance for the discretisation bias that
1000 steps leave):
- mode weights: the mean of the exact posteriors p(k | x) estimates w_k with a standard error at most the
  binomial one, sqrt(w_k (1 - w_k) / n) (0.0067 for w = 0.1, 0.011 for w = 0.4 at n = 2000);
  allowed |error| = Z SE + 0.005.
- mean log-density: mean log p_0(x) of the samples vs E log p_0 of the mixture (from 200 000 exact samples, SE
  0.0024); SE = sd(log p) / sqrt(n) = 1.07 / sqrt(2000) = 0.024 nats; allowed = Z SE + 0.02 nats (the
  Langevin-corrected runs carry a bias of about -0.03 to -0.05 nats at snr = 0.16, the others < 0.03).
- per-dimension spread: sample std / true std; SE of a sample std is sqrt((kurtosis - 1) / (4 n)) (about 1% here);
  allowed = Z SE + 0.01.
Z = 4. Checked for flakiness once by running every case with seeds 1-3 besides the test's seed 0 (72 runs):
the largest |error| / allowed was 0.47 for the weights, 0.54 for log p and 0.39 for the spreads.
Runtime: about 70 s of CPU for the file (2000 samples x 1000 steps x 18 cases, one thread).
"""

import math

import pytest
import torch

from scoresde_diffusers import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.models import GaussianMixtureScoreModel

N_SAMPLES = 2000
N_STEPS = 1000
Z = 4.0
SEED = 0
TRUE_WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)

SCHEDULERS = [VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler]
CASES = [(p, "none") for p in ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "probability_flow_euler")]
CASES += [("reverse_diffusion", c) for c in ("langevin", "annealed_langevin")]


def pc_sample(scheduler, model, shape, generator, num_inference_steps=N_STEPS):
    """The PC loop of Song et al. (Algorithm 1), float64: prior sample, then per grid time correct and predict."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps)
    n_correct = scheduler.config.correct_steps if scheduler.config.corrector != "none" else 0
    for t in scheduler.timesteps:
        for _ in range(n_correct):
            x = scheduler.step_correct(model(x, t).sample, x, generator=generator).prev_sample
        x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
    return x


_REFERENCE = {}


def reference_statistics(model, n=200_000):
    """E log p_0, sd of log p_0, per-dimension std and kurtosis of the exact mixture (from n exact samples).

    Cached per SDE: p_0 depends on it only through VE's sigma_min smoothing, and the 200 000-sample estimate is
    the slowest part of a case after the sampling itself."""
    key = (repr(model.sde), tuple(model.weights.tolist()), tuple(model.means.flatten().tolist()))
    if key not in _REFERENCE:
        _REFERENCE[key] = _reference_statistics(model, n)
    return _REFERENCE[key]


def _reference_statistics(model, n):
    x = model.sample_data(n, generator=torch.Generator().manual_seed(12345)).double().reshape(n, -1)
    log_p = model.log_prob(x)
    centred = x - x.mean(0)
    std = centred.pow(2).mean(0).sqrt()
    kurtosis = centred.pow(4).mean(0) / std**4
    return log_p.mean().item(), log_p.std().item(), std, kurtosis


def check_against_mixture(model, x, weights, label=""):
    """Assert the three statistics of the module docstring; returns the |error| / allowed ratios."""
    n = x.shape[0]
    lp_true, lp_sd, std_true, kurtosis = reference_statistics(model)
    ratios = {}

    est = model.component_posteriors(x).mean(0)
    allowed = Z * (weights * (1 - weights) / n).sqrt() + 0.005
    ratios["weights"] = ((est - weights).abs() / allowed).max().item()
    assert torch.all((est - weights).abs() <= allowed), f"{label}: weights {est.tolist()} vs {weights.tolist()} (allowed {allowed.tolist()})"

    lp = model.log_prob(x).mean().item()
    allowed_lp = Z * lp_sd / math.sqrt(n) + 0.02
    ratios["log_p"] = abs(lp - lp_true) / allowed_lp
    assert abs(lp - lp_true) <= allowed_lp, f"{label}: mean log p {lp:.4f} vs {lp_true:.4f} (allowed {allowed_lp:.3f})"

    spread = x.reshape(n, -1).std(0) / std_true
    allowed_sd = Z * ((kurtosis - 1) / (4 * n)).sqrt() + 0.01
    ratios["spread"] = ((spread - 1).abs() / allowed_sd).max().item()
    assert torch.all((spread - 1).abs() <= allowed_sd), f"{label}: std ratios {spread.tolist()} (allowed {allowed_sd.tolist()})"
    return ratios


def run_case(scheduler_class, predictor, corrector, seed=SEED):
    scheduler = scheduler_class(predictor=predictor, corrector=corrector)
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    x = pc_sample(scheduler, model, (N_SAMPLES, 2), torch.Generator().manual_seed(seed))
    assert x.dtype == torch.float64 and torch.isfinite(x).all()
    return check_against_mixture(model, x, TRUE_WEIGHTS, f"{scheduler_class.__name__} {predictor}+{corrector}")


@pytest.mark.parametrize("predictor, corrector", CASES)
@pytest.mark.parametrize("scheduler_class", SCHEDULERS, ids=lambda c: c.__name__)
def test_four_gaussians_recovered(scheduler_class, predictor, corrector):
    run_case(scheduler_class, predictor, corrector)


def test_image_shaped_mixture():
    # A (B, 3, 2, 2) mixture of three well-separated 12-D Gaussians, sampled with the VP reverse-diffusion
    # predictor at 500 steps: the mode weights are right (same binomial tolerance as above, n = 1000).
    torch.manual_seed(0)
    means = torch.sign(torch.randn(3, 12, dtype=torch.float64))
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    scheduler = VPSDEScheduler(predictor="reverse_diffusion")
    model = GaussianMixtureScoreModel.from_mixture(
        weights, means, torch.full((3,), 0.3), scheduler=scheduler, sample_size=2, in_channels=3
    ).double()
    x = pc_sample(scheduler, model, (1000, 3, 2, 2), torch.Generator().manual_seed(SEED), num_inference_steps=500)
    assert x.shape == (1000, 3, 2, 2)
    est = model.component_posteriors(x).mean(0)
    allowed = Z * (weights * (1 - weights) / 1000).sqrt() + 0.005
    assert torch.all((est - weights).abs() <= allowed), est
    # each sample sits on one mode: the posterior is sharp and the distance to the assigned mean is ~ 0.3 sqrt(12)
    post = model.component_posteriors(x)
    assert (post.max(1).values > 0.99).float().mean() > 0.99
    dist = (x.reshape(1000, 12) - means[post.argmax(1)]).norm(dim=1)
    assert abs(dist.pow(2).mean().sqrt().item() - 0.3 * math.sqrt(12)) < 0.05
