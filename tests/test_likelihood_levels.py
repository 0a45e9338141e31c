"""Bits/dim of discrete data at the data's own number of levels (Theis et al. 2016): 8-bit images have 256, the
8x8 digits 17. Exact answer: for a Gaussian model N(0, s^2 I) the dequantized bound is, per dimension,
E_w[log N(y; 0, s_eps^2)] + log(Delta) with y uniform on the bin of width Delta = (b - a) / K around the centre c,
i.e. log N(c; 0, s_eps^2) - Delta^2 / (24 s_eps^2) + log(Delta), where s_eps^2 = m(eps)^2 s^2 + sigma(eps)^2."""

import math

import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeLikelihoodPipeline

STD = 0.5


def gaussian_pipeline():
    scheduler = VPSDEScheduler()
    model = GaussianMixtureScoreModel.from_mixture(
        [1.0], torch.zeros(1, 4), STD**2 * torch.eye(4)[None], scheduler=scheduler, sample_size=2, in_channels=1
    ).double()
    pipe = ScoreSdeLikelihoodPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def expected_log_likelihood(pipe, u, num_levels):
    low, high = pipe.data_range
    delta = (high - low) / num_levels
    centre = low + delta * (u.double() + 0.5)
    eps = torch.tensor([pipe.scheduler.resolve_sampling_eps(default=1e-5)], dtype=torch.float64)
    mean, std = pipe.scheduler.sde.marginal_prob(torch.ones(1, 1), eps)
    var = float(mean) ** 2 * STD**2 + float(std) ** 2
    per_dim = -0.5 * math.log(2 * math.pi * var) - centre**2 / (2 * var) - delta**2 / (24 * var) + math.log(delta)
    return per_dim.flatten(1).sum(1)


@pytest.mark.parametrize("num_levels", [17, 256])
def test_discrete_data_is_dequantized_at_its_own_number_of_levels(num_levels):
    pipe = gaussian_pipeline()
    u = torch.randint(0, num_levels, (3, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    out = pipe(u, num_levels=num_levels, num_dequantization_draws=256, rtol=1e-6, atol=1e-6, generator=torch.Generator().manual_seed(1))
    # 256 draws: the Monte-Carlo error of E_w[log p] is below 0.01 nats here; the prior mismatch is ~1e-4.
    torch.testing.assert_close(out.log_likelihood.double(), expected_log_likelihood(pipe, u, num_levels), atol=0.02, rtol=0)
    assert out.num_levels == num_levels


def test_discrete_data_is_dequantized_at_the_pipeline_levels_by_default():
    pipe = gaussian_pipeline()
    pipe.register_to_config(num_levels=17)  # as saved by a digits run
    u = torch.randint(0, 17, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert pipe(u, num_inference_steps=4, solver="euler", generator=torch.Generator().manual_seed(1)).num_levels == 17


def test_the_output_says_continuous_data_was_not_dequantized():
    pipe = gaussian_pipeline()
    out = pipe(torch.zeros(2, 1, 2, 2, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    assert out.num_levels is None


def test_digit_levels_above_the_stated_number_are_refused():
    with pytest.raises(ValueError, match=r"integer values in \{0, ..., 15\} \(num_levels=16\); got values from 0 to 16"):
        gaussian_pipeline()(torch.tensor([[[[0, 16], [3, 4]]]]), num_levels=16)


def test_evaluate_reports_the_levels_it_used():
    pipe = gaussian_pipeline()
    data = [torch.randint(0, 17, (2, 1, 2, 2), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    result = pipe.evaluate(data, num_levels=17, rtol=1e-4, atol=1e-4, generator=torch.Generator().manual_seed(0))
    assert result.num_levels == 17 and result.num_samples == 4
