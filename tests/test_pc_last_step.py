"""The PC schedulers' final step (``final_step``, `FINAL_STEPS`) against its closed form on a Gaussian.

For a Gaussian of variance v per dimension and noise level u = sigma(eps) / m(eps) at the last grid time, r = u^2 / v,
the variance of each final step's output over v is (docs/benchmarks.md, `scoresde_diffusers.sampling.final_steps`):
score_sde 1 / (1 + r), keep_noise 1 + r, probability_flow 1 + r^2 / (4 (1 + r)), tweedie_noise 1 + r^2 / (1 + r).
With exact draws of p_eps as input, the measured variance must match within sampling error.
"""

import math

import pytest
import torch

from scoresde_diffusers import FINAL_STEPS, GaussianMixtureScoreModel, ScoreSdePCScheduler, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdePCPipeline

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANCE_RATIO = {
    "score_sde": lambda r: 1 / (1 + r),
    "keep_noise": lambda r: 1 + r,
    "probability_flow": lambda r: 1 + r**2 / (4 * (1 + r)),
    "tweedie_noise": lambda r: 1 + r**2 / (1 + r),
}
STD, DIM, COUNT = 0.05, 4, 50_000


def gaussian(scheduler, mean=0.3):
    return GaussianMixtureScoreModel.from_mixture(torch.ones(1), torch.full((1, DIM), mean), torch.full((1,), STD), scheduler=scheduler).double()


def last_step(scheduler, model, num_steps=10, seed=0):
    """The final step alone, applied to exact draws of p_eps; returns (output, r)."""
    scheduler.set_timesteps(num_steps)
    t_eps = torch.tensor(float(scheduler.timestep_times[-1]), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    x = model.sample_data(COUNT, generator=generator, t=float(t_eps))
    t = scheduler.timesteps[-1]
    y = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
    u = float(scheduler.sde.marginal_std(t_eps) / scheduler.sde.marginal_mean_coeff(t_eps))
    return y, u**2 / STD**2


def check_variance(y, r, option, mean=0.3):
    # Pooled over the DIM independent coordinates: the variance estimate's relative std is sqrt(2 / (COUNT DIM)).
    measured = float(((y - mean) ** 2).mean()) / STD**2
    expected = VARIANCE_RATIO[option](r)
    tolerance = 5 * math.sqrt(2 / (COUNT * DIM)) * expected
    assert abs(measured - expected) < tolerance, (option, r, measured, expected)
    return measured


def test_registered_names():
    assert {"score_sde", "keep_noise", "probability_flow", "tweedie_noise"} <= set(FINAL_STEPS.names())


@pytest.mark.parametrize("option", sorted(VARIANCE_RATIO))
def test_ve_variance_matches_closed_form(option):
    """VE with sigma_min equal to the mode std (r ~ 1): the four options give 0.5, 2, 1.125 and 1.5 times v."""
    scheduler = VESDEScheduler(sigma_min=STD, sigma_max=5.0, final_step=option)
    y, r = last_step(scheduler, gaussian(scheduler))
    assert r == pytest.approx(1.0, rel=1e-3)
    check_variance(y, r, option)


@pytest.mark.parametrize("option", ["keep_noise", "probability_flow", "tweedie_noise"])
@pytest.mark.parametrize("scheduler_class", [VPSDEScheduler, SubVPSDEScheduler])
def test_vp_variance_matches_closed_form_in_u(option, scheduler_class):
    """VP and sub-VP: the same formulas with u = sigma / m (a large beta so that r is not small). (``score_sde``
    is the predictor's step, Tweedie's mean only to first order in beta dt.)"""
    scheduler = scheduler_class(beta_min=20.0, beta_max=20.0, sampling_eps=0.02, final_step=option)
    y, r = last_step(scheduler, gaussian(scheduler))
    assert r > 0.5
    check_variance(y, r, option)


def test_score_sde_is_the_previous_last_step():
    """``score_sde`` reproduces score_sde's last reverse-diffusion step: x + sigma(eps)^2 s on VE (Tweedie)."""
    scheduler = VESDEScheduler(sigma_min=STD, sigma_max=5.0)
    assert scheduler.config.final_step == "score_sde"
    model = gaussian(scheduler)
    scheduler.set_timesteps(10)
    x = model.sample_data(16, generator=torch.Generator().manual_seed(1), t=float(scheduler.timestep_times[-1]))
    t = scheduler.timesteps[-1]
    out = scheduler.step(model(x, t).sample, t, x, generator=torch.Generator().manual_seed(2))
    sigma = scheduler.sde.marginal_std(scheduler.timestep_times[-1])
    tweedie = x + sigma**2 * model.score(x, scheduler.timestep_times[-1:].expand(16))
    # (to the float32 rounding of the model timestep sigma(eps))
    torch.testing.assert_close(out.prev_sample, tweedie, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out.prev_sample_mean, out.prev_sample)


def test_noise_only_in_tweedie_noise():
    """``tweedie_noise`` returns Tweedie's mean as `prev_sample_mean` and the noisy sample as `prev_sample`."""
    scheduler = VESDEScheduler(sigma_min=STD, sigma_max=5.0, final_step="tweedie_noise")
    model = gaussian(scheduler)
    scheduler.set_timesteps(10)
    x = model.sample_data(8, generator=torch.Generator().manual_seed(1), t=float(scheduler.timestep_times[-1]))
    t = scheduler.timesteps[-1]
    out = scheduler.step(model(x, t).sample, t, x, generator=torch.Generator().manual_seed(2))
    residual = (out.prev_sample - out.prev_sample_mean) / scheduler.sde.marginal_std(scheduler.timestep_times[-1])
    assert residual.abs().max() > 0.1 and residual.std() == pytest.approx(1.0, abs=0.5)


def test_unknown_final_step_is_an_error():
    with pytest.raises(ValueError, match="final_step='nope' is not allowed"):
        VESDEScheduler(final_step="nope")
    with pytest.raises(ValueError, match="final_step"):
        ScoreSdePCScheduler(sde_type="ve", final_step="nope")


def test_config_round_trip_and_pipeline(tmp_path):
    """The option is a config key: saved, loaded, and used by `ScoreSdePCPipeline` (its last step)."""
    scheduler = VESDEScheduler(sigma_min=STD, sigma_max=2.0, final_step="probability_flow")
    scheduler.save_pretrained(tmp_path)
    loaded = VESDEScheduler.from_pretrained(tmp_path)
    assert loaded.config.final_step == "probability_flow"
    model = gaussian(loaded)
    outputs = {}
    for option in ("score_sde", "probability_flow"):
        pipe = ScoreSdePCPipeline(unet=model, scheduler=VESDEScheduler.from_config(loaded.config, final_step=option))
        pipe.set_progress_bar_config(disable=True)
        outputs[option] = pipe(batch_size=4000, num_inference_steps=200, generator=torch.Generator().manual_seed(0), output_type="pt").images
    # Same trajectory up to the last step; the probability-flow step keeps about sigma^2 / 2 s more spread.
    ratio = float(outputs["probability_flow"].var() / outputs["score_sde"].var())
    r = 1.0
    assert ratio == pytest.approx(VARIANCE_RATIO["probability_flow"](r) / VARIANCE_RATIO["score_sde"](r), rel=0.05)
