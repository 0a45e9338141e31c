"""Specification of the forward SDEs (VE, VP, sub-VP): every SDE passes `SDECommonTest`.

A test class selects its SDE with class attributes and hooks (`sde_class`, `default_config`, `bad_configs`,
`std_series`, `score_sde_port`, ...); the mixin never asks which SDE it holds. Tolerances are stated where they are
used, with where they come from: Monte-Carlo standard errors, the order of a discretisation, or float64 rounding.
Sources: Song et al. (2021) eqs. (5), (6), (8), (9), (13), (17), (30)-(33); yang-song/score_sde_pytorch `sde_lib.py`.
"""

import math

import numpy as np
import pytest
import torch

from scoresde_diffusers.sdes import SDE, SDES, SubVPSDE, VESDE, VPSDE, get_sde

DTYPES = [torch.float32, torch.float64]


# ---------------------------------------------------------------------------------------------------------------------
# Line-by-line ports of yang-song/score_sde_pytorch sde_lib.py (commit cb1f359): `sde`, `marginal_prob`, `prior_logp`,
# `discretize`. Kept as close to the original as the absence of the `SDE` base class allows (discretize of sub-VP is
# the base class's Euler-Maruyama default); torch.linspace gets dtype=float64 so the comparison is not float32-bound.
# ---------------------------------------------------------------------------------------------------------------------
def _score_sde_em_discretize(sde, x, t):
    dt = 1 / sde.N
    drift, diffusion = sde.sde(x, t)
    f = drift * dt
    G = diffusion * torch.sqrt(torch.tensor(dt, device=t.device, dtype=t.dtype))
    return f, G


class ScoreSdeVPSDE:
    def __init__(self, beta_min=0.1, beta_max=20, N=1000):
        self.beta_0 = beta_min
        self.beta_1 = beta_max
        self.N = N
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N, dtype=torch.float64)
        self.alphas = 1.0 - self.discrete_betas
        self.T = 1

    def sde(self, x, t):
        beta_t = self.beta_0 + t * (self.beta_1 - self.beta_0)
        drift = -0.5 * beta_t[:, None, None, None] * x
        diffusion = torch.sqrt(beta_t)
        return drift, diffusion

    def marginal_prob(self, x, t):
        log_mean_coeff = -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        mean = torch.exp(log_mean_coeff[:, None, None, None]) * x
        std = torch.sqrt(1.0 - torch.exp(2.0 * log_mean_coeff))
        return mean, std

    def prior_logp(self, z):
        shape = z.shape
        N = np.prod(shape[1:])
        logps = -N / 2.0 * np.log(2 * np.pi) - torch.sum(z**2, dim=(1, 2, 3)) / 2.0
        return logps

    def discretize(self, x, t):
        """DDPM discretization."""
        timestep = (t * (self.N - 1) / self.T).long()
        beta = self.discrete_betas.to(x.device)[timestep]
        alpha = self.alphas.to(x.device)[timestep]
        sqrt_beta = torch.sqrt(beta)
        f = torch.sqrt(alpha)[:, None, None, None] * x - x
        G = sqrt_beta
        return f, G


