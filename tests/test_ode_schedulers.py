"""The probability-flow ODE schedulers: the common scheduler checks, the same steps as the ODE solvers, accuracy
and convergence on exact mixtures, foreign configs (score-SDE and DDPM), and diffusers' own loops."""

import math

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from scheduler_test_mixin import SchedulerCommonTest
from scoresde_diffusers import (
    EXACT_MODEL_SETTINGS,
    GaussianMixtureScoreModel,
    ODE_SOLVERS,
    ScoreSdeDPMSolverMultistepScheduler,
    ScoreSdeHeunScheduler,
    SubVPSDEScheduler,
    VESDEScheduler,
    VPSDEScheduler,
)
from scoresde_diffusers.evaluation import mixture_sample_metrics
from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline
from scoresde_diffusers.sampling.parametrization import from_score

SDE_CONFIGS = {"vp": {}, "subvp": {}, "ve": {"sigma_max": 20.0}}


class _ODESchedulerTest(SchedulerCommonTest):
    round_trip_config = {"sampling_eps": 2e-3, "min_noise_level": 0.05, "time_spacing": "edm"}
    override_config = {"time_spacing": "uniform", "min_noise_level": 0.1}
    registered_name_keys = [
        ("prediction_type", "epsilon"), ("timestep_type", "sigma"), ("time_spacing", "log_snr"), ("sde_type", "subvp"),
    ]  # fmt: skip

    def get_scheduler_config(self, **overrides):
        return {"sde_type": "vp", **overrides}

    def expected_init_noise_sigma(self, config):
        return 1.0


class TestScoreSdeDPMSolverMultistepScheduler(_ODESchedulerTest):
    scheduler_class = ScoreSdeDPMSolverMultistepScheduler


class TestScoreSdeHeunScheduler(_ODESchedulerTest):
    scheduler_class = ScoreSdeHeunScheduler
    expected_order = 2

    def expected_num_timesteps(self, num_inference_steps):
        return 2 * num_inference_steps - 1


class TestScoreSdeDPMSolverMultistepSchedulerVE(_ODESchedulerTest):
    scheduler_class = ScoreSdeDPMSolverMultistepScheduler
    integer_timestep_config = {"timestep_type": "discrete", "prediction_type": "score"}

    def get_scheduler_config(self, **overrides):
        return {"sde_type": "ve", "sigma_max": 50.0, **overrides}

    def expected_init_noise_sigma(self, config):
        return config["sigma_max"]


# ---------------------------------------------------------------------------- helpers
def ring(scheduler):
    """Eight Gaussians of std 0.05 on the unit circle, exact (float64)."""
    angles = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    means = torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixtureScoreModel.from_mixture(torch.ones(8), means, torch.full((8,), 0.05), scheduler=scheduler).double()


def pc_scheduler(sde_type):
    return {"vp": VPSDEScheduler, "subvp": SubVPSDEScheduler, "ve": VESDEScheduler}[sde_type](**SDE_CONFIGS[sde_type])


def loop(scheduler, model, x):
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t).sample, t, x).prev_sample
    return x


def prior(n, scheduler, seed=0):
    return torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma


# ---------------------------------------------------------------------------- the same steps as the ODE solvers
@pytest.mark.parametrize("sde_type", list(SDE_CONFIGS))
@pytest.mark.parametrize("order, corrector, solver", [(1, False, "dpm_solver_1"), (2, False, "dpm_solver_2m"), (3, True, "unipc_3m")])
def test_multistep_scheduler_takes_the_steps_of_the_ode_solver(sde_type, order, corrector, solver):
    model_scheduler = pc_scheduler(sde_type)
    model = ring(model_scheduler)
    scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(model_scheduler.config, solver_order=order, use_corrector=corrector, timestep_type="continuous")
    scheduler.set_timesteps(12)
    x = prior(64, scheduler)
    sde = scheduler.sde

    def denoiser(t, y):
        tb = t.expand(y.shape[0])
        return from_score(sde, model.score(y, tb), y, tb, "sample")

    expected = ODE_SOLVERS.get(solver)(None, x, scheduler.t_grid, sde=sde, denoiser=denoiser, denoise_to_zero=True)
    model = ring(scheduler)  # the model reads `timesteps` the scheduler's way
    torch.testing.assert_close(loop(scheduler, model, x), expected.y, rtol=1e-6, atol=1e-6)
    assert expected.nfe == len(scheduler.timesteps) == 12


