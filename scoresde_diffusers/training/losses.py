r"""Training losses of score models, registered by name in `LOSSES`.

All of them are denoising score matching (Vincent 2011; Song et al. 2021 eq. 7):

    L(theta) = E_t E_{x_0} E_{x_t | x_0} [ lambda(t) || s_theta(x_t, t) - grad log p_0t(x_t | x_0) ||^2 ],

with x_t = m(t) x_0 + sigma(t) z and grad log p_0t(x_t | x_0) = -z / sigma(t). They differ in lambda(t) and in how
t is drawn. Writing r = sigma(t) s_theta + z (the residual in units of the noise, which stays O(1) as t -> 0),

    lambda(t) || s_theta + z / sigma ||^2 = (lambda(t) / sigma(t)^2) || r ||^2,

so every loss computes ||r||^2 times a per-sample weight w(t); the model's output is first turned into a score by
the scheduler (`prediction_type`), so any parametrisation trains with any loss.

| name                 | t                                            | lambda(t)     | w(t)                                    |
|----------------------|----------------------------------------------|---------------|-----------------------------------------|
| `dsm`                | U[eps, 1]                                    | sigma(t)^2    | 1                                       |
| `likelihood`         | q(t) proportional to g(t)^2 / sigma(t)^2     | g(t)^2        | (g^2 / sigma^2)(t) / ((1 - eps) q(t))   |
| `likelihood_uniform` | U[eps, 1]                                    | g(t)^2        | g(t)^2 / sigma(t)^2                     |
| `smld`               | i / (N - 1), i uniform in {0..N-1}           | sigma_i^2     | 1  (NCSN's loss; needs sigma(0) > 0)    |
| `ddpm`               | (k + 1) / N, k uniform in {0..N-1}           | sigma_k^2     | 1  (DDPM's ||eps - eps_theta||^2)       |

`likelihood` is the likelihood weighting of Song, Durkan, Murray & Ermon (2021), whose loss bounds the negative
log-likelihood (Song, Durkan, Murray & Ermon 2021, Theorem 1), with their importance sampling of t ("sample t from
q(t) proportional to 1 / sigma_t^2"; with lambda = g^2 the proposal is g^2 / sigma^2). Unbiasedness:

    E_{t ~ U[eps,1]} [ (g^2/sigma^2)(t) h(t) ] = int_eps^1 (g^2/sigma^2)(t) h(t) dt / (1 - eps)
                                              = E_{t ~ q} [ (g^2/sigma^2)(t) h(t) / ((1 - eps) q(t)) ]

for any density q > 0 on [eps, 1] and h(t) = E ||r||^2. We use for q the piecewise-constant density of the
normalised g^2/sigma^2 on a log-spaced grid and divide by that same q, so the estimator is exactly unbiased whatever
the grid; the grid only sets how close the weights are to the constant Z / (1 - eps), Z = int g^2/sigma^2 dt,
i.e. the variance. (For VP, g^2/sigma^2 ~ 1/t near 0, which is why uniform t with lambda = g^2 is so noisy.)

`eps` (1e-5 by default, score_sde's continuous-training value) truncates t away from 0 where the score blows up
(Song et al. 2021, Appendix C and H: training and sampling stop at t = eps). Reduction over the data dimensions is a mean (`reduce_mean=True`) or a sum
(score_sde's default); the batch is always averaged.
"""

import abc
from dataclasses import dataclass
from typing import Optional

import torch

from ..registry import Registry
from ..sampling.parametrization import loss_weight
from ..utils import append_dims

#: Training losses by name: ``LOSSES.get("dsm")(scheduler, reduce_mean=True)``.
LOSSES = Registry("loss", "scoresde_diffusers.losses")


@dataclass
class LossOutput:
    """What a loss returns: the scalar `loss`, and per sample the weighted loss `losses` and the times `t`."""

    loss: torch.Tensor
    losses: torch.Tensor
    t: torch.Tensor