class ScoreSdeSubVPSDE:
    def __init__(self, beta_min=0.1, beta_max=20, N=1000):
        self.beta_0 = beta_min
        self.beta_1 = beta_max
        self.N = N
        self.T = 1

    def sde(self, x, t):
        beta_t = self.beta_0 + t * (self.beta_1 - self.beta_0)
        drift = -0.5 * beta_t[:, None, None, None] * x
        discount = 1.0 - torch.exp(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        diffusion = torch.sqrt(beta_t * discount)
        return drift, diffusion

    def marginal_prob(self, x, t):
        log_mean_coeff = -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        mean = torch.exp(log_mean_coeff)[:, None, None, None] * x
        std = 1 - torch.exp(2.0 * log_mean_coeff)
        return mean, std

    def prior_logp(self, z):
        shape = z.shape
        N = np.prod(shape[1:])
        return -N / 2.0 * np.log(2 * np.pi) - torch.sum(z**2, dim=(1, 2, 3)) / 2.0

    def discretize(self, x, t):
        return _score_sde_em_discretize(self, x, t)


class ScoreSdeVESDE:
    def __init__(self, sigma_min=0.01, sigma_max=50, N=1000):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.discrete_sigmas = torch.exp(
            torch.linspace(np.log(self.sigma_min), np.log(self.sigma_max), N, dtype=torch.float64)
        )
        self.N = N
        self.T = 1

    def sde(self, x, t):
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        drift = torch.zeros_like(x)
        diffusion = sigma * torch.sqrt(
            torch.tensor(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)), device=t.device)
        )
        return drift, diffusion

    def marginal_prob(self, x, t):
        std = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        mean = x
        return mean, std

    def prior_logp(self, z):
        shape = z.shape
        N = np.prod(shape[1:])
        return -N / 2.0 * np.log(2 * np.pi * self.sigma_max**2) - torch.sum(z**2, dim=(1, 2, 3)) / (
            2 * self.sigma_max**2
        )

    def discretize(self, x, t):
        """SMLD(NCSN) discretization."""
        timestep = (t * (self.N - 1) / self.T).long()
        sigma = self.discrete_sigmas.to(t.device)[timestep]
        adjacent_sigma = torch.where(
            timestep == 0, torch.zeros_like(t), self.discrete_sigmas[timestep - 1].to(t.device)
        )
        f = torch.zeros_like(x)
        G = torch.sqrt(sigma**2 - adjacent_sigma**2)
        return f, G


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def drift_coeff(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """f(t) of the linear drift f(x, t) = f(t) x, read off the SDE itself (x = 1)."""
    return sde.drift(torch.ones(t.shape[0], 1, dtype=t.dtype), t)[:, 0]


def derivative(fn, t: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    """d fn / dt by the fourth-order central difference: truncation ~ h^4 |fn^(5)| / 30, rounding ~ 1e-16 |fn| / h."""
    return (-fn(t + 2 * h) + 8 * fn(t + h) - 8 * fn(t - h) + fn(t - 2 * h)) / (12 * h)


def gauss_legendre(fn, s: torch.Tensor, t: torch.Tensor, nodes: int = 48) -> torch.Tensor:
    """int_s^t fn(u) du per element by Gauss-Legendre quadrature in float64 (exact to ~1e-15 for smooth fn)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = torch.from_numpy(x), torch.from_numpy(w)
    half = (t - s)[:, None] / 2
    u = (s + t)[:, None] / 2 + half * x[None]
    values = fn(u.reshape(-1), t[:, None].expand_as(u).reshape(-1)).reshape(u.shape)
    return (half * w[None] * values).sum(dim=1)


def simulate_euler_maruyama(sde: SDE, x0: torch.Tensor, num_paths: int, num_steps: int, record_steps, generator):
    """Forward Euler-Maruyama paths of dx = f(t) x dt + g(t) dw on [0, 1] in float64, started from the t = 0 marginal
    of x0 (N(x0, sigma(0)^2 I): VE's sigma_min smoothing, a point mass for VP and sub-VP). Returns {step: samples}.

    f(t_k) and g(t_k) are read from the SDE on the whole grid at once, so the loop is two fused tensor ops per step.
    """
    dt = 1.0 / num_steps
    grid = torch.arange(num_steps, dtype=torch.float64) * dt
    decay = (1 + drift_coeff(sde, grid) * dt).tolist()  # x + f(t_k) x dt
    kick = (sde.diffusion(grid) * math.sqrt(dt)).tolist()  # g(t_k) sqrt(dt)
    x = x0.expand(num_paths, -1).clone()
    sigma_0 = sde.marginal_std(torch.zeros(1, dtype=torch.float64))
    x += sigma_0 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    noise = torch.empty_like(x)
    out = {}
    for k in range(num_steps):
        noise.normal_(generator=generator)
        x.mul_(decay[k]).add_(noise, alpha=kick[k])
        if k + 1 in record_steps:
            out[k + 1] = x.clone()
    return out


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


# ---------------------------------------------------------------------------------------------------------------------
# The common specification
# ---------------------------------------------------------------------------------------------------------------------
class SDECommonTest:
    """Checks every SDE must pass. A subclass sets the hooks below; nothing here depends on which SDE it is."""

    #: The SDE class under test and its registered name.
    sde_class: type = None
    registered_name: str = ""
    #: Its documented default parameters.
    default_config: dict = {}
    #: Parameter sets that must raise ValueError.
    bad_configs: list = []
    #: The line-by-line port of score_sde's class.
    score_sde_port: type = None
    #: (rtol, atol) within which score_sde's `discretize` on its own grid agrees with ours (see `port_time_step`).
    port_discretize_tolerance = (0.0, 0.0)

    def get_sde(self) -> SDE:
        return self.sde_class()

    def std_series(self, sde, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) to second order in t as t -> 0 (the subclass derives it)."""
        raise NotImplementedError

    def port_time_step(self, N: int) -> float:
        """The time between the two ends of one score_sde `discretize` step on its N-step grid."""
        raise NotImplementedError

    # ------------------------------------------------------------------ registration and configuration
    def test_registered_under_its_name(self):
        assert SDES.get(self.registered_name) is self.sde_class
        assert isinstance(get_sde(self.registered_name), self.sde_class)

    def test_defaults(self):
        config = self.get_sde().get_config()
        assert {k: config[k] for k in self.default_config} == self.default_config

    def test_config_round_trip(self):
        sde = self.get_sde()
        assert type(sde)(**sde.get_config()) == sde
        assert get_sde(self.registered_name, **sde.get_config()) == sde

    def test_bad_parameters_raise_value_error(self):
        assert self.bad_configs, "declare the parameter sets that must be rejected"
        for config in self.bad_configs:
            with pytest.raises(ValueError):
                self.sde_class(**config)

    # ------------------------------------------------------------------ marginals
    def test_marginals_match_euler_maruyama_simulation(self):
        # 20000 one-dimensional paths from a fixed x0, 2000 forward Euler-Maruyama steps in float64 (~1.5 s idle).
        # Tolerance: 5 Monte-Carlo standard errors (mean: sigma / sqrt(n); std: sigma / sqrt(2 n)) plus
        # Euler-Maruyama's first-order bias, which at dt = 5e-4 is below 0.5% of sigma for all three SDEs (it is
        # ~ dt * |d log g^2 / dt| / 4 <= 5e-4 * 17 / 4 for VE, smaller for VP / sub-VP).
        sde = self.get_sde()
        num_paths, num_steps = 20000, 2000
        record = {500: 0.25, 1000: 0.5, 2000: 1.0}
        x0 = torch.tensor([[1.5]], dtype=torch.float64)
        generator = torch.Generator().manual_seed(1234)
        paths = simulate_euler_maruyama(sde, x0, num_paths, num_steps, set(record), generator)
        for step, t_value in record.items():
            t = torch.tensor([t_value], dtype=torch.float64)
            mean, std = sde.marginal_prob(x0, t)
            samples = paths[step]
            se_mean = std / math.sqrt(num_paths)
            se_std = std / math.sqrt(2 * num_paths)
            bias = 5e-3 * std
            assert torch.all((samples.mean(0) - mean[0]).abs() <= 5 * se_mean + bias), (t_value, samples.mean(0), mean)
            assert torch.all((samples.std(0) - std).abs() <= 5 * se_std + bias), (t_value, samples.std(0), std)

    def test_mean_coefficient_solves_the_mean_ode(self):
        # d log m / dt = f(t) for a linear drift f(x, t) = f(t) x. Fourth-order differences, h = 1e-4, float64:
        # log m is a quadratic, so only rounding (~1e-16 |log m| / h < 1e-11) separates the two; rtol 1e-8.
        sde = self.get_sde()
        t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
        torch.testing.assert_close(derivative(sde.log_mean_coeff, t), drift_coeff(sde, t), rtol=1e-8, atol=1e-12)

    def test_diffusion_squared_solves_the_variance_ode(self):
        # For dx = f(t) x dt + g(t) dw the kernel's variance obeys dVar/dt = 2 f(t) Var + g(t)^2, so
        # g(t)^2 = dVar/dt - 2 f(t) Var: this ties `diffusion` to `marginal_std` and `drift`.
        # Fourth-order differences, h = 1e-4, float64: truncation ~ h^4 |Var^(5)| / 30 and rounding ~ 1e-16 |Var| / h
        # stay below 1e-8 relative on t in [0.01, 0.99] (sub-VP's Var ~ t^2 near 0 is why the grid starts at 0.01).
        sde = self.get_sde()
        t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
        var = lambda u: sde.marginal_std(u) ** 2  # noqa: E731
        dvar_dt = derivative(var, t)
        torch.testing.assert_close(dvar_dt - 2 * drift_coeff(sde, t) * var(t), sde.diffusion(t) ** 2, rtol=1e-8, atol=0)

    def test_t_from_marginal_std_inverts_marginal_std(self):
        # float64 over t in [1e-5, 1]: only rounding separates the two (observed <= 1e-12).
        sde = self.get_sde()
        t = torch.logspace(-5, 0, 300, dtype=torch.float64)
        torch.testing.assert_close(sde.t_from_marginal_std(sde.marginal_std(t)), t, rtol=1e-9, atol=0)

    def test_std_near_zero_matches_series(self):
        # At t = 1e-8 the second-order series is exact up to O(t^2) relative, ~1e-14; rtol 1e-10 leaves rounding room.
        sde = self.get_sde()
        t = torch.tensor([1e-8, 1e-10, 1e-12], dtype=torch.float64)
        std = sde.marginal_std(t)
        assert torch.all(std > 0) and torch.all(torch.isfinite(std))
        torch.testing.assert_close(std, self.std_series(sde, t), rtol=1e-10, atol=0)

    def test_log_snr_is_finite_and_decreasing(self):
        sde = self.get_sde()
        t = torch.logspace(-6, 0, 100, dtype=torch.float64)
        log_snr = sde.log_snr(t)
        assert torch.all(torch.isfinite(log_snr))
        assert torch.all(log_snr[1:] < log_snr[:-1])

    # ------------------------------------------------------------------ transition kernels
    def test_transition_carries_marginal_at_s_to_marginal_at_t(self):
        # p_0t = p_st o p_0s: m(t) = a m(s) and sigma(t)^2 = a^2 sigma(s)^2 + b^2. Exact algebra, float64 rounding only.
        sde = self.get_sde()
        grid = torch.linspace(0, 1, 21, dtype=torch.float64)
        s, t = torch.meshgrid(grid, grid, indexing="ij")
        s, t = s[s < t], t[s < t]
        a, b = sde.transition(t, s)
        torch.testing.assert_close(a * sde.marginal_mean_coeff(s), sde.marginal_mean_coeff(t), rtol=1e-10, atol=0)
        torch.testing.assert_close(
            (a * sde.marginal_std(s)) ** 2 + b**2, sde.marginal_std(t) ** 2, rtol=1e-10, atol=0
        )

    def test_transitions_compose(self):
        # Chapman-Kolmogorov for Gaussian kernels: (r -> s) then (s -> t) is (r -> t).
        sde = self.get_sde()
        r = torch.tensor([0.0, 0.1, 0.3, 0.02], dtype=torch.float64)
        s = torch.tensor([0.4, 0.5, 0.3001, 0.9], dtype=torch.float64)
        t = torch.tensor([1.0, 0.7, 0.8, 0.95], dtype=torch.float64)
        a_rs, b_rs = sde.transition(s, r)
        a_st, b_st = sde.transition(t, s)
        a_rt, b_rt = sde.transition(t, r)
        torch.testing.assert_close(a_st * a_rs, a_rt, rtol=1e-10, atol=0)
        torch.testing.assert_close((a_st * b_rs) ** 2 + b_st**2, b_rt**2, rtol=1e-10, atol=0)

    def test_transition_var_matches_quadrature_reference(self):
        # Reference: b^2(t, s) = int_s^t g(u)^2 (m(t) / m(u))^2 du by 48-node Gauss-Legendre in float64, which has no
        # cancellation for any gap t - s (the integrand is smooth and positive). Gaps from 1e-10 to 1.
        sde = self.get_sde()
        gaps = torch.logspace(-10, 0, 21, dtype=torch.float64)
        t = torch.full_like(gaps, 1.0)
        t = torch.cat([t, torch.full_like(gaps[:-1], 0.5), torch.full_like(gaps[:-3], 0.05)])
        gaps = torch.cat([gaps, gaps[:-1] * 0.5, gaps[:-3] * 0.05])
        s = t - gaps
        def integrand(u, t_end):
            return sde.diffusion(u) ** 2 * torch.exp(2 * (sde.log_mean_coeff(t_end) - sde.log_mean_coeff(u)))

        reference = gauss_legendre(integrand, s, t)
        torch.testing.assert_close(sde.transition_var(t, s), reference, rtol=1e-9, atol=0)

    def test_transition_var_is_positive_and_first_order_as_s_approaches_t(self, dtype):
        # b^2(t, s) = g(t)^2 (t - s) (1 + O(t - s)); the O-term is bounded by |d log g^2/dt| + 2 |f| <= 50 here.
        # float64 checks the ratio to rtol 50 h + 1e-9; float32 only positivity (its t - s is itself ~1e-7 coarse).
        sde = self.get_sde()
        t = torch.tensor([0.1, 0.5, 1.0], dtype=dtype).repeat_interleave(4)
        s = t - torch.tensor([1e-2, 1e-4, 1e-6, 1e-7], dtype=dtype).repeat(3)
        var = sde.transition_var(t, s)
        assert var.dtype == dtype
        assert torch.all(var > 0) and torch.all(torch.isfinite(var))
        if dtype == torch.float64:
            h = t - s  # exact in floating point (Sterbenz)
            ratio = var / (sde.diffusion(t) ** 2 * h)
            assert torch.all((ratio - 1).abs() <= 50 * h + 1e-9), ratio

    # ------------------------------------------------------------------ discretisation
    def test_discretize_is_euler_maruyama_to_first_order(self):
        # (f_i, G_i) from t to t - dt agrees with Euler-Maruyama (f dt, g(t) sqrt(dt)) up to O(dt^2) / O(dt) relative:
        # |G^2 / (g^2 dt) - 1| and |f_i / (f dt) - 1| <= 50 dt on t in [0.1, 1] (same bound as above).
        sde = self.get_sde()
        t = torch.linspace(0.1, 1.0, 10, dtype=torch.float64)
        x = torch.randn(10, 3, dtype=torch.float64)
        for dt in (1e-2, 1e-3, 1e-4):
            f, G = sde.discretize(x, t, t - dt)
            drift, diffusion = sde.sde(x, t)
            torch.testing.assert_close(G**2, diffusion**2 * dt, rtol=50 * dt, atol=0)
            torch.testing.assert_close(f, drift * dt, rtol=50 * dt, atol=1e-300)

    # ------------------------------------------------------------------ prior
    @pytest.mark.parametrize("shape", [(5, 3), (4, 3, 8, 8)], ids=["flat", "image"])
    def test_prior_logp_matches_torch_distributions(self, shape, dtype):
        sde = self.get_sde()
        z = sde.prior_sampling(shape, dtype=dtype)
        expected = torch.distributions.Normal(torch.zeros((), dtype=dtype), sde.prior_std).log_prob(z).flatten(1).sum(1)
        logp = sde.prior_logp(z)
        assert logp.dtype == dtype and logp.shape == (shape[0],)
        # float32: a sum of up to 192 terms of size ~ 1e1 loses ~ 192 * 6e-8 relative at worst.
        torch.testing.assert_close(logp, expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)

    def test_prior_sampling_has_prior_std(self, dtype):
        # 2e5 draws: standard errors prior_std / sqrt(n) (mean) and prior_std / sqrt(2 n) (std); tolerance 5 of them.
        sde = self.get_sde()
        n = 200_000
        samples = sde.prior_sampling((n // 4, 4), generator=torch.Generator().manual_seed(0), dtype=dtype)
        assert samples.dtype == dtype and samples.shape == (n // 4, 4)
        samples = samples.double().flatten()
        assert abs(samples.mean().item()) <= 5 * sde.prior_std / math.sqrt(n)
        assert abs(samples.std().item() - sde.prior_std) <= 5 * sde.prior_std / math.sqrt(2 * n)

    # ------------------------------------------------------------------ reverse time
    def test_reverse_drift_and_probability_flow_drift(self, dtype):
        # eq. (6): f - g^2 s; eq. (13): f - g^2 s / 2; f and g from score_sde's port, so the numbers are independent.
        sde, port = self.get_sde(), self.score_sde_port()
        x = torch.randn(4, 2, 3, 3, dtype=dtype)
        score = torch.randn_like(x)
        t = torch.tensor([0.01, 0.3, 0.6, 1.0], dtype=dtype)
        f, g = port.sde(x, t)
        g2 = (g**2)[:, None, None, None]
        tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sde.reverse_drift(x, t, score), f - g2 * score, **tol)
        torch.testing.assert_close(sde.reverse_drift(x, t, score, probability_flow=True), f - 0.5 * g2 * score, **tol)

    # ------------------------------------------------------------------ precision
    def test_dtype_is_preserved_end_to_end(self, dtype):
        sde = self.get_sde()
        x = torch.randn(3, 2, 4, 4, dtype=dtype)
        t = torch.tensor([1e-8, 0.5, 1.0], dtype=dtype)
        t_next = t * 0.5
        outputs = {
            "drift": sde.drift(x, t),
            "diffusion": sde.diffusion(t),
            "log_mean_coeff": sde.log_mean_coeff(t),
            "marginal_mean": sde.marginal_prob(x, t)[0],
            "marginal_std": sde.marginal_prob(x, t)[1],
            "t_from_marginal_std": sde.t_from_marginal_std(sde.marginal_std(t)),
            "log_snr": sde.log_snr(t),
            "transition_a": sde.transition(t, t_next)[0],
            "transition_b": sde.transition(t, t_next)[1],
            "discretize_f": sde.discretize(x, t, t_next)[0],
            "discretize_G": sde.discretize(x, t, t_next)[1],
            "reverse_drift": sde.reverse_drift(x, t, x),
            "langevin_alpha": sde.langevin_alpha(t),
            "prior_sampling": sde.prior_sampling(x.shape, dtype=dtype),
            "prior_logp": sde.prior_logp(x),
        }
        for name, value in outputs.items():
            assert value.dtype == dtype, name
            assert torch.all(torch.isfinite(value)), name
        # End to end: 20 reverse Euler steps with the exact score of N(0, I) data stay in `dtype` and finite.
        ts = torch.linspace(1.0, 1e-3, 21, dtype=dtype)
        x = sde.prior_sampling((8, 2), dtype=dtype)
        for t_cur, t_nxt in zip(ts[:-1], ts[1:]):
            tb = t_cur.expand(8)
            m, std = sde.marginal_mean_coeff(tb), sde.marginal_std(tb)
            score = -x / (m**2 + std**2)[:, None]
            noise = sde.diffusion(tb)[:, None] * (t_cur - t_nxt).sqrt() * torch.randn_like(x)
            x = x + sde.reverse_drift(x, tb, score) * (t_nxt - t_cur) + noise
        assert x.dtype == dtype and torch.all(torch.isfinite(x))

    # ------------------------------------------------------------------ the original code
    def test_matches_score_sde_port(self):
        # The same formulas, evaluated two ways in float64: agreement to rounding (rtol 1e-12), except where score_sde
        # computes 1 - exp(2 log m) (VP / sub-VP std, sub-VP g) and loses ~1e-16 / (beta_min t) = 1e-10 relative at
        # t = 1e-5 that our expm1 keeps: rtol 1e-9 there.
        sde, port = self.get_sde(), self.score_sde_port()
        x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
        t = torch.tensor([1e-5, 0.1, 0.4, 0.77, 1.0], dtype=torch.float64)
        tol = dict(rtol=1e-12, atol=1e-300)
        (drift, diffusion), (port_drift, port_diffusion) = sde.sde(x, t), port.sde(x, t)
        torch.testing.assert_close(drift, port_drift, **tol)
        torch.testing.assert_close(diffusion, port_diffusion.to(torch.float64), rtol=1e-9, atol=0)
        mean, std = sde.marginal_prob(x, t)
        port_mean, port_std = port.marginal_prob(x, t)
        torch.testing.assert_close(mean, port_mean, **tol)
        torch.testing.assert_close(std, torch.as_tensor(port_std, dtype=torch.float64), rtol=1e-9, atol=0)
        z = torch.randn(5, 3, 4, 4, dtype=torch.float64) * sde.prior_std
        torch.testing.assert_close(sde.prior_logp(z), port.prior_logp(z).to(torch.float64), **tol)

    def test_discretize_matches_score_sde_port(self):
        # score_sde steps from grid point i to i - 1 of its N-point grid; see `port_discretize_tolerance` per SDE.
        sde, port = self.get_sde(), self.score_sde_port()
        N = port.N
        i = torch.arange(1, N, 37, dtype=torch.float64)
        t = i / (N - 1)
        x = torch.randn(len(t), 1, 2, 2, dtype=torch.float64)
        f, G = sde.discretize(x, t, t - self.port_time_step(N))
        # + 1e-9 of a step so that score_sde's floor(t (N - 1)) lands on i, not i - 1, despite rounding.
        port_f, port_G = port.discretize(x, (i + 1e-9) / (N - 1))
        rtol, atol = self.port_discretize_tolerance
        torch.testing.assert_close(G**2, port_G.to(torch.float64) ** 2, rtol=rtol, atol=atol)
        torch.testing.assert_close(f, port_f, rtol=rtol, atol=atol * x.abs().max().item())


# ---------------------------------------------------------------------------------------------------------------------
# The three SDEs
# ---------------------------------------------------------------------------------------------------------------------
class TestVESDE(SDECommonTest):
    sde_class = VESDE
    registered_name = "ve"
    default_config = {"sigma_min": 0.01, "sigma_max": 50.0}
    bad_configs = [
        {"sigma_min": 1.0, "sigma_max": 1.0},
        {"sigma_min": 2.0, "sigma_max": 1.0},
        {"sigma_min": 0.0, "sigma_max": 1.0},
    ]
    score_sde_port = ScoreSdeVESDE
    # SMLD's chain on score_sde's grid is our exact kernel: agreement to float64 rounding.
    port_discretize_tolerance = (1e-10, 0.0)

    def port_time_step(self, N):
        return 1.0 / (N - 1)

    def std_series(self, sde, t):
        # sigma_min exp(t L) = sigma_min (1 + t L + t^2 L^2 / 2 + O(t^3)), L = log(sigma_max / sigma_min).
        L = math.log(sde.sigma_max / sde.sigma_min)
        return sde.sigma_min * (1 + t * L + (t * L) ** 2 / 2)

    def test_discretize_is_smld_chain(self):
        # eq. (8): G_i^2 = sigma_i^2 - sigma_{i-1}^2 and no drift, on a geometric grid of N = 1000 noise levels.
        sde = self.get_sde()
        N = 1000
        sigmas = torch.exp(torch.linspace(math.log(sde.sigma_min), math.log(sde.sigma_max), N, dtype=torch.float64))
        t = torch.linspace(0, 1, N, dtype=torch.float64)
        x = torch.randn(N - 1, 2, dtype=torch.float64)
        f, G = sde.discretize(x, t[1:], t[:-1])
        torch.testing.assert_close(G**2, sigmas[1:] ** 2 - sigmas[:-1] ** 2, rtol=1e-10, atol=0)
        assert torch.all(f == 0)


class TestVPSDE(SDECommonTest):
    sde_class = VPSDE
    registered_name = "vp"
    default_config = {"beta_min": 0.1, "beta_max": 20.0}
    bad_configs = [{"beta_min": 0.0}, {"beta_min": -0.1}, {"beta_min": 1.0, "beta_max": 0.5}]
    score_sde_port = ScoreSdeVPSDE
    # score_sde uses beta_i = beta(t) / N (first order in 1/N); ours is the exact 1 - alpha_bar(t) / alpha_bar(t - 1/N).
    # They differ by the second-order remainder, bounded by (beta_max' + beta_max^2) / 2 dt^2 ~ 210 dt^2 = 2.1e-4.
    port_discretize_tolerance = (0.0, 2.1e-4)

    def port_time_step(self, N):
        return 1.0 / N

    def std_series(self, sde, t):
        # sigma^2 = 1 - exp(-x), x = beta_min t + (beta_max - beta_min) t^2 / 2, so sigma^2 = x - x^2/2 + O(t^3).
        x = sde.beta_min * t + (sde.beta_max - sde.beta_min) * t**2 / 2
        return (x - x**2 / 2).sqrt()

    def test_std_near_zero_leading_term(self):
        # The brief's leading term sqrt(beta_min t): relative error ~ t (beta_max - beta_min) / (4 beta_min) = 5e-7.
        sde = self.get_sde()
        t = torch.tensor([1e-8], dtype=torch.float64)
        torch.testing.assert_close(sde.marginal_std(t), (sde.beta_min * t).sqrt(), rtol=1e-6, atol=0)

    def test_discretize_is_ddpm_chain(self):
        # eq. (9) with beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, alpha_bar(t) = exp(-beta_min t - (beta_max -
        # beta_min) t^2 / 2): f_i = (sqrt(1 - beta_i) - 1) x, G_i = sqrt(beta_i), on an arbitrary (uneven) grid.
        sde = self.get_sde()
        t = torch.sort(torch.rand(200, dtype=torch.float64)).values
        alpha_bar = torch.exp(-sde.beta_min * t - (sde.beta_max - sde.beta_min) * t**2 / 2)
        beta = 1 - alpha_bar[1:] / alpha_bar[:-1]
        x = torch.randn(199, 3, dtype=torch.float64)
        f, G = sde.discretize(x, t[1:], t[:-1])
        # Rounding: the reference's 1 - ratio cancels for close times (~1e-16 / beta_i relative); ours does not.
        torch.testing.assert_close(G**2, beta, rtol=1e-8, atol=0)
        torch.testing.assert_close(f, ((1 - beta).sqrt() - 1)[:, None] * x, rtol=1e-8, atol=1e-300)


class TestSubVPSDE(SDECommonTest):
    sde_class = SubVPSDE
    registered_name = "subvp"
    default_config = {"beta_min": 0.1, "beta_max": 20.0}
    bad_configs = [{"beta_min": 0.0}, {"beta_min": -0.1}, {"beta_min": 1.0, "beta_max": 0.5}]
    score_sde_port = ScoreSdeSubVPSDE
    # score_sde discretises sub-VP by Euler-Maruyama (dt = 1/N); ours is exact: second-order remainder as for VP.
    port_discretize_tolerance = (0.0, 2.1e-4)

    def port_time_step(self, N):
        return 1.0 / N

    def std_series(self, sde, t):
        # sigma = 1 - exp(-x) = x - x^2/2 + O(t^3), x = beta_min t + (beta_max - beta_min) t^2 / 2.
        x = sde.beta_min * t + (sde.beta_max - sde.beta_min) * t**2 / 2
        return x - x**2 / 2

    def test_std_near_zero_leading_term(self):
        # The brief's leading term beta_min t: relative error ~ t (beta_max - beta_min) / (2 beta_min) ~ 1e-6 at
        # t = 1e-8, so 1e-9 is used for rtol 1e-6.
        sde = self.get_sde()
        t = torch.tensor([1e-9], dtype=torch.float64)
        torch.testing.assert_close(sde.marginal_std(t), sde.beta_min * t, rtol=1e-6, atol=0)

    def test_std_is_at_most_vp_std(self):
        # sigma_subVP = 1 - m^2 <= sqrt(1 - m^2) = sigma_VP since 1 - m^2 is in [0, 1].
        t = torch.linspace(0, 1, 1001, dtype=torch.float64)
        assert torch.all(SubVPSDE().marginal_std(t) <= VPSDE().marginal_std(t))

    def test_drift_is_vp_drift(self):
        x = torch.randn(4, 3, dtype=torch.float64)
        t = torch.rand(4, dtype=torch.float64)
        torch.testing.assert_close(SubVPSDE().drift(x, t), VPSDE().drift(x, t), rtol=0, atol=0)