def test_heun_scheduler_takes_the_steps_of_edm_heun():
    scheduler = ScoreSdeHeunScheduler(timestep_type="continuous", prediction_type="score")
    model = ring(scheduler)
    scheduler.set_timesteps(8)
    x = prior(64, scheduler)

    def denoiser(t, y):
        tb = t.expand(y.shape[0])
        return from_score(scheduler.sde, model.score(y, tb), y, tb, "sample")

    expected = ODE_SOLVERS.get("edm_heun")(None, x, scheduler.t_grid, sde=scheduler.sde, denoiser=denoiser, denoise_to_zero=False)
    # The scheduler's last stage is the Euler step to zero noise, i.e. the denoiser at the end of the grid.
    last = scheduler.t_grid[-1]
    stages = []
    for t in scheduler.timesteps:
        stages.append(scheduler.state_in_first_order)
        x = scheduler.step(model(x, t).sample, t, x).prev_sample
        if len(stages) == len(scheduler.timesteps) - 1:
            torch.testing.assert_close(x, expected.y, rtol=1e-5, atol=1e-6)  # the model reads float32 `timesteps`
    torch.testing.assert_close(x, denoiser(last, expected.y), rtol=1e-5, atol=1e-6)
    assert stages == [True] + [False, True] * 7
    assert len(scheduler.timesteps) == 15 == expected.nfe + 1


# ---------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("sde_type", list(SDE_CONFIGS))
def test_unipc_multistep_scheduler_samples_the_sharp_ring_in_15_evaluations(sde_type):
    # Goal of issue 7: log-density gap < 0.01 nats/dim, spread within 2%, mode TV at the noise floor, in 20 NFE
    # (VP, sub-VP) or 35 (VE); 15 is the "aim further" budget. On exact models the documented choice is UniPC
    # (order 3 and the corrector) on the clipped logSNR grid ending at u = 0.03, as `ScoreSdeODEPipeline(solver="unipc_3m")`;
    # the default (order 2 on the rho = 7 grid, for trained networks) is checked in test_mixture_family.
    model_scheduler = pc_scheduler(sde_type)
    model = ring(model_scheduler)
    scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(
        model_scheduler.config, time_spacing="log_snr", max_noise_level=3 * math.sqrt(2), min_noise_level=0.03, solver_order=3, use_corrector=True
    )
    scheduler.set_timesteps(15)
    x = loop(scheduler, model, prior(8000, scheduler))
    metrics = mixture_sample_metrics(model, x, reference=model.sample_data(100_000, generator=torch.Generator().manual_seed(1)))
    assert abs(metrics["logp_gap"]) < 0.01 + 3 * metrics["logp_gap_floor"], metrics
    assert metrics["spread"] < 0.02, metrics
    assert metrics["mode_tv"] < 2 * metrics["mode_tv_floor"] + 0.005, metrics


@pytest.mark.parametrize("scheduler_class, steps, expected_order", [(ScoreSdeDPMSolverMultistepScheduler, (6, 12, 24), 2.0), (ScoreSdeHeunScheduler, (6, 12, 24), 2.0)])
def test_ode_schedulers_converge_with_their_order(scheduler_class, steps, expected_order):
    # Error at the end of the grid (no step to zero noise) against a fine-grid solution of the same ODE on a
    # smooth mixture; halving the step size divides it by about 2^order.
    config = dict(final_sigmas_type="sigma_min", min_noise_level=0.2, time_spacing="log_snr", timestep_type="continuous", prediction_type="score")
    means = torch.tensor([[1.0, 0.5], [-1.0, -0.5]], dtype=torch.float64)
    errors, reference = [], None
    for n in (*steps, 400):
        scheduler = scheduler_class(**config)
        model = GaussianMixtureScoreModel.from_mixture(torch.ones(2), means, torch.full((2,), 0.4), scheduler=scheduler).double()
        scheduler.set_timesteps(n)
        x = loop(scheduler, model, prior(64, scheduler, seed=3))
        if n == 400:
            reference = x
        else:
            errors.append(x)
    errors = [float((x - reference).abs().max()) for x in errors]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert errors[0] > errors[1] > errors[2], errors
    assert all(rate > expected_order - 0.6 for rate in rates), (errors, rates)