def model_score(model, scheduler, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """grad log p_t(x_t) as the model estimates it: the model is called with the scheduler's timestep map and its
    output read as the scheduler's ``prediction_type`` (computed in float32 even under mixed precision)."""
    timestep = scheduler.t_to_timestep(t)
    model_input = scheduler.scale_model_input(x_t, timestep)
    output = model(model_input, timestep.to(torch.float32)).sample
    return scheduler.get_score(output.float(), x_t.float(), t.float())


class ScoreMatchingLoss(abc.ABC):
    """Base of the denoising score-matching losses: a subclass draws the times and gives their weights.

    Args:
        scheduler: a score-SDE scheduler; it gives the SDE, the timestep map and the prediction type.
        reduce_mean (`bool`, defaults to `False`): average the squared residual over the data dimensions instead
            of summing it (score_sde's ``reduce_mean``).
        eps (`float`, defaults to 1e-5): smallest training time of the continuous losses.
    """

    def __init__(self, scheduler, reduce_mean: bool = False, eps: float = 1e-5):
        if not 0 < eps < 1:
            raise ValueError(f"eps must lie in (0, 1), got {eps}.")
        self.scheduler = scheduler
        self.sde = scheduler.sde
        self.reduce_mean = reduce_mean
        self.eps = float(eps)

    @abc.abstractmethod
    def sample_times(self, batch_size: int, device, generator: Optional[torch.Generator] = None):
        """(t, w): training times of shape (B,) and the weights w(t) = lambda(t) / sigma(t)^2 / proposal ratio."""

    def __call__(self, model, x0: torch.Tensor, generator: Optional[torch.Generator] = None) -> LossOutput:
        """The loss of `model` on the clean batch `x0`; `generator` draws t and the noise (global RNG if `None`)."""
        x0 = x0.float()
        t, weight = self.sample_times(x0.shape[0], x0.device, generator)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) if generator is not None else torch.randn_like(x0)
        mean, std = self.sde.marginal_prob(x0, t)
        std = append_dims(std, x0.ndim)
        x_t = mean + std * z
        score = model_score(model, self.scheduler, x_t, t)
        residual = (std * score + z).flatten(1) ** 2
        output_weight = loss_weight(self.sde, x0, t, self.scheduler.config.prediction_type)
        if output_weight is not None:  # a parametrisation trained uniformly in its own output (EDM's)
            weight = weight * output_weight.to(weight.dtype)
        losses = (residual.mean(1) if self.reduce_mean else residual.sum(1)) * weight
        return LossOutput(loss=losses.mean(), losses=losses, t=t)


def _uniform(batch_size, low, high, device, generator):
    u = torch.rand(batch_size, generator=generator, device=device if generator is None else generator.device)
    return (low + (high - low) * u).to(device)


@LOSSES.register("dsm")
class DenoisingScoreMatchingLoss(ScoreMatchingLoss):
    """Continuous DSM with lambda(t) = sigma(t)^2 and t ~ U[eps, 1] (Song et al. 2021, eq. 7; score_sde's
    ``get_sde_loss_fn`` with ``likelihood_weighting=False``)."""

    def sample_times(self, batch_size, device, generator=None):
        t = _uniform(batch_size, self.eps, self.sde.T, device, generator)
        return t, torch.ones_like(t)


@LOSSES.register("likelihood_uniform")
class LikelihoodWeightedLoss(ScoreMatchingLoss):
    """Likelihood weighting lambda(t) = g(t)^2 with t ~ U[eps, 1] (score_sde's ``likelihood_weighting=True``).
    Unbiased but noisy for VP (g^2/sigma^2 ~ 1/t); `ImportanceSampledLikelihoodLoss` has the same expectation."""

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """g(t)^2 / sigma(t)^2, the likelihood weight in units of the noise residual."""
        t64 = t.double()
        return (self.sde.diffusion(t64) ** 2 / self.sde.marginal_std(t64) ** 2).to(t.dtype)

    def sample_times(self, batch_size, device, generator=None):
        t = _uniform(batch_size, self.eps, self.sde.T, device, generator)
        return t, self.weight(t)


