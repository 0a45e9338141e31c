"""`SchedulerCommonTest`: the checks every score-SDE scheduler class must pass (issue 3, item 6), and
`PCSchedulerCommonTest`: those of the predictor-corrector schedulers (`step_correct`, predictors, correctors).

A scheduler's test subclasses a mixin, sets `scheduler_class` and overrides `get_scheduler_config()`;
differences between schedulers are declared through the class attributes and hooks below, never through
``if scheduler_class == X`` branches.

Checks are against closed forms (the SDE's marginals, the exact Gaussian-mixture score), not golden sums.
"""

import inspect

import pytest
import torch

from scoresde_diffusers.models import GaussianMixtureScoreModel
from scoresde_diffusers.registry import CORRECTORS, PREDICTORS, TIMESTEP_MAPS
from scoresde_diffusers.sampling.parametrization import PREDICTION_TYPES

#: Devices every device-aware check runs on; "cuda" is listed (and skipped) where no GPU is present.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]

#: Sample shapes every shape check runs on: flat 2-D toy data and image-shaped data.
SHAPES = [(4, 2), (3, 3, 4, 4)]


class SchedulerCommonTest:
    """Mixin of checks shared by every score-SDE scheduler.

    Subclass hooks:
        scheduler_class: the scheduler class under test.
        get_scheduler_config(**overrides): its config (defaults + overrides).
        expected_init_noise_sigma(config): the prior standard deviation the config implies.
        integer_timestep_config: config overrides under which model timesteps are DDPM integers 0..N-1.
        num_inference_steps: the grid size of the quick checks.
        deterministic_config: config overrides under which `step` draws no noise.
        round_trip_config, override_config: configs that differ from the defaults, for the config checks.
        registered_name_keys: (config key, a registered value) of every key that must name a registered entry.
        expected_order: the scheduler's `order` (model evaluations per step of its method).
        expected_num_timesteps(n): len(timesteps) after ``set_timesteps(n)``.
    """

    scheduler_class = None
    num_inference_steps = 10
    integer_timestep_config = {"timestep_type": "discrete"}
    deterministic_config = {}
    round_trip_config = {"sampling_eps": 2e-3}
    override_config = {}
    registered_name_keys = [("prediction_type", "epsilon"), ("timestep_type", "sigma")]
    expected_order = 1

    def expected_num_timesteps(self, num_inference_steps: int) -> int:
        return num_inference_steps

    # ------------------------------------------------------------------ hooks
    def get_scheduler_config(self, **overrides) -> dict:
        raise NotImplementedError

    def expected_init_noise_sigma(self, config: dict) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def make_scheduler(self, **overrides):
        return self.scheduler_class(**self.get_scheduler_config(**overrides))

    @staticmethod
    def sample(shape=(4, 2), dtype=torch.float32, device="cpu", seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    @staticmethod
    def model_output(sample):
        # Any finite, sample-dependent output exercises the arithmetic; exactness is checked with the mixture.
        return torch.tanh(sample) - 0.3 * sample

    def mixture_model(self, scheduler, dtype=torch.float64, **config):
        return GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler, **config).to(dtype)

    def run_steps(self, scheduler, sample, n_steps, seed=0):
        """The first `n_steps` steps with the cheap model output, a fresh generator seeded with `seed`."""
        g = torch.Generator(device=sample.device).manual_seed(seed)
        for t in scheduler.timesteps[:n_steps]:
            sample = scheduler.step(self.model_output(sample), t, sample, generator=g).prev_sample
        return sample

    def sample_with(self, scheduler, model, x, model_times=False):
        """The whole loop with `model`; with `model_times` the model gets the float64 time of each step (the float32
        `timesteps` round it), so two schedulers on the same continuous grid call it at exactly the same times."""
        for i, t in enumerate(scheduler.timesteps):
            model_t = scheduler.t_to_timestep(scheduler.timestep_times[i]) if model_times else t
            # diffusers' scheduler-agnostic loops hand the model `scale_model_input`'s output (identity unless the
            # prediction type preconditions its input, as ``edm`` does)
            model_output = model(scheduler.scale_model_input(x, model_t), model_t).sample
            x = scheduler.step(model_output, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        return x

    # ------------------------------------------------------------------ config
    def test_save_load_round_trip(self, tmp_path):
        scheduler = self.make_scheduler(**self.round_trip_config)
        scheduler.save_pretrained(tmp_path)
        loaded = self.scheduler_class.from_pretrained(tmp_path)
        assert type(loaded) is self.scheduler_class
        # `_use_default_values` is diffusers' in-memory bookkeeping and is not written to the JSON file.
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(loaded.config) == public(scheduler.config)
        assert loaded.config._class_name == self.scheduler_class.__name__
        assert loaded.sde == scheduler.sde

        for other in (loaded, self.scheduler_class.from_config(scheduler.config)):
            for s in (scheduler, other):
                s.set_timesteps(self.num_inference_steps)
            x = self.sample()
            torch.testing.assert_close(self.run_steps(other, x, 3), self.run_steps(scheduler, x, 3))

    def test_from_config_with_overrides(self):
        scheduler = self.make_scheduler()
        other = self.scheduler_class.from_config(scheduler.config, **self.override_config)
        assert all(other.config[k] == v for k, v in self.override_config.items())
        unchanged = {k: v for k, v in scheduler.config.items() if k not in self.override_config and not k.startswith("_")}
        assert {k: other.config[k] for k in unchanged} == unchanged

    # ------------------------------------------------------------------ the diffusers scheduler contract
    def test_public_api(self):
        scheduler = self.make_scheduler()
        for name in ("set_timesteps", "step", "add_noise", "scale_model_input", "save_pretrained", "index_for_timestep"):
            assert callable(getattr(scheduler, name))
        assert scheduler.order == self.expected_order
        step_params = inspect.signature(scheduler.step).parameters
        assert list(step_params)[:3] == ["model_output", "timestep", "sample"]
        assert "generator" in step_params and "return_dict" in step_params

    def test_init_noise_sigma_is_prior_std(self):
        config = self.get_scheduler_config()
        scheduler = self.scheduler_class(**config)
        assert scheduler.init_noise_sigma == pytest.approx(self.expected_init_noise_sigma(config))
        assert scheduler.init_noise_sigma == pytest.approx(scheduler.sde.prior_std)
        # The prior is (up to exp(-integral of beta), ~4e-5 for sub-VP) the marginal at t = 1 of x_0 = 0.
        std_at_1 = float(scheduler.sde.marginal_std(torch.tensor(1.0, dtype=torch.float64)))
        assert std_at_1 == pytest.approx(scheduler.init_noise_sigma, rel=1e-4)

    def test_scale_model_input_is_identity(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((2, 3, 4, 4))
        for t in scheduler.timesteps[:2]:
            assert torch.equal(scheduler.scale_model_input(x, t), x)

    @pytest.mark.parametrize("num_inference_steps", [1, 2, 7, 50])
    def test_timesteps_and_grid(self, num_inference_steps):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(num_inference_steps)
        eps = scheduler.config.sampling_eps
        n = self.expected_num_timesteps(num_inference_steps)
        assert len(scheduler.timesteps) == n == len(scheduler.timestep_times) == len(scheduler.sigmas)
        assert float(scheduler.t_grid[0]) == 1.0 and float(scheduler.timestep_times[0]) == 1.0
        assert torch.all((scheduler.t_grid >= eps - 1e-12) & (scheduler.t_grid <= 1.0))
        assert torch.all(scheduler.t_grid[1:] < scheduler.t_grid[:-1])
        assert torch.all(scheduler.timestep_times[1:] <= scheduler.timestep_times[:-1])
        # The model timesteps are the step times mapped through timestep_type, inside the map's image of [eps, 1].
        low, high = (float(scheduler.t_to_timestep(torch.tensor(v, dtype=torch.float64))) for v in (eps, 1.0))
        assert torch.all((scheduler.timesteps >= low - 1e-4 * abs(low)) & (scheduler.timesteps <= high * (1 + 1e-6)))
        torch.testing.assert_close(scheduler.timestep_to_t(scheduler.timesteps.double()), scheduler.timestep_times, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scheduler.sigmas.double(), scheduler.sde.marginal_std(scheduler.timestep_times), rtol=1e-6, atol=0)

    @pytest.mark.parametrize("device", DEVICES)
    def test_set_timesteps_device(self, device):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        assert scheduler.timesteps.device.type == torch.device(device).type
        assert scheduler.sigmas.device.type == torch.device(device).type

    # ------------------------------------------------------------------ steps
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("device", DEVICES)
    def test_step_shape_and_device(self, shape, device):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        x = self.sample(shape, device=device)
        t0, t1 = scheduler.timesteps[0], scheduler.timesteps[1]
        for t in (t0, t1):
            out = scheduler.step(self.model_output(x), t, x)
            for tensor in (out.prev_sample, out.prev_sample_mean, out.pred_original_sample):
                assert tensor.shape == x.shape and tensor.device == x.device and tensor.dtype == x.dtype
            x = out.prev_sample

    @pytest.mark.parametrize("shape", SHAPES)
    def test_step_timestep_forms(self, shape):
        # A python float, a 0-d tensor and a batch of equal values all mean the same grid point.
        scheduler = self.make_scheduler(**self.deterministic_config)
        x = self.sample(shape)
        results = []
        for form in (lambda t: t, float, lambda t: t.double(), lambda t: t.expand(shape[0]).clone()):
            scheduler.set_timesteps(self.num_inference_steps)
            y = self.run_steps(scheduler, x, 3)
            results.append(scheduler.step(self.model_output(y), form(scheduler.timesteps[3]), y).prev_sample)
        for result in results[1:]:
            torch.testing.assert_close(result, results[0])

    def test_tuple_and_dict_outputs_agree(self):
        scheduler = self.make_scheduler()
        x = self.sample((3, 3, 2, 2))
        outputs = []
        for return_dict in (True, False):
            scheduler.set_timesteps(self.num_inference_steps)
            y = self.run_steps(scheduler, x, 1)
            outputs.append(scheduler.step(self.model_output(y), scheduler.timesteps[1], y, generator=torch.Generator().manual_seed(3), return_dict=return_dict))
        out_dict, out_tuple = outputs
        assert isinstance(out_tuple, tuple)
        for a, b in zip(out_tuple, out_dict.to_tuple()):
            assert torch.equal(a, b)
        assert torch.equal(out_tuple[0], out_dict.prev_sample)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
    def test_output_dtype_follows_input(self, dtype):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((4, 2), dtype=dtype)
        out = scheduler.step(self.model_output(x), scheduler.timesteps[0], x)
        for tensor in (out.prev_sample, out.prev_sample_mean, out.pred_original_sample):
            assert tensor.dtype == dtype
            assert torch.isfinite(tensor).all()
        noisy = scheduler.add_noise(x, torch.randn_like(x), scheduler.timesteps[:4])
        assert noisy.dtype == dtype

    def test_float64_end_to_end(self):
        # With an exact float64 model, float64 and float32 runs of the deterministic probability-flow sampler agree
        # to float32 precision, and the float64 run stays float64 at every step.
        results = {}
        for dtype in (torch.float32, torch.float64):
            scheduler = self.make_scheduler(**self.deterministic_config)
            model = self.mixture_model(scheduler, dtype=dtype)
            scheduler.set_timesteps(20)
            x = self.sample((8, 2), dtype=dtype) * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                out = model(x, t).sample
                assert out.dtype == dtype
                x = scheduler.step(out, t, x).prev_sample
                assert x.dtype == dtype
            results[dtype] = x
        torch.testing.assert_close(results[torch.float32].double(), results[torch.float64], rtol=1e-3, atol=1e-3)

    # ------------------------------------------------------------------ parametrisations agree
    @pytest.mark.parametrize("prediction_type", PREDICTION_TYPES.names())
    def test_prediction_types_agree(self, prediction_type):
        # The exact model, asked for score / epsilon / x_0 / v, stands for the same score, so the samples agree.
        reference = self.make_scheduler(prediction_type="score", **self.deterministic_config)
        scheduler = self.make_scheduler(prediction_type=prediction_type, **self.deterministic_config)
        x = self.sample((16, 2), dtype=torch.float64) * 2
        outs = []
        for s in (reference, scheduler):
            s.set_timesteps(self.num_inference_steps)
            outs.append(self.sample_with(s, self.mixture_model(s), x, model_times=True))
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-7, atol=1e-7)

    def test_the_grid_starts_where_a_discrete_model_is_defined(self):
        # A DDPM model saw steps 0..N-1 only; with N = 20 the first trained time 1/N is far above every default eps.
        scheduler = self.make_scheduler(timestep_type="discrete", num_train_timesteps=20)
        scheduler.set_timesteps(self.num_inference_steps)
        assert float(scheduler.timesteps.min()) >= -1e-6
        assert float(scheduler.timestep_times.min()) >= 1 / 20 - 1e-12

    def test_an_explicit_eps_below_the_models_first_trained_time_is_refused(self):
        scheduler = self.make_scheduler(timestep_type="discrete", num_train_timesteps=20)
        with pytest.raises(ValueError, match=r"sampling_eps=0.001 is below t = 0.05, the first time the model was trained on"):
            scheduler.set_timesteps(self.num_inference_steps, sampling_eps=1e-3)

    @pytest.mark.parametrize("timestep_type", TIMESTEP_MAPS.names())
    def test_timestep_types_agree(self, timestep_type):
        # The grid in continuous time does not depend on how it is shown to the model (once it ends where the model
        # is defined: a `discrete` model's grid ends at t = 1/N at the earliest).
        scheduler = self.make_scheduler(timestep_type=timestep_type, **self.deterministic_config)
        eps = scheduler.resolve_sampling_eps()
        reference = self.make_scheduler(timestep_type="continuous", sampling_eps=eps, **self.deterministic_config)
        x = self.sample((16, 2), dtype=torch.float64)
        outs = []
        for s in (reference, scheduler):
            s.set_timesteps(self.num_inference_steps)
            outs.append(self.sample_with(s, self.mixture_model(s), x, model_times=True))
        torch.testing.assert_close(scheduler.timestep_times, reference.timestep_times)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-7, atol=1e-7)
        # the float32 `timesteps` themselves are within float32 precision of the grid
        torch.testing.assert_close(scheduler.timesteps.double(), scheduler.t_to_timestep(scheduler.timestep_times), rtol=1e-6, atol=1e-6)

    # ------------------------------------------------------------------ add_noise
    @pytest.mark.parametrize("device", DEVICES)
    def test_add_noise_moments_match_marginal_prob(self, device):
        # Monte-Carlo: 20000 perturbations of one x_0 per time; the sample mean and std agree with
        # marginal_prob's m(t) x_0 and sigma(t) to 5 standard errors (SE of the mean sigma/sqrt(n), of the std
        # sigma/sqrt(2n)), summed over D = 2 coordinates.
        scheduler = self.make_scheduler()
        n, x0 = 20000, torch.tensor([1.5, -0.5], dtype=torch.float64, device=device)
        g = torch.Generator(device=device).manual_seed(0)
        for t_value in (scheduler.config.sampling_eps, 0.1, 0.5, 1.0):
            t = torch.full((n,), t_value, dtype=torch.float64, device=device)
            timesteps = scheduler.t_to_timestep(t)
            noise = torch.randn(n, 2, generator=g, dtype=torch.float64, device=device)
            x_t = scheduler.add_noise(x0.expand(n, 2), noise, timesteps)
            assert x_t.device == x0.device
            mean, std = scheduler.sde.marginal_prob(x0[None], t[:1])
            std = float(std)
            assert torch.all((x_t.mean(0) - mean[0]).abs() < 5 * std / n**0.5)
            assert torch.all((x_t.std(0) - std).abs() < 5 * std / (2 * n) ** 0.5)

    def test_add_noise_with_integer_ddpm_timesteps(self):
        # DDPM-style training draws integer k in 0..N-1; with the discrete map k is t = (k + 1) / N.
        scheduler = self.make_scheduler(**self.integer_timestep_config)
        n_train = scheduler.config.num_train_timesteps
        k = torch.tensor([0, 1, n_train // 2, n_train - 1])
        x0 = self.sample((4, 3, 2, 2), dtype=torch.float64)
        noise = self.sample((4, 3, 2, 2), dtype=torch.float64, seed=2)
        x_t = scheduler.add_noise(x0, noise, k)
        t = (k.double() + 1) / n_train
        mean, std = scheduler.sde.marginal_prob(x0, t)
        torch.testing.assert_close(x_t, mean + std[:, None, None, None] * noise)
        # a single integer is broadcast over the batch
        torch.testing.assert_close(scheduler.add_noise(x0, noise, n_train - 1), scheduler.add_noise(x0, noise, torch.full((4,), n_train - 1)))

    def test_get_velocity_matches_v_parametrisation(self):
        scheduler = self.make_scheduler()
        x0 = self.sample((4, 2), dtype=torch.float64)
        noise = self.sample((4, 2), dtype=torch.float64, seed=3)
        t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
        timesteps = scheduler.t_to_timestep(t)
        m, std = scheduler.sde.marginal_mean_coeff(t)[:, None], scheduler.sde.marginal_std(t)[:, None]
        torch.testing.assert_close(scheduler.get_velocity(x0, noise, timesteps), m * noise - std * x0)

    # ------------------------------------------------------------------ bad input
    def test_unknown_names(self):
        for key, registered in self.registered_name_keys:
            with pytest.raises(ValueError, match=rf"{key}='bogus'.*{registered}"):
                self.make_scheduler(**{key: "bogus"})

    @pytest.mark.parametrize("value", [0, -3, 2.5, "10", None])
    def test_bad_num_inference_steps(self, value):
        scheduler = self.make_scheduler()
        with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
            scheduler.set_timesteps(value)

    def test_timestep_outside_range(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample()
        # Times below eps are tested at t = -0.5: close below eps, some maps (VE's sigma) cannot tell t from eps.
        for t in (1.5, -0.5):
            timestep = scheduler.t_to_timestep(torch.tensor(t, dtype=torch.float64))
            with pytest.raises(ValueError, match=r"timestep .* outside \[eps, 1\].*allowed timesteps run from"):
                scheduler.step(self.model_output(x), timestep, x)
        with pytest.raises(ValueError, match="timestep.* must be finite"):
            scheduler.step(self.model_output(x), float("nan"), x)

    def test_timestep_not_on_grid(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample()
        t_mid = (scheduler.timestep_times[2] + scheduler.timestep_times[3]) / 2
        with pytest.raises(ValueError, match=r"not on the grid.*scheduler.timesteps"):
            scheduler.step(self.model_output(x), scheduler.t_to_timestep(t_mid), x)
        with pytest.raises(ValueError, match="timestep.* scalar or a batch of equal values"):
            scheduler.step(self.model_output(x), scheduler.timesteps[:4], x)

    def test_step_before_set_timesteps(self):
        scheduler = self.make_scheduler()
        x = self.sample()
        with pytest.raises(ValueError, match=r"call `set_timesteps"):
            scheduler.step(self.model_output(x), 1.0, x)

    def test_shape_mismatch(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((4, 2))
        bad = self.sample((4, 3))
        with pytest.raises(ValueError, match=r"model_output has shape \(4, 3\) but sample has shape \(4, 2\)"):
            scheduler.step(bad, scheduler.timesteps[0], x)

    @pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_model_output(self, bad_value):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((4, 2))
        out = self.model_output(x)
        out[1, 0] = bad_value
        with pytest.raises(ValueError, match=r"model_output has NaN or infinite values in 1 of 8 entries \(first at index \(1, 0\)\)"):
            scheduler.step(out, scheduler.timesteps[0], x)

    def test_non_finite_sample_is_reported_as_the_input_not_the_model(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((4, 2))
        x[2, 1] = float("nan")
        out = self.model_output(x)
        with pytest.raises(ValueError, match=r"sample has NaN or infinite values in 1 of 8 entries \(first at index \(2, 1\)\)"):
            scheduler.step(out, scheduler.timesteps[0], x)

    def test_add_noise_timesteps_outside_range(self):
        scheduler = self.make_scheduler()
        x = self.sample((2, 2))
        for t in (1.5, -0.5):
            timesteps = scheduler.t_to_timestep(torch.tensor([t, 0.5], dtype=torch.float64))
            with pytest.raises(ValueError, match=r"timesteps must map to continuous times in \[0, 1\], i.e. lie in"):
                scheduler.add_noise(x, torch.randn_like(x), timesteps)
        # python numbers and lists give the same error, not an AttributeError
        bad = float(scheduler.t_to_timestep(torch.tensor(1.5, dtype=torch.float64)))
        for timesteps in (bad, [bad, bad]):
            with pytest.raises(ValueError, match="timesteps must map"):
                scheduler.add_noise(x, torch.randn_like(x), timesteps)
        with pytest.raises(ValueError, match=r"timesteps must be a scalar or have one value per sample"):
            scheduler.add_noise(x, torch.randn_like(x), scheduler.t_to_timestep(torch.full((3,), 0.5)))
        with pytest.raises(ValueError, match="noise has shape"):
            scheduler.add_noise(x, torch.randn(2, 3), scheduler.t_to_timestep(torch.full((2,), 0.5)))


class PCSchedulerCommonTest(SchedulerCommonTest):
    """The checks of every predictor-corrector scheduler (`ScoreSdePCSchedulerMixin`): `step_correct`, every
    registered predictor and corrector, score_sde's grid and its noise-free last step."""

    deterministic_config = {"predictor": "probability_flow_euler"}
    round_trip_config = {"snr": 0.2, "correct_steps": 2, "sampling_eps": 2e-3}
    override_config = {"snr": 0.3, "predictor": "ancestral_sampling"}
    registered_name_keys = [("predictor", "euler_maruyama"), ("corrector", "langevin"), ("prediction_type", "epsilon"), ("timestep_type", "sigma")]

    def run_pc_steps(self, scheduler, sample, n_steps, seed=0):
        """A few corrector + predictor steps with the cheap model output, a fresh generator seeded with `seed`."""
        g = torch.Generator(device=sample.device).manual_seed(seed)
        for t in scheduler.timesteps[:n_steps]:
            sample = scheduler.step_correct(self.model_output(sample), sample, generator=g).prev_sample
            sample = scheduler.step(self.model_output(sample), t, sample, generator=g).prev_sample
        return sample

    def test_public_pc_api(self):
        scheduler = self.make_scheduler()
        assert callable(scheduler.step_correct) and callable(scheduler.step_pred)

    def test_grid_is_score_sde_linspace(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(7)
        eps = scheduler.config.sampling_eps
        torch.testing.assert_close(scheduler.t_grid, torch.linspace(1.0, eps, 7, dtype=torch.float64), rtol=0, atol=1e-15)
        assert torch.equal(scheduler.timestep_times, scheduler.t_grid)

    def test_corrector_round_trip(self, tmp_path):
        scheduler = self.make_scheduler(**self.round_trip_config)
        scheduler.save_pretrained(tmp_path)
        loaded = self.scheduler_class.from_pretrained(tmp_path)
        for s in (scheduler, loaded):
            s.set_timesteps(self.num_inference_steps)
        x = self.sample()
        torch.testing.assert_close(self.run_pc_steps(loaded, x, 3), self.run_pc_steps(scheduler, x, 3))

    @pytest.mark.parametrize("device", DEVICES)
    def test_step_correct_shape_and_device(self, device):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        x = self.sample((3, 3, 4, 4), device=device)
        out = scheduler.step_correct(self.model_output(x), x)
        assert out.prev_sample.shape == x.shape == out.prev_sample_mean.shape
        assert out.prev_sample.device == x.device

    def test_step_correct_tuple_and_dict_outputs_agree(self):
        scheduler = self.make_scheduler(corrector="langevin")
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((3, 3, 2, 2))
        corr_dict = scheduler.step_correct(self.model_output(x), x, generator=torch.Generator().manual_seed(4))
        corr_tuple = scheduler.step_correct(self.model_output(x), x, generator=torch.Generator().manual_seed(4), return_dict=False)
        assert torch.equal(corr_tuple[0], corr_dict.prev_sample) and torch.equal(corr_tuple[1], corr_dict.prev_sample_mean)

    @pytest.mark.parametrize("device", DEVICES)
    def test_generator_determinism(self, device):
        scheduler = self.make_scheduler(predictor="euler_maruyama", corrector="langevin")
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        x = self.sample((4, 2), device=device)
        a = self.run_pc_steps(scheduler, x, 4, seed=7)
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        b = self.run_pc_steps(scheduler, x, 4, seed=7)
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        c = self.run_pc_steps(scheduler, x, 4, seed=8)
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
    def test_step_correct_dtype_follows_input(self, dtype):
        scheduler = self.make_scheduler(corrector="langevin")
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((4, 2), dtype=dtype)
        corr = scheduler.step_correct(self.model_output(x), x)
        for tensor in (corr.prev_sample, corr.prev_sample_mean):
            assert tensor.dtype == dtype and torch.isfinite(tensor).all()

    def test_last_step_returns_noise_free_mean(self):
        scheduler = self.make_scheduler(predictor="euler_maruyama")
        scheduler.set_timesteps(3)
        x = self.sample((4, 2))
        out = scheduler.step(self.model_output(x), scheduler.timesteps[-1], x)
        assert torch.equal(out.prev_sample, out.prev_sample_mean)
        out = scheduler.step(self.model_output(x), scheduler.timesteps[0], x)
        assert not torch.equal(out.prev_sample, out.prev_sample_mean)

    def test_step_correct_defaults_to_current_grid_time(self):
        # annealed Langevin: its step size sigma(t)^2 depends on t even for a t-independent model output
        scheduler = self.make_scheduler(corrector="annealed_langevin")
        scheduler.set_timesteps(self.num_inference_steps)
        x = self.sample((4, 2))
        for i, t in enumerate(scheduler.timesteps[:3]):
            implicit = scheduler.step_correct(self.model_output(x), x, generator=torch.Generator().manual_seed(i))
            explicit = scheduler.step_correct(self.model_output(x), x, timestep=t, generator=torch.Generator().manual_seed(i))
            assert torch.equal(implicit.prev_sample, explicit.prev_sample)
            if i > 0:  # a different time gives a different (annealed) step: the implicit time really moved on
                other = scheduler.step_correct(
                    self.model_output(x), x, timestep=scheduler.timesteps[0], generator=torch.Generator().manual_seed(i)
                )
                assert not torch.allclose(other.prev_sample, implicit.prev_sample)
            x = scheduler.step(self.model_output(x), t, x).prev_sample

    @pytest.mark.parametrize("predictor", PREDICTORS.names())
    def test_every_predictor_runs(self, predictor):
        scheduler = self.make_scheduler(predictor=predictor)
        scheduler.set_timesteps(5)
        x = self.sample((3, 3, 2, 2))
        for t in scheduler.timesteps:
            out = scheduler.step(self.model_output(x), t, x, generator=torch.Generator().manual_seed(0))
            assert out.prev_sample.shape == x.shape and torch.isfinite(out.prev_sample).all()
            x = out.prev_sample

    @pytest.mark.parametrize("corrector", CORRECTORS.names())
    def test_every_corrector_runs(self, corrector):
        scheduler = self.make_scheduler(corrector=corrector)
        scheduler.set_timesteps(5)
        x = self.sample((3, 3, 2, 2))
        for t in scheduler.timesteps:
            out = scheduler.step_correct(self.model_output(x), x, generator=torch.Generator().manual_seed(0))
            assert out.prev_sample.shape == x.shape and torch.isfinite(out.prev_sample).all()
            x = scheduler.step(self.model_output(out.prev_sample), t, out.prev_sample).prev_sample

    def test_step_correct_bad_input(self):
        scheduler = self.make_scheduler()
        x = self.sample((4, 2))
        with pytest.raises(ValueError, match=r"call `set_timesteps"):
            scheduler.step_correct(self.model_output(x), x)
        scheduler.set_timesteps(self.num_inference_steps)
        with pytest.raises(ValueError, match="model_output has shape"):
            scheduler.step_correct(self.sample((4, 3)), x)
        out = self.model_output(x)
        out[1, 0] = float("nan")
        with pytest.raises(ValueError, match="model_output has NaN or infinite values in 1 of 8 entries"):
            scheduler.step_correct(out, x)
        timestep = scheduler.t_to_timestep(torch.tensor(1.5, dtype=torch.float64))
        with pytest.raises(ValueError, match=r"outside \[eps, 1\]"):
            scheduler.step_correct(self.model_output(x), x, timestep=timestep)

    def test_step_correct_after_last_step(self):
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(2)
        x = self.sample()
        for t in scheduler.timesteps:
            x = scheduler.step(self.model_output(x), t, x).prev_sample
        with pytest.raises(ValueError, match="set_timesteps"):
            scheduler.step_correct(self.model_output(x), x)