def test_edited_sample_keeps_its_edit_through_the_corrector():
    # UniC adds a correction that does not depend on the state, so an edit made between steps (inpainting's
    # replacement) moves the next sample by exactly exp(-h) m(t_next) / m(t) times the edit.
    scheduler = ScoreSdeDPMSolverMultistepScheduler(prediction_type="sample")
    scheduler.set_timesteps(6)
    x = torch.randn(4, 2, dtype=torch.float64)
    outputs = [torch.randn(4, 2, dtype=torch.float64) for _ in range(3)]
    results = []
    for edit in (0.0, 0.25):
        scheduler.set_timesteps(6)
        y = x
        for i in range(3):
            if i == 2:
                y = y + edit
            y = scheduler.step(outputs[i], scheduler.timesteps[i], y).prev_sample
        results.append(y)
    sde, t = scheduler.sde, scheduler.t_grid
    m = sde.marginal_mean_coeff(t)
    h = 0.5 * float(sde.log_snr(t[3]) - sde.log_snr(t[2]))
    torch.testing.assert_close(results[1] - results[0], torch.full_like(x, 0.25 * math.exp(-h) * float(m[3] / m[2])))


# ---------------------------------------------------------------------------- configs and loops
@pytest.mark.parametrize("sde_type", list(SDE_CONFIGS))
def test_from_config_of_a_pc_scheduler_keeps_the_sde_and_its_conventions(sde_type):
    source = pc_scheduler(sde_type)
    for scheduler_class in (ScoreSdeDPMSolverMultistepScheduler, ScoreSdeHeunScheduler):
        scheduler = scheduler_class.from_config(source.config)
        assert scheduler.config.sde_type == sde_type
        assert type(scheduler.sde) is type(source.sde) and scheduler.sde == source.sde
        assert scheduler.config.prediction_type == source.config.prediction_type
        assert scheduler.config.timestep_type == source.config.timestep_type
        # and back: the PC scheduler reads the ODE scheduler's config
        back = type(source).from_config(scheduler.config)
        assert back.sde == source.sde


def test_pc_scheduler_refuses_the_config_of_another_sde():
    config = ScoreSdeDPMSolverMultistepScheduler(sde_type="ve").config
    with pytest.raises(ValueError, match=r"config is of the 've' SDE, but VPSDEScheduler samples the 'vp' SDE"):
        VPSDEScheduler.from_config(config)
    assert VESDEScheduler.from_config(config).sde == ScoreSdeDPMSolverMultistepScheduler(sde_type="ve").sde


def test_sde_conventions_are_filled_in_and_saved(tmp_path):
    ve = ScoreSdeDPMSolverMultistepScheduler(sde_type="ve")
    assert (ve.config.prediction_type, ve.config.timestep_type, ve.config.sampling_eps) == ("score", "sigma", 1e-5)
    vp = ScoreSdeDPMSolverMultistepScheduler()
    assert (vp.config.prediction_type, vp.config.timestep_type, vp.config.sampling_eps) == ("epsilon", "discrete", 1e-3)
    ve.save_pretrained(tmp_path)
    assert ScoreSdeDPMSolverMultistepScheduler.from_pretrained(tmp_path).config.prediction_type == "score"


def test_diffusers_score_sde_ve_config_becomes_the_ve_sde():
    from diffusers import ScoreSdeVeScheduler

    scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(ScoreSdeVeScheduler().config)
    assert scheduler.config.sde_type == "ve" and scheduler.config.sigma_max == 1348.0
    assert (scheduler.config.prediction_type, scheduler.config.timestep_type) == ("score", "sigma")


