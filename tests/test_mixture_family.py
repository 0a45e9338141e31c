"""The random Gaussian-mixture family: its contract, and the default ODE sampler on a few pinned members."""

import math

import pytest
import torch

from scoresde_diffusers.models.mixture_family import (
    DIM_RANGE,
    FAMILY_SDES,
    NUM_MODES_RANGE,
    PARAMETRIZATIONS,
    STD_FRACTION_RANGE,
    family_member,
    family_sample_metrics,
    random_family_member,
    random_mixture,
)
from scoresde_diffusers.pipelines import ScoreSdeODEPipeline
from scoresde_diffusers.pipelines.pipeline_score_sde_utils import ScoreSdePipelineMixin
from scoresde_diffusers.schedulers import EXACT_MODEL_SETTINGS, SMOOTH_MODEL_SETTINGS, ScoreSdeDPMSolverMultistepScheduler
from scoresde_diffusers.sampling.parametrization import from_score

SEEDS = range(12)


def draw(seed, **options):
    return random_mixture(torch.Generator().manual_seed(seed), max_dim=options.pop("max_dim", 24), **options)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- the mixture's contract
def test_dimension_and_number_of_modes_lie_in_the_family_ranges():
    mixtures = [draw(seed) for seed in SEEDS]
    assert all(DIM_RANGE[0] <= m.dim <= 24 for m in mixtures)
    assert all(NUM_MODES_RANGE[0] <= m.num_modes <= NUM_MODES_RANGE[1] for m in mixtures)
    assert len({m.dim for m in mixtures}) > 3 and len({m.num_modes for m in mixtures}) > 3


def test_the_largest_dimension_and_number_of_modes_can_be_drawn():
    mixture = draw(0, dim=256, num_modes=10, max_dim=256)
    assert mixture.means.shape == (10, 256) and mixture.covariances.shape == (10, 256, 256)


def test_weights_are_positive_unequal_and_sum_to_one():
    for seed in SEEDS:
        weights = draw(seed, num_modes=5).weights
        assert torch.all(weights > 0)
        assert math.isclose(float(weights.sum()), 1.0, abs_tol=1e-12)
        assert float(weights.max() - weights.min()) > 1e-3


def test_mode_stds_are_between_two_and_thirty_percent_of_the_data_range():
    low_fraction, high_fraction = STD_FRACTION_RANGE
    for seed in SEEDS:
        mixture = draw(seed)
        width = mixture.data_range[1] - mixture.data_range[0]
        # The covariance's own eigenvalues, not the stored axis stds: they are what the model samples.
        stds = torch.linalg.eigvalsh(mixture.covariances).sqrt() / width
        assert float(stds.min()) >= low_fraction * (1 - 1e-9) and float(stds.max()) <= high_fraction * (1 + 1e-9)


def test_covariances_are_rotated_not_axis_aligned():
    covariances = draw(3, dim=8, num_modes=2).covariances
    off_diagonal = covariances - torch.diag_embed(torch.diagonal(covariances, dim1=-2, dim2=-1))
    assert float(off_diagonal.abs().max()) > 0.01 * float(covariances.abs().max())


def test_means_lie_inside_the_data_range_and_both_ranges_occur():
    mixtures = [draw(seed) for seed in SEEDS]
    for m in mixtures:
        low, high = m.data_range
        assert float(m.means.min()) >= low and float(m.means.max()) <= high
    assert {m.data_range for m in mixtures} == {(-1.0, 1.0), (0.0, 1.0)}


def test_the_same_seed_draws_the_same_mixture_and_another_seed_another():
    first, again, other = draw(5), draw(5), draw(6)
    assert torch.equal(first.means, again.means) and torch.equal(first.covariances, again.covariances)
    assert torch.equal(first.weights, again.weights) and first.largest_pairwise_distance == again.largest_pairwise_distance
    assert first.means.shape != other.means.shape or not torch.equal(first.means, other.means)


def test_fixing_the_dimension_leaves_the_other_draws_unchanged():
    free, fixed = draw(7), draw(7, dim=5)
    assert fixed.dim == 5 and fixed.num_modes == free.num_modes and fixed.data_range == free.data_range


@pytest.mark.parametrize("options, message", [({"dim": 1}, "dim must be an integer in"), ({"num_modes": 11}, "num_modes must be"), ({"data_range": (0, 2)}, "data_range must be one of")])
def test_out_of_family_choices_are_refused_with_the_allowed_values(options, message):
    with pytest.raises(ValueError, match=message):
        draw(0, **options)


# ---------------------------------------------------------------------------- members: SDEs and parametrisations
MEMBER_KINDS = [(sde, name) for name, (_, sdes) in PARAMETRIZATIONS.items() for sde in sdes]


