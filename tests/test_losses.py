"""Losses against closed forms: the exact Gaussian-mixture score is the DSM minimiser, the importance-sampled
likelihood loss has the expectation of the plain likelihood-weighted one, and the discrete losses use their grids."""

import math

import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from scoresde_diffusers import GaussianMixtureScoreModel, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.training.losses import LOSSES, ImportanceSampledLikelihoodLoss, get_loss

SCHEDULERS = {
    "vp": lambda **kw: VPSDEScheduler(prediction_type="score", timestep_type="continuous", **kw),
    "subvp": lambda **kw: SubVPSDEScheduler(prediction_type="score", timestep_type="continuous", **kw),
    "ve": lambda **kw: VESDEScheduler(prediction_type="score", sigma_max=10.0, **kw),
}


class Shifted(torch.nn.Module):
    """The exact mixture score plus a constant `delta` (a deliberately wrong score model)."""

    def __init__(self, model, delta):
        super().__init__()
        self.model, self.delta = model, delta

    def forward(self, x, timestep):
        return UNet2DOutput(sample=self.model(x, timestep).sample + self.delta)


class Zero(torch.nn.Module):
    def forward(self, x, timestep):
        return UNet2DOutput(sample=torch.zeros_like(x))


def _quad(f, low, high, n=200001):
    t = torch.linspace(low, high, n, dtype=torch.float64)
    return float(torch.trapezoid(f(t), t))


def test_registry_names_and_unknown_loss():
    assert {"dsm", "likelihood", "likelihood_uniform", "smld", "ddpm"} <= set(LOSSES.names())
    with pytest.raises(ValueError, match="Unknown loss 'nope'.*dsm.*likelihood"):
        get_loss("nope", VPSDEScheduler())


@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_exact_score_minimises_dsm(sde):
    """E[loss(s* + delta)] - E[loss(s*)] = E_t[sigma(t)^2] |delta|^2 exactly for lambda = sigma^2, because
    E[grad log p_0t(x_t | x_0) | x_t] = s*(x_t): the cross term vanishes. Paired noise makes the check sharp."""
    scheduler = SCHEDULERS[sde]()
    exact = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    delta = torch.tensor([0.3, -0.2])
    loss = get_loss("dsm", scheduler, reduce_mean=False)
    x0 = exact.sample_data(40000, generator=torch.Generator().manual_seed(1))
    base = loss(exact, x0, generator=torch.Generator().manual_seed(2))
    shifted = loss(Shifted(exact, delta), x0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(base.t, shifted.t)
    diff = shifted.losses - base.losses
    expected = _quad(lambda t: scheduler.sde.marginal_std(t) ** 2, 1e-5, 1.0) / (1 - 1e-5) * float(delta.pow(2).sum())
    stderr = float(diff.std()) / math.sqrt(len(diff))
    assert abs(float(diff.mean()) - expected) < 4 * stderr + 1e-3 * expected
    assert float(shifted.loss) > float(base.loss)


@pytest.mark.parametrize("name", ["dsm", "likelihood", "ddpm"])
def test_gradient_vanishes_at_exact_score(name):
    """d loss / d model output has expectation 0 at the exact score (and not at a shifted one)."""
    scheduler = SCHEDULERS["vp"]()
    exact = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    x0 = exact.sample_data(20000, generator=torch.Generator().manual_seed(3))
    grads = {}
    for label, delta in (("exact", torch.zeros(2)), ("shifted", torch.tensor([0.5, 0.5]))):
        captured = {}

        class Capture(torch.nn.Module):
            def forward(self, x, timestep):
                out = (exact(x, timestep).sample + delta).requires_grad_(True)
                captured["out"] = out
                return UNet2DOutput(sample=out)

        out = get_loss(name, scheduler)(Capture(), x0, generator=torch.Generator().manual_seed(4))
        out.loss.backward()
        grads[label] = captured["out"].grad * len(x0)  # per-sample gradients
    g = grads["exact"]
    stderr = g.std(0) / math.sqrt(len(g))
    assert torch.all(g.mean(0).abs() < 4 * stderr), (g.mean(0), stderr)
    shifted = grads["shifted"]
    assert torch.all(shifted.mean(0) > 4 * shifted.std(0) / math.sqrt(len(shifted)))


def _vp_normalizer(sde, eps):
    """Z = int_eps^1 g^2 / sigma^2 dt = log((e^B(1) - 1) / (e^B(eps) - 1)) for VP, B(t) = int_0^t beta."""
    B = lambda t: sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
    return math.log(math.expm1(B(1.0)) / math.expm1(B(eps)))


@pytest.mark.parametrize("sde", ["vp", "subvp", "ve"])
def test_importance_sampled_likelihood_loss_is_unbiased(sde):
    """Zero model: each sample's loss is w(t) |z|^2, whose expectation is D Z / (1 - eps) for both estimators;
    the importance-sampled one has nearly constant weights, so its mean is that number to < 1 %."""
    scheduler = SCHEDULERS[sde]()
    eps = 1e-5
    if sde == "vp":
        z_exact = _vp_normalizer(scheduler.sde, eps)
    else:
        z_exact = _quad(lambda t: scheduler.sde.diffusion(t) ** 2 / scheduler.sde.marginal_std(t) ** 2, eps, 1.0, n=2_000_001) if sde == "ve" else None
        if z_exact is None:  # sub-VP: the integrand ~ 1/t near 0; integrate in log t
            u = torch.linspace(math.log(eps), 0.0, 400001, dtype=torch.float64)
            t = u.exp()
            z_exact = float(torch.trapezoid(scheduler.sde.diffusion(t) ** 2 / scheduler.sde.marginal_std(t) ** 2 * t, u))
    expected = 2 * z_exact / (1 - eps)
    x0 = torch.zeros(200000, 2)
    importance = get_loss("likelihood", scheduler, eps=eps)(Zero(), x0, generator=torch.Generator().manual_seed(5))
    uniform = get_loss("likelihood_uniform", scheduler, eps=eps)(Zero(), x0, generator=torch.Generator().manual_seed(6))
    assert abs(float(importance.loss) / expected - 1) < 0.01
    se_uniform = float(uniform.losses.std()) / math.sqrt(len(x0))
    assert abs(float(uniform.loss) - expected) < 4 * se_uniform
    # the weights are nearly the constant Z / (1 - eps): that is the variance reduction
    loss = get_loss("likelihood", scheduler, eps=eps)
    _, w = loss.sample_times(10000, "cpu", torch.Generator().manual_seed(7))
    assert float(w.std() / w.mean()) < 1e-2
    assert abs(loss.normalizer / z_exact - 1) < 1e-3


def test_importance_and_uniform_likelihood_agree_on_mixture():
    """With the exact mixture score as model, both likelihood estimators estimate the same number."""
    scheduler = SCHEDULERS["vp"]()
    exact = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    shifted = Shifted(exact, torch.tensor([0.2, 0.1]))
    x0 = exact.sample_data(100000, generator=torch.Generator().manual_seed(8))
    a = get_loss("likelihood", scheduler)(shifted, x0, generator=torch.Generator().manual_seed(9)).losses
    b = get_loss("likelihood_uniform", scheduler)(shifted, x0, generator=torch.Generator().manual_seed(10)).losses
    se = math.sqrt(float(a.var()) / len(a) + float(b.var()) / len(b))
    assert abs(float(a.mean() - b.mean())) < 4 * se
    assert float(a.std()) < float(b.std())  # importance sampling lowers the variance


def test_proposal_density_integrates_to_one():
    loss = ImportanceSampledLikelihoodLoss(SCHEDULERS["vp"](), eps=1e-5)
    u = torch.linspace(math.log(1e-5), 0.0, 200001, dtype=torch.float64)
    t = u.exp()
    assert abs(float(torch.trapezoid(loss.proposal_density(t) * t, u)) - 1) < 1e-3


def test_reduce_mean_is_sum_over_dimensions():
    scheduler = SCHEDULERS["vp"]()
    exact = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler)
    x0 = exact.sample_data(64, generator=torch.Generator().manual_seed(11))
    total = get_loss("dsm", scheduler, reduce_mean=False)(exact, x0, generator=torch.Generator().manual_seed(12)).losses
    mean = get_loss("dsm", scheduler, reduce_mean=True)(exact, x0, generator=torch.Generator().manual_seed(12)).losses
    torch.testing.assert_close(total, 2 * mean)