def test_ddpm_pipeline_samples_the_ring_with_the_multistep_scheduler():
    # diffusers' own DDPMPipeline loop, a DDPM scheduler config, 20 model evaluations.
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(ddpm.config, time_spacing="log_snr", max_noise_level=3 * math.sqrt(2))
    assert scheduler.config.sde_type == "vp" and scheduler.config.beta_max == pytest.approx(20.0)
    # The ring as 1x1 images with two channels, the shape DDPMPipeline draws its noise in.
    flat = ring(VPSDEScheduler.from_config(ddpm.config))
    model = GaussianMixtureScoreModel.from_mixture(
        torch.ones(8), flat.means.detach(), torch.full((8,), 0.05), scheduler=VPSDEScheduler.from_config(ddpm.config), sample_size=1, in_channels=2
    ).double()
    pipe = DDPMPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2000, num_inference_steps=20, output_type="np", generator=torch.Generator().manual_seed(0)).images
    x = torch.as_tensor(images).reshape(2000, 2).double() * 2 - 1  # DDPMPipeline maps [-1, 1] to [0, 1]
    radius = x.norm(dim=1)
    assert abs(float(radius.mean()) - 1.0) < 0.02 and float(radius.std()) < 0.08


@pytest.mark.parametrize("scheduler_class", [ScoreSdeDPMSolverMultistepScheduler, ScoreSdeHeunScheduler])
def test_ode_pipeline_runs_the_scheduler_steps(scheduler_class):
    scheduler = scheduler_class(data_range=(-1.0, 1.0), num_levels=256)  # what the pipeline would fill in
    model = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double()
    pipe = ScoreSdeODEPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=16, num_inference_steps=10, output_type="pt", generator=torch.Generator().manual_seed(0))
    scheduler.set_timesteps(10)
    latents = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # The pipeline passes the model float64 timesteps, the loop the grid's float32 `timesteps`: round-off only.
    torch.testing.assert_close(out.images, loop(scheduler, model, latents * scheduler.init_noise_sigma), rtol=1e-6, atol=1e-6)
    assert out.nfe == len(scheduler.timesteps)


def test_ode_pipeline_rejects_grid_arguments_with_an_ode_scheduler():
    scheduler = ScoreSdeDPMSolverMultistepScheduler()
    pipe = ScoreSdeODEPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler)
    with pytest.raises(ValueError, match=r"\['time_spacing'\] set the grid.*from_config\(pipe.scheduler.config"):
        pipe(num_inference_steps=5, time_spacing="edm")


def test_pc_pipeline_rejects_an_ode_scheduler():
    scheduler = ScoreSdeHeunScheduler()
    pipe = ScoreSdePCPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler)
    with pytest.raises(ValueError, match="needs a ScoreSdePCSchedulerMixin scheduler.*ODE schedulers go with ScoreSdeODEPipeline"):
        pipe(num_inference_steps=5)


def test_steps_out_of_order_are_an_error():
    scheduler = ScoreSdeDPMSolverMultistepScheduler()
    scheduler.set_timesteps(5)
    x = torch.randn(2, 2)
    with pytest.raises(ValueError, match=r"start at `timesteps\[0\]`"):
        scheduler.step(torch.zeros_like(x), scheduler.timesteps[2], x)
    scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match="Steps must be taken in order"):
        scheduler.step(torch.zeros_like(x), scheduler.timesteps[3], x)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"sde_type": "bogus"}, r"sde_type='bogus' is not allowed.*subvp"),
        ({"solver_order": 4}, "solver_order must be 1, 2 or 3"),
        ({"final_sigmas_type": "sigma_max"}, r"final_sigmas_type must be one of \['zero', 'sigma_min'\]"),
        ({"min_noise_level": 0.0}, "min_noise_level must be positive"),
        ({"max_noise_level": 0.01}, "max_noise_level must exceed min_noise_level"),
        ({"data_range": (1.0, -1.0)}, "data_range must satisfy low < high"),
        ({"num_levels": 1}, "num_levels must be an integer >= 2"),
        ({"min_noise_level": 1000.0}, "above the prior's noise level"),
        ({"max_noise_level": "diameter"}, "max_noise_level must be a noise level, 'data_diameter' or None"),
        ({"time_spacing": "log_snr", "max_noise_level": "data_diameter"}, "needs the number of entries of one sample: set data_dim"),
        ({"data_dim": 0}, "data_dim must be an integer >= 1"),
        # data in [-1, 1], one entry: diameter 2, below the grid's end near sigma_min = 3
        ({"sde_type": "ve", "sigma_min": 3.0, "max_noise_level": "data_diameter", "data_dim": 1}, r"max_noise_level must exceed min_noise_level \(3[.0-9]*\), got 'data_diameter' = 2\."),
        ({"prior_mean_tolerance": -0.1}, "prior_mean_tolerance must be a number >= 0"),
    ],
)
def test_bad_ode_scheduler_config(config, message):
    with pytest.raises(ValueError, match=message):
        ScoreSdeDPMSolverMultistepScheduler(**config).set_timesteps(5)