@LOSSES.register("likelihood")
class ImportanceSampledLikelihoodLoss(LikelihoodWeightedLoss):
    """Likelihood weighting lambda(t) = g(t)^2 with importance sampling of t from q(t) proportional to
    g(t)^2 / sigma(t)^2 (Song, Durkan, Murray & Ermon 2021, section 4). See the module docstring for why it is
    exactly unbiased.

    Args:
        num_grid_points (`int`, defaults to 4096): cells of the log-spaced grid of the proposal density.
        other arguments: as `ScoreMatchingLoss`.
    """

    def __init__(self, scheduler, reduce_mean: bool = False, eps: float = 1e-5, num_grid_points: int = 4096):
        super().__init__(scheduler, reduce_mean=reduce_mean, eps=eps)
        # 1. Log-spaced grid: g^2/sigma^2 varies like 1/t near 0 for VP and sub-VP, so cells are even in log t.
        edges = torch.logspace(torch.log10(torch.tensor(self.eps)), torch.log10(torch.tensor(float(self.sde.T))), num_grid_points + 1, dtype=torch.float64)
        edges[0], edges[-1] = self.eps, self.sde.T
        # 2. Cell masses by the trapezoid rule; Z is the approximate normaliser int g^2/sigma^2 dt.
        w = self.weight(edges)
        mass = 0.5 * (w[1:] + w[:-1]) * (edges[1:] - edges[:-1])
        self.edges = edges
        self.normalizer = float(mass.sum())
        self.cell_probs = mass / mass.sum()
        self.cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self.cell_probs, 0)])

    def proposal_density(self, t: torch.Tensor) -> torch.Tensor:
        """q(t), the exact density of the times `sample_times` draws (piecewise constant)."""
        cell = (torch.searchsorted(self.edges, t.double().cpu(), right=True) - 1).clamp(0, len(self.cell_probs) - 1)
        return (self.cell_probs[cell] / (self.edges[cell + 1] - self.edges[cell])).to(t.device)

    def sample_times(self, batch_size, device, generator=None):
        # 3. Pick a cell by its mass, then t uniformly inside it: the density is cell_prob / cell_width.
        gen_device = "cpu" if generator is None else generator.device
        u = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64).cpu()
        v = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64).cpu()
        cell = (torch.searchsorted(self.cdf, u, right=True) - 1).clamp(0, len(self.cell_probs) - 1)
        low, high = self.edges[cell], self.edges[cell + 1]
        t = low + (high - low) * v
        q = self.cell_probs[cell] / (high - low)
        weight = self.weight(t) / ((1 - self.eps) * q)
        return t.to(device, torch.float32), weight.to(device, torch.float32)


class _DiscreteLoss(ScoreMatchingLoss):
    """Discrete-time losses: t on a grid of N = ``num_train_timesteps`` times, lambda = sigma^2 (weight 1)."""

    def grid(self) -> torch.Tensor:
        raise NotImplementedError

    def sample_times(self, batch_size, device, generator=None):
        grid = self.grid()
        gen_device = "cpu" if generator is None else generator.device
        index = torch.randint(0, len(grid), (batch_size,), generator=generator, device=gen_device).cpu()
        t = grid[index].to(device, torch.float32)
        return t, torch.ones_like(t)


@LOSSES.register("smld")
class SMLDLoss(_DiscreteLoss):
    """NCSN's loss (Song & Ermon 2019; score_sde's ``get_smld_loss_fn``): sigma_i = sigma(i / (N - 1)), the
    geometric sequence sigma_min .. sigma_max of the VE SDE, weight sigma_i^2. Needs sigma(0) > 0, i.e. an SDE
    like VE whose smallest noise level is not zero."""

    def __init__(self, scheduler, reduce_mean: bool = False, eps: float = 1e-5):
        super().__init__(scheduler, reduce_mean=reduce_mean, eps=eps)
        if float(self.sde.marginal_std(torch.zeros(1, dtype=torch.float64))) <= 0:
            raise ValueError(
                f"The smld loss needs an SDE with sigma(0) > 0 (the VE SDE); {type(self.sde).__name__} has sigma(0) = 0. "
                f"Use the 'ddpm' loss for VP / sub-VP."
            )

    def grid(self):
        n = self.scheduler.config.num_train_timesteps
        return torch.arange(n, dtype=torch.float64) / (n - 1)


@LOSSES.register("ddpm")
class DDPMLoss(_DiscreteLoss):
    """DDPM's simple loss ||eps - eps_theta||^2 (Ho et al. 2020; score_sde's ``get_ddpm_loss_fn``) at the discrete
    times t_k = (k + 1) / N, k = 0..N-1 (the ``discrete`` timestep map: the model sees k)."""

    def grid(self):
        n = self.scheduler.config.num_train_timesteps
        return (torch.arange(n, dtype=torch.float64) + 1) / n


def get_loss(name: str, scheduler, **kwargs) -> ScoreMatchingLoss:
    """Build the loss registered as `name` for `scheduler` (a `ValueError` listing the names if unknown)."""
    return LOSSES.get(name)(scheduler, **kwargs)
