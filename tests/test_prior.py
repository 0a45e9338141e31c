"""The prior p_1 that every pipeline starts from: N(m(1) c, init_noise_sigma^2 I), c the centre of the pipeline's
data range, or the model's E[x_0 | x_1] at the prior's centre where the range's centre could cost the prior more
than 0.01 nats per entry (VE with a sigma_max of the data's size). The VE SDE keeps the data's mean (m = 1), so a
prior centred at 0 is wrong by the data's mean; for VP and sub-VP m(1) is about 0.007 and the shift is negligible.
Checked on a single Gaussian, whose probability-flow ODE is linear: x_0 = mu + (x_1 - mu) s / sqrt(s^2 + sigma^2) for
data N(mu, s^2 I) (Song et al. 2021, eq. 13)."""

import math

import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, ScoreSdeDPMSolverMultistepScheduler, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline, ScoreSdeODEPipeline, ScoreSdePCPipeline

MU, STD, DIM = 0.5, 0.1, 4


def gaussian(scheduler, mean: float = MU):
    return GaussianMixtureScoreModel.from_mixture([1.0], [[mean] * DIM], torch.full((1,), STD), scheduler=scheduler).double()


@pytest.mark.parametrize("scheduler_class", [VESDEScheduler, VPSDEScheduler, SubVPSDEScheduler])
def test_prior_mean_is_m1_times_the_centre_of_the_data_range(scheduler_class):
    scheduler = scheduler_class()
    m1 = math.exp(float(scheduler.sde.log_mean_coeff(torch.tensor(1.0, dtype=torch.float64))))
    assert scheduler.prior_mean(0.5) == pytest.approx(m1 * 0.5, rel=1e-9)
    pipe = ScoreSdePCPipeline(unet=gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    z = torch.randn(3, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x1 = pipe.prepare_latents(3, torch.float64, torch.device("cpu"), None, z)
    torch.testing.assert_close(x1, z * scheduler.init_noise_sigma + m1 * 0.5)


def test_ve_prior_is_centred_on_the_data():
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    assert scheduler.prior_mean(0.5) == 0.5  # m = 1: the forward process keeps the mean


def test_ve_ode_samples_have_the_data_mean_with_the_centred_prior():
    # With N(0, sigma_max^2) the linear flow would give the mean MU (1 - STD / sqrt(STD^2 + sigma_max^2)) = 0.45.
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    pipe = ScoreSdeODEPipeline(unet=gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=4000, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    # 4000 x 4 draws of std 0.1: the mean's standard error is 0.0008.
    assert float(out.mean()) == pytest.approx(MU, abs=0.004)
    assert float(out.std()) == pytest.approx(STD, rel=0.03)


def test_saved_diffusers_ve_configs_keep_their_zero_mean_prior(tmp_path):
    # A folder of diffusers' ScoreSdeVePipeline (google/ncsnpp-*) samples exactly as that pipeline does.
    from diffusers import ScoreSdeVeScheduler

    ScoreSdeVeScheduler(sigma_max=348.0).save_config(tmp_path)
    assert VESDEScheduler.from_pretrained(tmp_path).prior_mean(0.5) == 0.0
    assert VESDEScheduler().prior_mean(0.5) == 0.5


def likelihood_error_beyond_the_prior_variance(mean: float) -> float:
    """Mean of (the ODE likelihood of exact draws of N(mean, STD^2 I) in [0, 1], VE sigma_max = 1) - (the exact
    log-density), with the one difference that is left taken out: the exact p_1 is N(mean, (STD^2 + 1) I), not the
    prior N(mean, I)."""
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    model = gaussian(scheduler, mean)
    pipe = ScoreSdeLikelihoodPipeline(unet=model, scheduler=scheduler, data_range=(0.0, 1.0))
    pipe.set_progress_bar_config(disable=True)
    x = model.sample_data(64, generator=torch.Generator().manual_seed(1))
    out = pipe(x, divergence="exact", rtol=1e-6, atol=1e-6, sampling_eps=1e-5)
    exact = model.log_prob(x, t=torch.full((64,), 1e-5, dtype=torch.float64))
    p1 = torch.distributions.Normal(mean, math.sqrt(STD**2 + 1.0))
    prior_gap = (p1.log_prob(out.latents).sum(1) - scheduler.prior_log_prob(out.latents, mean)).mean()
    return float((out.log_likelihood - exact).mean() + prior_gap)


def test_likelihood_uses_the_same_prior_as_sampling():
    # The ODE likelihood's prior term is log N(x_1; prior_mean, sigma_max^2 I): with the exact Gaussian the total is
    # the exact log-density, which a zero-mean prior would miss by about |MU|^2 D / (2 sigma_max^2) = 0.5 nats.
    assert likelihood_error_beyond_the_prior_variance(MU) == pytest.approx(0.0, abs=0.02)


# ---------------------------------------------------------------- the data's mean from the model
OFF_CENTRE = 0.2  # a data mean 0.3 from the centre of [0, 1]: 0.3^2 / 2 = 0.045 nats per entry at sigma_max = 1


def off_centre_gaussian(scheduler):
    return gaussian(scheduler, OFF_CENTRE)


def test_ve_with_a_sigma_max_of_the_datas_size_asks_the_model_for_the_data_mean():
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    pipe = ScoreSdeODEPipeline(unet=off_centre_gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    # E[x_0 | x_1 = 0.5] = mu + r (0.5 - mu) with r = s^2 / (s^2 + sigma_max^2) = 0.0099: 0.2030.
    expected = OFF_CENTRE + STD**2 / (STD**2 + 1.0) * (0.5 - OFF_CENTRE)
    estimate = pipe.data_mean(dtype=torch.float64)
    assert estimate.shape == (1, DIM)
    torch.testing.assert_close(estimate, torch.full((1, DIM), expected, dtype=torch.float64), atol=1e-7, rtol=0)
    assert pipe.nfe == 1  # one evaluation, on one sample


def test_ve_asks_for_the_data_mean_while_the_ranges_centre_could_cost_the_samplers_accuracy():
    # A mean at the range's edge, half a width h from the centre, costs the prior (h / sigma_max)^2 / 2 nats per entry:
    # more than 0.01 up to sigma_max = 7.07 h.
    assert VESDEScheduler(sigma_max=3.0).data_mean_matters((0.0, 1.0)) and not VESDEScheduler(sigma_max=4.0).data_mean_matters((0.0, 1.0))
    assert VESDEScheduler(sigma_max=7.0).data_mean_matters((-1.0, 1.0)) and not VESDEScheduler(sigma_max=7.5).data_mean_matters((-1.0, 1.0))
    assert not VPSDEScheduler().data_mean_matters((0.0, 1.0)) and not SubVPSDEScheduler().data_mean_matters((-1.0, 1.0))


@pytest.mark.parametrize("scheduler", [VPSDEScheduler(), SubVPSDEScheduler(), VESDEScheduler(sigma_max=100.0), VESDEScheduler(sigma_max=1.0, prior_mean=0.0)], ids=["vp", "subvp", "ve-large-sigma", "ve-pinned"])
def test_the_data_range_centre_is_kept_where_the_data_mean_cannot_matter(scheduler):
    # VP / sub-VP: m(1) ~ 0.007; VE with sigma_max 200 half-widths: 0.5 (0.5 / 100)^2 = 1.3e-5 nats per entry at
    # most; a pinned prior_mean (diffusers' configs) is kept as it is. No model call in any of them.
    pipe = ScoreSdeODEPipeline(unet=off_centre_gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    pipe.reset_nfe()
    assert pipe.data_mean() == 0.5 and pipe.nfe == 0


def test_ve_ode_samples_have_an_off_centre_data_mean():
    # With the range's centre as the prior's mean the linear flow gives mu + 0.3 STD / sqrt(STD^2 + 1) = 0.2299.
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    pipe = ScoreSdeODEPipeline(unet=off_centre_gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=4000, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert float(out.images.mean()) == pytest.approx(OFF_CENTRE, abs=0.004)  # standard error 0.0008
    assert float(out.images.std()) == pytest.approx(STD, rel=0.03)
    assert out.nfe == 21  # 20 steps and the one evaluation for the data's mean


def test_ve_pc_samples_have_an_off_centre_data_mean():
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    pipe = ScoreSdePCPipeline(unet=off_centre_gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2000, num_inference_steps=200, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert float(out.images.mean()) == pytest.approx(OFF_CENTRE, abs=0.006)


def test_a_sample_depends_on_its_own_latents_only():
    # The data's mean is estimated at the prior's centre, not from the batch: sample 0 alone or in a batch is the same.
    scheduler = VESDEScheduler(sigma_min=0.01, sigma_max=1.0)
    pipe = ScoreSdeODEPipeline(unet=off_centre_gaussian(scheduler), scheduler=scheduler, data_range=(0.0, 1.0))
    pipe.set_progress_bar_config(disable=True)
    z = torch.randn(8, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    batch = pipe(batch_size=8, num_inference_steps=10, latents=z, output_type="pt").images
    alone = pipe(batch_size=1, num_inference_steps=10, latents=z[:1], output_type="pt").images
    torch.testing.assert_close(alone, batch[:1])


def test_likelihood_of_off_centre_data_is_exact_up_to_the_prior_variance():
    # With the data's mean off the range's centre: the prior centred at 0.5 would miss log p by 0.3^2 D / 2 = 0.18
    # nats, the model's estimate by 0.003^2 D / 2.
    assert likelihood_error_beyond_the_prior_variance(OFF_CENTRE) == pytest.approx(0.0, abs=0.02)