def test_ode_pipeline_calls_the_step_end_callback_at_every_scheduler_step():
    scheduler = ScoreSdeHeunScheduler(data_range=(-1.0, 1.0), num_levels=256)  # complete: the pipeline runs it as it is
    pipe = ScoreSdeODEPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler).double(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def callback(pipe, i, t, kwargs):
        seen.append((i, float(t)))
        return {"sample": torch.zeros_like(kwargs["sample"])} if i == len(scheduler.timesteps) - 1 else None

    out = pipe(batch_size=4, num_inference_steps=5, output_type="pt", callback_on_step_end=callback)
    assert seen == [(i, float(t)) for i, t in enumerate(scheduler.timesteps)]
    assert torch.equal(out.images, torch.zeros(4, 2, dtype=torch.float64))  # the last callback's replacement is the output


# ---------------------------------------------------------------------------- the derived end of the grid
def test_grid_ends_at_the_model_smallest_trained_noise_level():
    # VE: u = sigma(eps) = sigma_min (sigma_max / sigma_min)^eps; a DDPM-discrete VP model: t = 1/N (timestep 0), where
    # u^2 = exp(beta_min t + (beta_max - beta_min) t^2 / 2) - 1 (Song et al. 2021, eq. 33).
    ve = ScoreSdeDPMSolverMultistepScheduler(sde_type="ve", sigma_min=0.01, sigma_max=50.0)
    assert ve.end_noise_level == pytest.approx(0.01 * 5000.0**1e-5, rel=1e-9)
    vp = ScoreSdeDPMSolverMultistepScheduler(sde_type="vp", num_train_timesteps=1000, sampling_eps=1e-4)
    t = 1e-3
    assert vp.end_noise_level == pytest.approx(math.sqrt(math.expm1(0.1 * t + 19.9 * t**2 / 2)), rel=1e-9)
    vp.set_timesteps(10)
    assert float(vp.t_grid[-1]) == pytest.approx(t, rel=1e-12)
    assert float(ScoreSdeDPMSolverMultistepScheduler(min_noise_level=0.05).end_noise_level) == 0.05


def test_grid_ends_no_lower_than_the_spacing_of_the_data_levels():
    # sub-VP's trained range reaches u ~ beta_min eps = 1e-4, far below one level of 8-bit data: the grid ends at
    # (high - low) / 255 (and still at the model's level where that is higher, VP's 0.0105).
    subvp = ScoreSdeDPMSolverMultistepScheduler(sde_type="subvp")
    assert subvp.trained_noise_level == pytest.approx(1e-4, rel=0.1)
    assert subvp.end_noise_level == 2.0 / 255
    subvp.set_timesteps(10)
    t_end = float(subvp.t_grid[-1])
    assert float(torch.exp(-0.5 * subvp.sde.log_snr(torch.tensor(t_end, dtype=torch.float64)))) == pytest.approx(2.0 / 255, rel=1e-6)
    vp = ScoreSdeDPMSolverMultistepScheduler(sde_type="vp")
    assert vp.end_noise_level == vp.trained_noise_level > 2.0 / 255
    # scikit-learn's digits: 17 grey levels in [-1, 1], one level is 0.125 (above VP's trained level)
    assert ScoreSdeDPMSolverMultistepScheduler(sde_type="vp", num_levels=17).end_noise_level == 0.125
    assert ScoreSdeDPMSolverMultistepScheduler(sde_type="subvp", data_range=(0.0, 1.0)).end_noise_level == 1.0 / 255


def test_lower_order_final_ends_on_the_model_x0_prediction():
    # The last step to zero noise of lower_order_final is Tweedie's mean at the end of the grid: for an exact
    # Gaussian N(mu, s^2) that is mu + s^2 / (s^2 + u^2) (y - mu) in y = x / m.
    scheduler = ScoreSdeDPMSolverMultistepScheduler(lower_order_final=True, prediction_type="score", timestep_type="continuous")
    mean, std = torch.tensor([[0.3, -0.2]], dtype=torch.float64), 0.2
    model = GaussianMixtureScoreModel.from_mixture(torch.ones(1), mean, torch.full((1,), std), scheduler=scheduler).double()
    scheduler.set_timesteps(8)
    x = prior(16, scheduler)
    for i, t in enumerate(scheduler.timesteps):
        if i == len(scheduler.timesteps) - 1:
            last_x, t_last = x, scheduler.t_grid[i]
        x = scheduler.step(model(x, t).sample, t, x).prev_sample
    m = math.exp(float(scheduler.sde.log_mean_coeff(t_last)))
    u = float(scheduler.sde.marginal_std(t_last)) / m
    y = last_x / m
    torch.testing.assert_close(x, mean + std**2 / (std**2 + u**2) * (y - mean), rtol=1e-9, atol=1e-9)


def test_fixed_step_grid_is_the_registered_grid_from_T_to_eps():
    scheduler = VPSDEScheduler()
    grid = scheduler.fixed_step_grid(4, 1e-3, "uniform")
    torch.testing.assert_close(grid, torch.linspace(1.0, 1e-3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sampling_eps must lie in \(0, 1"):
        scheduler.fixed_step_grid(4, 1.5)


# ---------------------------------------------------------------------------- the settings for exact models
def test_data_diameter_jump_goes_to_the_data_ranges_diameter():
    # data in [0, 1], 9 entries per sample: diameter 1 x sqrt(9) = 3; the second grid time sits at that noise level.
    scheduler = ScoreSdeDPMSolverMultistepScheduler(time_spacing="log_snr", max_noise_level="data_diameter", data_range=(0.0, 1.0), data_dim=9)
    scheduler.set_timesteps(10)
    assert scheduler.first_noise_level == pytest.approx(3.0)
    assert scheduler._noise_level_at(float(scheduler.t_grid[1])) == pytest.approx(3.0, rel=1e-6)
    assert scheduler._noise_level_at(float(scheduler.t_grid[0])) > 100  # the first step starts at the prior (VP: u ~ 150)


def test_ode_pipeline_tells_the_scheduler_the_data_dimension_for_the_data_diameter_jump():
    vp = VPSDEScheduler()
    scheduler = ScoreSdeDPMSolverMultistepScheduler.from_config(vp.config, **EXACT_MODEL_SETTINGS)
    pipe = ScoreSdeODEPipeline(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=vp).double(), scheduler=scheduler, data_range=(-1.0, 1.0))
    ode = pipe.ode_scheduler()
    assert ode.config.data_dim == 2 and ode.first_noise_level == pytest.approx(2 * math.sqrt(2))
    # With a numeric jump or none the pipeline leaves data_dim alone.
    assert ScoreSdeODEPipeline(unet=pipe.unet, scheduler=ScoreSdeDPMSolverMultistepScheduler.from_config(vp.config)).ode_scheduler().config.data_dim is None


def test_prior_mean_tolerance_zero_always_asks_the_model_for_the_data_mean():
    default, exact = ScoreSdeDPMSolverMultistepScheduler(), ScoreSdeDPMSolverMultistepScheduler(prior_mean_tolerance=0.0)
    assert not default.data_mean_matters((-1.0, 1.0))  # VP: m(1) ~ 0.007, a centred prior costs ~1e-5 nats per entry
    assert exact.data_mean_matters((-1.0, 1.0))
