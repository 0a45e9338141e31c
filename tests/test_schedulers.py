"""The common predictor-corrector scheduler checks (`PCSchedulerCommonTest`) for VE, VP and sub-VP, plus what is particular to each."""

import pytest
import torch

from scheduler_test_mixin import PCSchedulerCommonTest
from scoresde_diffusers import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler


class TestVESDEScheduler(PCSchedulerCommonTest):
    scheduler_class = VESDEScheduler

    def get_scheduler_config(self, **overrides):
        return {"sigma_min": 0.01, "sigma_max": 50.0, "snr": 0.16, "sampling_eps": 1e-5, **overrides}

    def expected_init_noise_sigma(self, config):
        return config["sigma_max"]

    def test_sigmas_are_marginal_stds(self):
        scheduler = self.make_scheduler()
        scheduler.set_sigmas(10)
        torch.testing.assert_close(scheduler.sigmas.double(), scheduler.sde.marginal_std(scheduler.t_grid), rtol=1e-6, atol=0)
        assert float(scheduler.sigmas[0]) == pytest.approx(50.0)
        # with timestep_type="sigma" the model timesteps are the sigmas, as ScoreSdeVePipeline expects
        torch.testing.assert_close(scheduler.timesteps, scheduler.sigmas)

    @pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral_sampling"])
    def test_last_step_removes_sigma_min_as_score_sde(self, predictor):
        # VE's marginal at t = 0 is the data smoothed by sigma_min. score_sde's last reverse-diffusion step goes to
        # noise level 0 (SMLD's chain ends there), i.e. Tweedie's step x + sigma(eps)^2 s from eps; so does ours.
        scheduler = self.make_scheduler(predictor=predictor, prediction_type="score")
        scheduler.set_timesteps(4)
        x = self.sample((4, 2), dtype=torch.float64)
        score = self.model_output(x)
        out = scheduler.step(score, scheduler.timesteps[-1], x)
        sigma_eps = scheduler.sde.marginal_std(scheduler.t_grid[-1])
        torch.testing.assert_close(out.prev_sample, x + sigma_eps**2 * score, rtol=1e-12, atol=1e-15)

    def test_set_sigmas_keeps_or_rejects_sde_parameters(self):
        scheduler = self.make_scheduler()
        scheduler.set_sigmas(10, sigma_min=0.01, sigma_max=50.0)
        assert len(scheduler.sigmas) == 10
        with pytest.raises(ValueError, match=r"sigma_max=100.* differs from the config's 50"):
            scheduler.set_sigmas(10, sigma_max=100.0)
        scheduler.set_sigmas(10, sampling_eps=1e-3)
        assert float(scheduler.t_grid[-1]) == pytest.approx(1e-3)

    def test_bad_sde_parameters(self):
        with pytest.raises(ValueError, match="sigma_min < sigma_max"):
            self.make_scheduler(sigma_min=1.0, sigma_max=0.5)
        with pytest.raises(ValueError, match=r"sampling_eps must lie in \(0, 1\)"):
            self.make_scheduler(sampling_eps=0.0)
        with pytest.raises(ValueError, match="snr must be positive"):
            self.make_scheduler(snr=-0.1)


class _VPConfig:
    """The config shared by VP and sub-VP (same keys, same defaults)."""

    def get_scheduler_config(self, **overrides):
        return {"beta_min": 0.1, "beta_max": 20.0, "num_train_timesteps": 1000, "sampling_eps": 1e-3, **overrides}

    def expected_init_noise_sigma(self, config):
        return 1.0


class TestVPSDEScheduler(_VPConfig, PCSchedulerCommonTest):
    scheduler_class = VPSDEScheduler

    def test_discrete_timesteps_are_ddpm_integers(self):
        # At N inference steps and sampling_eps = 1/N the grid is DDPM's own: timesteps N-1, ..., 0.
        scheduler = self.make_scheduler()
        scheduler.set_timesteps(1000)
        assert torch.equal(scheduler.timesteps, torch.arange(999, -1, -1, dtype=torch.float32))

    def test_alpha_bar_matches_ddpm(self):
        # The continuous VP kernel at t = (k + 1) / N is DDPM's alpha_bar_k to first order in beta (Appendix B):
        # log alpha_bar_k = -sum beta_i - sum beta_i^2 / 2 - ..., and the Riemann sum of the linear beta differs
        # from its integral by at most (beta_max - beta_min) / (8 N). Bound both, rather than a fixed rtol.
        from diffusers import DDPMScheduler

        ddpm = DDPMScheduler()
        scheduler = VPSDEScheduler.from_config(ddpm.config)
        k = torch.arange(1000)
        log_m2 = 2 * scheduler.sde.log_mean_coeff((k.double() + 1) / 1000)
        betas = ddpm.betas.double()
        bound = 0.5 * torch.cumsum(betas**2, 0) * 1.01 + (20.0 - 0.1) / (8 * 1000) + 1e-6
        assert torch.all((log_m2 - ddpm.alphas_cumprod.double().log()).abs() <= bound)

    def test_bad_sde_parameters(self):
        with pytest.raises(ValueError, match="num_train_timesteps must be an integer >= 2"):
            self.make_scheduler(num_train_timesteps=1)
        with pytest.raises(ValueError, match="correct_steps must be a non-negative integer"):
            self.make_scheduler(correct_steps=-1)


class TestSubVPSDEScheduler(_VPConfig, PCSchedulerCommonTest):
    scheduler_class = SubVPSDEScheduler

    def test_marginal_std_below_vp(self):
        # sub-VP's variance is bounded by VP's: sigma_sub(t) = 1 - alpha_bar(t) <= sqrt(1 - alpha_bar(t)).
        t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
        sub, vp = SubVPSDEScheduler().sde, VPSDEScheduler().sde
        assert torch.all(sub.marginal_std(t) <= vp.marginal_std(t) + 1e-12)
        torch.testing.assert_close(sub.marginal_mean_coeff(t), vp.marginal_mean_coeff(t))

    def test_langevin_corrector_works(self):
        # score_sde's Langevin corrector crashes on sub-VP ('subVPSDE' object has no attribute 'alphas').
        scheduler = self.make_scheduler(corrector="langevin")
        model = self.mixture_model(scheduler)
        scheduler.set_timesteps(20)
        x = torch.randn(64, 2, dtype=torch.float64)
        for t in scheduler.timesteps:
            x = scheduler.step_correct(model(x, t).sample, x).prev_sample
            x = scheduler.step(model(x, t).sample, t, x).prev_sample
        assert torch.isfinite(x).all()