@pytest.mark.parametrize("sde, parametrization", MEMBER_KINDS)
def test_every_sde_and_parametrization_gives_a_model_that_feeds_its_scheduler(sde, parametrization):
    member = family_member(draw(2, max_dim=6), sde, parametrization)
    model, scheduler = member.model, member.scheduler
    keys, _ = PARAMETRIZATIONS[parametrization]
    assert scheduler.sde.name == model.sde.name == sde
    assert {k: scheduler.config[k] for k in keys} == keys == {k: model.config[k] for k in keys}
    # The model's output at a scheduler timestep is the exact score in the scheduler's parametrisation.
    x = model.sample_data(4, generator=torch.Generator().manual_seed(0), t=0.3)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    expected = from_score(scheduler.sde, model.score(x, t), x, t, scheduler.config.prediction_type)
    assert torch.allclose(model(x, scheduler.t_to_timestep(t)).sample, expected, rtol=1e-6, atol=1e-8)


def test_ddpm_epsilon_models_are_called_with_integer_steps_of_n_1000():
    member = family_member(draw(2, max_dim=6), "vp", "ddpm_epsilon")
    assert member.scheduler.config.num_train_timesteps == 1000
    assert float(member.scheduler.t_to_timestep(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(999.0)


@pytest.mark.parametrize("factor", [1.0, 4.0])
def test_ve_sigma_max_is_the_largest_pairwise_distance_times_the_factor(factor):
    mixture = draw(4)
    member = family_member(mixture, "ve", "sigma_score", sigma_max_factor=factor)
    points = member.model.sample_data(1000, generator=torch.Generator().manual_seed(1)).double()
    assert member.scheduler.config.sigma_max == pytest.approx(factor * mixture.largest_pairwise_distance)
    # The rule was measured on 1000 points: another 1000 points give a comparable largest distance.
    assert 0.7 < float(torch.cdist(points, points).max()) / mixture.largest_pairwise_distance < 1.3


def test_ve_sigma_min_is_well_below_the_narrowest_mode():
    for seed in SEEDS:
        mixture = draw(seed)
        sigma_min = family_member(mixture, "ve", "continuous_score").scheduler.config.sigma_min
        assert sigma_min <= 0.01 and sigma_min <= float(torch.linalg.eigvalsh(mixture.covariances).min().sqrt()) / 4 * (1 + 1e-9)


def test_vp_and_subvp_use_score_sdes_beta_range():
    for sde in ("vp", "subvp"):
        config = family_member(draw(1), sde, "continuous_score").scheduler.config
        assert (config.beta_min, config.beta_max) == (0.1, 20.0)


def test_a_parametrization_that_does_not_apply_to_the_sde_is_refused():
    with pytest.raises(ValueError, match=r"'ddpm_epsilon' does not apply to 've'.*continuous_score"):
        family_member(draw(0), "ve", "ddpm_epsilon")


def test_random_family_member_draws_every_sde_and_describes_it():
    members = [random_family_member(torch.Generator().manual_seed(seed), max_dim=8) for seed in range(20)]
    assert {m.description["sde"] for m in members} == set(FAMILY_SDES)
    for m in members:
        d = m.description
        assert d["dim"] == m.model.config.dim and d["num_modes"] == m.model.config.num_components
        assert d["parametrization"] in PARAMETRIZATIONS and ("sigma_max" in d) == (d["sde"] == "ve")


def test_random_family_member_is_deterministic_per_seed():
    a, b = (random_family_member(torch.Generator().manual_seed(11), max_dim=8) for _ in range(2))
    assert a.description == b.description
    assert torch.equal(a.model.covariances, b.model.covariances)


# ---------------------------------------------------------------------------- metrics
def exact_sample_metrics(seed, batch=4000):
    member = family_member(draw(seed, max_dim=16), "vp", "continuous_score")
    samples = member.model.sample_data(batch, generator=torch.Generator().manual_seed(100))
    return family_sample_metrics(member.model, samples, member.model.sample_data(20000, generator=torch.Generator().manual_seed(1)))


def test_exact_samples_of_overlapping_modes_meet_the_target():
    # Mixture 3: eight modes in 2-D [0, 1]; a most-probable-component count against the weights puts even exact
    # samples 4-5 floors off, so the mode weights are compared as the metric assigns them.
    metrics = exact_sample_metrics(3)
    assert metrics["mode_tv_weights"] > 2 * metrics["mode_tv_floor"] + 0.005
    assert metrics["badness"] <= 1, metrics


def test_badness_is_above_one_for_samples_with_a_missing_mode():
    member = family_member(draw(6, max_dim=16), "vp", "continuous_score")
    samples, labels = member.model.sample_data(4000, generator=torch.Generator().manual_seed(100), return_labels=True)
    kept = samples[labels != int(member.model.weights.argmax())]
    metrics = family_sample_metrics(member.model, kept, member.model.sample_data(20000, generator=torch.Generator().manual_seed(1)))
    assert metrics["mode_tv"] > 2 * metrics["mode_tv_floor"] + 0.005 and metrics["badness"] > 1


# ---------------------------------------------------------------------------- pinned members, default ODE sampler
# The default ODE sampler (DPM-Solver++(2M) on Karras et al.'s rho = 7 grid, chosen on the trained digits UNet) on
# members where it reaches the target: VE at issue 13's 35 NFE, VP and sub-VP only at 50 (the rho = 7 grid spends
# its steps at high noise, where a trained network needs them and an exact mixture does not). The full family
# (docs/benchmarks.md, "Worst case over a random mixture family") has members where it does not.
# Tolerances: |gap| <= 0.01 nats/dim + 2 floors, spread <= 0.02 + its floor, mode TV <= 2 floors + 0.005.
NFE_OF_DEFAULT = {"ve": 35, "vp": 50, "subvp": 50}
SUBVP_4 = pytest.mark.xfail(strict=True, reason="sub-VP member 4 (D = 5, two modes in [0, 1]) needs more steps: badness 1.5 at 50 NFE (rho = 7); 0.93 at 20 with SMOOTH_MODEL_SETTINGS")
PINNED = [
    (6, "ve", "sigma_score", 4.0),  # D = 6, 4 modes in [-1, 1], narrowest std 0.057
    (6, "vp", "ddpm_epsilon", 1.0),
    (6, "subvp", "continuous_score", 1.0),
    (9, "vp", "ddpm_epsilon", 1.0),  # D = 3, 5 modes in [0, 1], narrowest std 0.044
    pytest.param(4, "subvp", "continuous_score", 1.0, marks=SUBVP_4),  # D = 5, 2 modes in [0, 1], narrowest std 0.051
    (8, "ve", "continuous_score", 4.0),  # D = 10, 2 modes in [0, 1], narrowest std 0.045
]


def assert_at_the_floor(metrics):
    assert abs(metrics["logp_gap"]) <= 0.01 + 2 * metrics["logp_gap_floor"], metrics
    assert metrics["spread"] <= 0.02 + metrics["spread_floor"], metrics
    assert metrics["mode_tv"] <= 2 * metrics["mode_tv_floor"] + 0.005, metrics
    assert metrics["badness"] <= 1, metrics


@pytest.mark.parametrize("seed, sde, parametrization, factor", PINNED)
def test_default_ode_sampler_reaches_the_floor_on_pinned_members(seed, sde, parametrization, factor):
    assert_at_the_floor(default_ode_metrics(seed, sde, parametrization, factor, nfe=NFE_OF_DEFAULT[sde]))


# `SMOOTH_MODEL_SETTINGS` (UniPC-3 on the logSNR grid), the exact-model choice, reach VP and sub-VP members at issue
# 13's 20 NFE where the defaults need 50; on 22 of the 24 VP / sub-VP members of seeds 0-11 (D <= 16), worst 1.49.
SUBVP_5 = pytest.mark.xfail(strict=True, reason="sub-VP member 5 (D = 7, 8 modes in [0, 1], narrowest std 0.025): badness 1.49 at 20 NFE")


@pytest.mark.parametrize(
    "seed, sde, parametrization",
    [
        (9, "vp", "ddpm_epsilon"),  # D = 3, 5 modes in [0, 1], narrowest std 0.044
        (10, "vp", "ddpm_epsilon"),  # D = 8, 3 modes in [0, 1], narrowest std 0.023
        (8, "subvp", "continuous_score"),  # D = 10, 2 modes in [0, 1], narrowest std 0.045
        (1, "subvp", "continuous_score"),  # D = 2, 5 modes in [-1, 1], narrowest std 0.063
        pytest.param(5, "subvp", "continuous_score", marks=SUBVP_5),
    ],
)
def test_smooth_model_settings_reach_vp_and_subvp_pinned_members_at_20_nfe(seed, sde, parametrization):
    assert_at_the_floor(default_ode_metrics(seed, sde, parametrization, 1.0, nfe=20, **SMOOTH_MODEL_SETTINGS))


# VE at score_sde's rule (sigma_max = the data's largest pairwise distance, factor 1): a mean off by d costs the prior
# d^2 / (2 sigma_max^2) nats per entry, so the pipelines take the prior's mean from the model
# (`ScoreSdePipelineMixin.data_mean`). Members whose data mean is far from the range's centre (rms 0.12 to 0.93
# sigma_max): at 35 NFE, badness 0.88 / 0.45 / 0.22 with the model's mean, 2.87 / 2.12 / 18.1 with the range's centre.
VE_AT_THE_RULE = [
    (4, "sigma_score"),  # D = 5, 2 modes in [0, 1]
    (7, "sigma_score"),  # D = 3, 2 modes in [-1, 1]
    (11, "sigma_score"),  # D = 3, one mode in [0, 1], sigma_max = 0.24
]


@pytest.mark.parametrize("seed, parametrization", VE_AT_THE_RULE)
def test_default_ode_sampler_reaches_the_floor_on_ve_members_at_score_sdes_rule(seed, parametrization):
    assert_at_the_floor(default_ode_metrics(seed, "ve", parametrization, 1.0, nfe=35))


def test_a_prior_centred_on_the_data_range_misses_an_off_centre_ve_member_at_the_rule(monkeypatch):
    monkeypatch.setattr(ScoreSdePipelineMixin, "data_mean", lambda self, *args, **kwargs: self.data_center)
    metrics = default_ode_metrics(11, "ve", "sigma_score", 1.0, nfe=35)
    assert metrics["logp_gap"] > 0.1 and metrics["badness"] > 5, metrics


# One mode of std 0.030-0.19 in 3-D [0, 1]. A grid ending at the absolute noise level 0.03 (the earlier default),
# this mode's own width, left the samples too concentrated (gap -0.077 nats/dim, spread 9.5% at 20 NFE); the derived
# end, the model's smallest trained noise level (u = 0.01 for a DDPM model), reaches the floor.
def test_default_ode_sampler_reaches_the_floor_at_20_nfe_on_a_narrow_single_mode_vp_member():
    metrics = default_ode_metrics(11, "vp", "ddpm_epsilon", 1.0, nfe=20)
    assert abs(metrics["logp_gap"]) <= 0.01 + 2 * metrics["logp_gap_floor"], metrics
    assert metrics["spread"] <= 0.02 + metrics["spread_floor"], metrics


def default_ode_metrics(seed, sde, parametrization, factor, nfe, batch=4000, **scheduler_config):
    """`mixture_sample_metrics` of `ScoreSdeODEPipeline`'s default at `nfe` on a member of mixture `seed` (with
    `scheduler_config`, of `ScoreSdeDPMSolverMultistepScheduler` with those settings)."""
    mixture = random_mixture(torch.Generator().manual_seed(seed), max_dim=16)
    member = family_member(mixture, sde, parametrization, sigma_max_factor=factor)
    scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(member.scheduler.config, **scheduler_config) if scheduler_config else member.scheduler
    pipe = ScoreSdeODEPipeline(unet=member.model, scheduler=scheduler, data_range=mixture.data_range)
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=batch, num_inference_steps=nfe, generator=torch.Generator().manual_seed(0), output_type="pt").images
    return family_sample_metrics(member.model, samples, member.model.sample_data(20000, generator=torch.Generator().manual_seed(1)))


# `EXACT_MODEL_SETTINGS`: `SMOOTH_MODEL_SETTINGS` with the first step jumping to the data range's diameter and the
# prior's mean always from the model. On seeds 0-11 (D <= 16) they pass every VP and sub-VP member at 20 NFE (worst
# 0.89) and every VE member above score_sde's rule at 35 (worst 0.89); these are members that the smooth-model
# settings alone miss.
@pytest.mark.parametrize(
    "seed, sde, parametrization",
    [
        (5, "subvp", "continuous_score"),  # D = 7, 8 modes in [0, 1], narrowest std 0.025: smooth-model settings 1.49
        (6, "subvp", "ddpm_epsilon"),  # D = 6, 4 modes in [-1, 1]: 1.05
    ],
)
def test_exact_model_settings_reach_subvp_members_at_20_nfe_that_the_smooth_model_settings_miss(seed, sde, parametrization):
    assert default_ode_metrics(seed, sde, parametrization, 1.0, nfe=20, **SMOOTH_MODEL_SETTINGS)["badness"] > 1
    assert_at_the_floor(default_ode_metrics(seed, sde, parametrization, 1.0, nfe=20, **EXACT_MODEL_SETTINGS))


def test_exact_model_settings_take_the_prior_mean_from_the_model_above_score_sdes_rule():
    # D = 15, 4 modes, sigma_max 4 x the rule: a prior centred on the range costs less than 0.01 nats per entry, yet
    # leaves the samples' mode weights off (badness 1.20 at 35 NFE); the model's mean removes it.
    assert default_ode_metrics(0, "ve", "sigma_score", 4.0, nfe=35, **SMOOTH_MODEL_SETTINGS)["badness"] > 1
    assert_at_the_floor(default_ode_metrics(0, "ve", "sigma_score", 4.0, nfe=35, **EXACT_MODEL_SETTINGS))