def test_ddpm_loss_is_epsilon_mse_on_the_discrete_grid():
    """DDPM: the model sees integer steps k (``discrete`` map) and the loss is |eps - eps_theta|^2."""
    scheduler = VPSDEScheduler(num_train_timesteps=50)  # epsilon prediction, discrete timesteps
    seen = {}

    class Constant(torch.nn.Module):
        def forward(self, x, timestep):
            seen["timestep"] = timestep
            return UNet2DOutput(sample=torch.full_like(x, 0.5))

    x0 = torch.randn(512, 3)
    gen = torch.Generator().manual_seed(13)
    out = get_loss("ddpm", scheduler)(Constant(), x0, generator=gen)
    k = seen["timestep"]
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
    assert k.min() >= 0 and k.max() <= 49
    # regenerate the noise the loss drew: t indices first, then z
    gen = torch.Generator().manual_seed(13)
    torch.randint(0, 50, (512,), generator=gen)
    z = torch.randn(x0.shape, generator=gen)
    torch.testing.assert_close(out.losses, ((z - 0.5) ** 2).sum(1), rtol=1e-4, atol=1e-4)


def test_smld_loss_uses_ve_noise_levels_and_rejects_vp():
    scheduler = VESDEScheduler(num_train_timesteps=10, sigma_min=0.01, sigma_max=10.0)
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, x, timestep):
            seen["sigma"] = timestep
            return UNet2DOutput(sample=torch.zeros_like(x))

    get_loss("smld", scheduler)(Recorder(), torch.zeros(256, 2), generator=torch.Generator().manual_seed(14))
    levels = torch.exp(torch.linspace(math.log(0.01), math.log(10.0), 10))
    assert torch.all((seen["sigma"][:, None] - levels[None]).abs().min(1).values < 1e-4 * levels.max())
    with pytest.raises(ValueError, match="sigma\\(0\\) > 0"):
        get_loss("smld", VPSDEScheduler())
