"""Timestep maps: how continuous SDE time t in [0, 1] becomes the `timestep` argument a score model is called with.

Each map is registered in `TIMESTEP_MAPS` as a `TimestepMap(to_model, to_t)` pair of functions
``(sde, value, num_train_timesteps) -> value``; a scheduler's ``timestep_type`` config names one. Built in:

| name         | model timestep                     | for                                                           |
|--------------|------------------------------------|---------------------------------------------------------------|
| `discrete`   | t N - 1  (t = (k + 1) / N)         | DDPM-style UNets trained on integer steps k = 0..N-1 (diffusers' DDPM) |
| `scaled`     | t (N - 1)                          | score_sde's continuous VP / sub-VP models (`labels = t * 999`) |
| `continuous` | t                                  | models conditioned on t itself                                 |
| `sigma`      | sigma(t), the marginal std         | NCSN / NCSN++ models and diffusers' `ScoreSdeVePipeline`       |
| `noise_level_index` | (1 - t)(N - 1)              | score_sde's discrete VE models (index of the noise level)      |

Why `discrete` is t N - 1: DDPM's alpha_bar_k = prod_{i<=k} (1 - beta_i) with beta_i linear from beta_start to
beta_end is, to first order in beta, exp(-(k+1) beta_start - (beta_end - beta_start) k (k+1) / (2 (N-1))), and
the VP SDE with beta_min = N beta_start, beta_max = N beta_end has alpha_bar(t) = exp(-N beta_start t -
N (beta_end - beta_start) t^2 / 2), which agrees at t = (k + 1) / N. So k = 0 is t = 1/N and k = N - 1 is t = 1.
Against diffusers' default `DDPMScheduler` the noise scale sqrt(1 - alpha_bar_k) agrees to 4.9% at k = 0 (over the
first step the continuous beta(t) has grown by (beta_max - beta_min) / N) and to 0.35% from k = 100 on
(tests/test_parametrization.py).
"""

from typing import Callable, NamedTuple

import torch

from ..registry import TIMESTEP_MAPS


def _from_time_zero(sde, num_train_timesteps) -> float:
    return 0.0


class TimestepMap(NamedTuple):
    """A pair of inverse functions between continuous time t and a model's timestep, and the first time `t_min`
    ``(sde, num_train_timesteps) -> float`` at which a model trained under the map is defined (0 unless the map
    says otherwise): samplers and likelihoods never call the model below it."""

    to_model: Callable
    to_t: Callable
    t_min: Callable = _from_time_zero


TIMESTEP_MAPS.register(
    "discrete",
    # A DDPM model saw the integer steps 0..N-1 only: step 0 is t = 1/N, and below it the model is extrapolating.
    TimestepMap(to_model=lambda sde, t, n: t * n - 1, to_t=lambda sde, k, n: (k + 1) / n, t_min=lambda sde, n: 1.0 / n),
)
TIMESTEP_MAPS.register(
    "scaled",
    TimestepMap(to_model=lambda sde, t, n: t * (n - 1), to_t=lambda sde, k, n: k / (n - 1)),
)
TIMESTEP_MAPS.register(
    "continuous",
    TimestepMap(to_model=lambda sde, t, n: t, to_t=lambda sde, k, n: k),
)
# score_sde's discrete VE models (NCSN++ trained with the SMLD loss) take the index of the noise level, counted from
# the largest: index 0 is t = 1, and score_sde rounds (1 - t)(N - 1) to the nearest level. The map stays invertible
# (schedulers map model timesteps back to times); the networks round a fractional index (see `NCSNppModel`).
TIMESTEP_MAPS.register(
    "noise_level_index",
    TimestepMap(to_model=lambda sde, t, n: (1 - t) * (n - 1), to_t=lambda sde, k, n: 1 - k / (n - 1)),
)
TIMESTEP_MAPS.register(
    "sigma",
    TimestepMap(to_model=lambda sde, t, n: sde.marginal_std(t), to_t=lambda sde, s, n: sde.t_from_marginal_std(s)),
)


def t_to_timestep(sde, t: torch.Tensor, timestep_type: str, num_train_timesteps: int) -> torch.Tensor:
    """The model timestep for continuous time `t` under the map `timestep_type`."""
    return TIMESTEP_MAPS.get(timestep_type).to_model(sde, t, num_train_timesteps)


def model_min_time(sde, timestep_type: str, num_train_timesteps: int) -> float:
    """The first continuous time at which a model called through the map `timestep_type` is defined."""
    return float(TIMESTEP_MAPS.get(timestep_type).t_min(sde, num_train_timesteps))


def timestep_to_t(sde, timestep: torch.Tensor, timestep_type: str, num_train_timesteps: int) -> torch.Tensor:
    """Continuous time t for a model `timestep` under the map `timestep_type`."""
    return TIMESTEP_MAPS.get(timestep_type).to_t(sde, timestep, num_train_timesteps)
