"""The `SDE` base class: the mathematics of a linear forward SDE dx = f(t) x dt + g(t) dw on t in [0, T].

Everything here is pure torch (no diffusers import) and works for data of any shape (B, ...) and any floating
dtype: time tensors of shape (B,) are broadcast with `append_dims`, sums run over all non-batch dimensions.
Sources: Song et al. (2021), "Score-Based Generative Modeling through Stochastic Differential Equations",
eqs. (5), (6), (13) and Appendix B.
"""

import abc
import inspect
import math
from typing import Optional, Sequence, Tuple, Union

import torch

from ..utils import append_dims, batch_sum


class SDE(abc.ABC):
    """A forward SDE dx = f(x, t) dt + g(t) dw with a Gaussian perturbation kernel.

    The kernel is p_0t(x_t | x_0) = N(x_t; m(t) x_0, sigma(t)^2 I) with m(t) = `marginal_mean_coeff(t)` and
    sigma(t) = `marginal_std(t)`. Subclasses give f, g, log m and sigma; everything else (reverse-time SDE,
    probability-flow ODE, discretisation, transition kernels, prior) follows here, so a sampler never needs to
    know which SDE it runs on.
    """

    #: Registered name of the SDE (set by the subclass).
    name: str = ""
    #: End time of the forward process.
    T: float = 1.0

    # Conventions of the models trained under this SDE, read by the schedulers when a config leaves them unset, so
    # that a new SDE is one class and one registration, with no table of SDE names anywhere else. The defaults are
    # score_sde's for the VP family: models predict epsilon (-sigma x score) from DDPM's integer step, and
    # sampling stops at t = 1e-3 (Song et al. 2021, Appendix C).
    #: The `prediction_type` of this SDE's models when a scheduler's config does not say.
    default_prediction_type: str = "epsilon"
    #: The `timestep_type` (a name in `TIMESTEP_MAPS`) of this SDE's models when a scheduler's config does not say.
    default_timestep_type: str = "discrete"
    #: The end time of sampling grids when a scheduler's config does not say.
    default_sampling_eps: float = 1e-3
    #: Names of scheduler classes (ours and diffusers') whose configs describe this SDE, for `from_config` swaps.
    scheduler_class_names: Tuple[str, ...] = ()

    @classmethod
    def from_parameters(cls, num_train_timesteps: Optional[int] = None, **parameters) -> "SDE":
        """Build the SDE from those of `parameters` (e.g. a scheduler config's ``beta_min``, ``sigma_max``) that its
        constructor takes, ignoring the rest and None values; `num_train_timesteps` is passed as ``N`` where the SDE
        has one."""
        accepted = inspect.signature(cls).parameters
        values = {**parameters, "N": num_train_timesteps}
        return cls(**{k: v for k, v in values.items() if k in accepted and v is not None})

    # ------------------------------------------------------------------ what a subclass defines
    @abc.abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t) of eq. (5)."""

    @abc.abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) of eq. (5), shape (B,)."""

    @abc.abstractmethod
    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log m(t), where E[x_t | x_0] = m(t) x_0."""

    @abc.abstractmethod
    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t), the standard deviation of x_t given x_0."""

    @abc.abstractmethod
    def t_from_marginal_std(self, std: torch.Tensor) -> torch.Tensor:
        """The inverse of `marginal_std`: the time t at which sigma(t) = `std`."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior p_T = N(0, prior_std^2 I)."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """The keyword arguments that rebuild this SDE: ``type(sde)(**sde.get_config())``."""

    # ------------------------------------------------------------------ derived quantities
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(f(x, t), g(t)), the forward SDE of eq. (5), as score_sde's `SDE.sde`."""
        return self.drift(x, t), self.diffusion(t)

    def marginal_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """m(t) = exp(log m(t))."""
        return torch.exp(self.log_mean_coeff(t))

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean m(t) x_0 and std sigma(t) of p_0t(x_t | x_0) (score_sde's `marginal_prob`); std has shape (B,)."""
        return append_dims(self.marginal_mean_coeff(t), x.ndim) * x, self.marginal_std(t)

    def log_mean_ratio(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """log(m(t) / m(s)); subclasses override it with a form that stays accurate when s is close to t."""
        return self.log_mean_coeff(t) - self.log_mean_coeff(s)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """log(m(t)^2 / sigma(t)^2), the log signal-to-noise ratio of the perturbation kernel."""
        return 2 * (self.log_mean_coeff(t) - torch.log(self.marginal_std(t)))

    def transition_var(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Variance b^2 of the forward transition x_t | x_s for s <= t.

        For a linear SDE the transition is N(a x_s, b^2 I) with a = m(t) / m(s) and
        b^2 = sigma(t)^2 - a^2 sigma(s)^2 (both kernels integrate the same g over [0, t] and [0, s]).
        Subclasses override this with a closed form that does not cancel catastrophically when s is close to t.
        """
        a = torch.exp(self.log_mean_ratio(t, s))
        return (self.marginal_std(t) ** 2 - (a * self.marginal_std(s)) ** 2).clamp_min(0)

    def transition(self, t: torch.Tensor, s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(a, b) of the exact forward transition x_t = a x_s + b z, z ~ N(0, I), for s <= t; shapes (B,)."""
        a = torch.exp(self.log_mean_ratio(t, s))
        return a, self.transition_var(t, s).sqrt()

    def discretize(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(f_i, G_i) of the discrete forward chain x(t) = x(t_next) + f_i + G_i z between t_next < t.

        This is the discretisation of eq. (45)-(47) used by the reverse-diffusion predictor. We use the exact
        transition kernel of the SDE: for VE it is SMLD's chain with G_i^2 = sigma_i^2 - sigma_{i-1}^2 (eq. 8),
        for VP DDPM's chain with f_i = (sqrt(1 - beta_i) - 1) x and G_i = sqrt(beta_i) (eq. 9), where
        1 - beta_i = alpha_bar(t) / alpha_bar(t_next) is exact on any time grid. (score_sde falls back to an
        Euler-Maruyama step for sub-VP; the exact kernel is as cheap and has no discretisation error.)
        `x` is the sample at time t, as in score_sde, so that f_i is evaluated where the score is.
        """
        a, b = self.transition(t, t_next)
        return append_dims(a - 1, x.ndim) * x, b

    def reverse_drift(
        self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor, probability_flow: bool = False
    ) -> torch.Tensor:
        """Drift of the reverse-time SDE, f - g^2 score (eq. 6), or of the probability-flow ODE,
        f - 1/2 g^2 score (eq. 13)."""
        g2 = append_dims(self.diffusion(t) ** 2, x.ndim)
        return self.drift(x, t) - (0.5 if probability_flow else 1.0) * g2 * score

    def langevin_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_i of the Langevin corrector (Algorithms 4 and 5 of Song et al.): 1 unless the SDE shrinks x."""
        return torch.ones_like(t)

    # ------------------------------------------------------------------ prior
    def prior_mean(self, data_mean: Union[float, torch.Tensor] = 0.0) -> Union[float, torch.Tensor]:
        """Mean of the prior: m(T) times the data's mean (a number, or a tensor of one entry per data entry). The
        forward process carries the data's mean to m(T) E[x_0] (Song et al. 2021, Appendix B, eqs. 29 and 33:
        p_0t(x(t) | x(0)) has mean m(t) x(0)); for VP and sub-VP m(T) = exp(-(beta_min + beta_max) / 4) is about
        0.007, so N(0, I) is exact, but VE keeps the whole mean (m = 1): for data in [0, 1] and a sigma_max of the
        size of the data, N(0, sigma_max^2 I) is off by |E[x_0]|^2 / (2 sigma_max^2) nats (`prior_mean_mismatch`),
        which the probability-flow ODE carries to the samples' mode weights."""
        coeff = self._prior_mean_coeff()
        return coeff * data_mean if isinstance(data_mean, torch.Tensor) else coeff * float(data_mean)

    def prior_mean_mismatch(self, mean_error: float) -> float:
        """Nats per data entry that the prior loses when the data's mean it is given is off by `mean_error` in
        every entry: KL(N(m(T) (mu + d), s^2) || N(m(T) mu, s^2)) = (m(T) d)^2 / (2 s^2) for the prior's standard
        deviation s (Song et al. 2021, Appendix B, eqs. 29 and 33 for m(T))."""
        return 0.5 * (self._prior_mean_coeff() * float(mean_error) / self.prior_std) ** 2

    def _prior_mean_coeff(self) -> float:
        """m(T), the factor of the data's mean in the prior's mean."""
        return float(self.marginal_mean_coeff(torch.tensor(self.T, dtype=torch.float64)))

    def prior_sampling(
        self,
        shape: Sequence[int],
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """A sample of the centred prior N(0, prior_std^2 I); add `prior_mean` for data of non-zero mean."""
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype) * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) per sample, summed over all non-batch dimensions (of z - `prior_mean` for data
        of non-zero mean)."""
        dim = z[0].numel()
        return -0.5 * dim * math.log(2 * math.pi * self.prior_std**2) - batch_sum(z**2) / (2 * self.prior_std**2)

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.get_config().items()))))
