"""A random family of Gaussian mixtures with exact score models, to validate samplers on data they were not tuned on.

`random_mixture(generator)` draws one mixture: dimension 2 to 256 (log-uniform), 1 to 10 modes with unequal
weights, each mode a full covariance with a random rotation and axis standard deviations between 2% and 30% of the
data range, means inside the data range [-1, 1] or [0, 1]. `family_member(mixture, sde, parametrization)` pushes it
through VE, VP or sub-VP with the noise range a user would set for that data and returns the exact
`GaussianMixtureScoreModel`, a matching scheduler and a description; `random_family_member(generator)` draws all of
it at once. Everything is a deterministic function of the `torch.Generator`.

The noise ranges:

- VE: sigma_max by score_sde's rule, the largest Euclidean distance between two training points (Song and Ermon
  2020, "Improved Techniques for Training Score-Based Generative Models", sec. 3.1, Technique 1; used by Song et al.
  2021, Appendix C), measured on `num_rule_points` draws of the mixture, times a factor of 1 (the rule itself), 2 or
  4 (a user leaving room). sigma_min is the narrowest axis standard deviation over all modes divided by
  `sigma_min_ratio` (4), at most score_sde's 0.01: well below the narrowest mode.
- VP and sub-VP: score_sde's beta_min = 0.1, beta_max = 20 with N = 1000 (DDPM's beta_1 = 1e-4, beta_N = 0.02 for
  the discrete models; Song et al. 2021, sec. 3.4 and Appendix C).

The parametrisations (`PARAMETRIZATIONS`): ``ddpm_epsilon`` (a DDPM model: integer timesteps 0..N-1 through the
``discrete`` map, epsilon prediction; VP and sub-VP), ``continuous_score`` (the score at continuous t; every SDE)
and ``sigma_score`` (an NCSN-style VE model called with sigma(t); VE only).
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

from .gaussian_mixture import GaussianMixtureScoreModel

#: The data ranges a member's means lie in.
DATA_RANGES: Tuple[Tuple[float, float], ...] = ((-1.0, 1.0), (0.0, 1.0))
#: Mode standard deviations along each principal axis, as fractions of the data range's width.
STD_FRACTION_RANGE: Tuple[float, float] = (0.02, 0.30)
#: Data dimensions drawn (log-uniform) and numbers of modes drawn (uniform), both inclusive.
DIM_RANGE: Tuple[int, int] = (2, 256)
NUM_MODES_RANGE: Tuple[int, int] = (1, 10)
#: VE sigma_max over score_sde's largest-pairwise-distance rule.
SIGMA_MAX_FACTORS: Tuple[float, ...] = (1.0, 2.0, 4.0)

#: Parametrisation name -> (scheduler config keys, the SDEs it applies to).
PARAMETRIZATIONS: Dict[str, Tuple[Dict[str, str], Tuple[str, ...]]] = {
    "ddpm_epsilon": ({"timestep_type": "discrete", "prediction_type": "epsilon"}, ("vp", "subvp")),
    "continuous_score": ({"timestep_type": "continuous", "prediction_type": "score"}, ("ve", "vp", "subvp")),
    "sigma_score": ({"timestep_type": "sigma", "prediction_type": "score"}, ("ve",)),
}
FAMILY_SDES: Tuple[str, ...] = ("ve", "vp", "subvp")


@dataclass
class RandomMixture:
    """A drawn mixture: weights (K,), means (K, D), covariances (K, D, D) in float64, the data range, each mode's
    axis standard deviations (K, D) and score_sde's sigma_max rule measured on it."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    axis_stds: torch.Tensor
    data_range: Tuple[float, float]
    largest_pairwise_distance: float

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_modes(self) -> int:
        return self.means.shape[0]

    def describe(self) -> Dict:
        """What a table or an error message needs to tell members apart (no tensors)."""
        width = self.data_range[1] - self.data_range[0]
        return {
            "dim": self.dim,
            "num_modes": self.num_modes,
            "data_range": tuple(self.data_range),
            "weights": [round(float(w), 4) for w in self.weights],
            "min_std": float(self.axis_stds.min()),
            "max_std": float(self.axis_stds.max()),
            "min_std_fraction": float(self.axis_stds.min()) / width,
            "max_std_fraction": float(self.axis_stds.max()) / width,
            "largest_pairwise_distance": self.largest_pairwise_distance,
        }


@dataclass
class FamilyMember:
    """One member of the family: the exact model, the scheduler it feeds, and its description."""

    model: GaussianMixtureScoreModel
    scheduler: object
    description: Dict = field(default_factory=dict)


#: The sampling target of issue 13 (docs/benchmarks.md): a log-density gap within 0.01 nats/dim, a spread error within 2%, mode weights within sampling noise. With B samples each
#: metric has a sampling-noise floor, so the allowances are 0.01 + 2 gap floors, 0.02 + the spread floor and
#: 2 TV floors + 0.005 (the mode-weight slack of benchmarks/quality_vs_nfe.py).
GAP_TARGET, SPREAD_TARGET, TV_SLACK = 0.01, 0.02, 0.005


@torch.no_grad()
def family_sample_metrics(model: GaussianMixtureScoreModel, samples: torch.Tensor, reference: torch.Tensor, reference_logp: Optional[torch.Tensor] = None, chunk: int = 5000) -> Dict[str, float]:
    """`scoresde_diffusers.evaluation.mixture_sample_metrics` of `samples` against the true `reference` samples,
    with the mode weights compared as the metric assigns them.

    ``mode_tv`` there compares the fraction of samples whose most probable component is k with the mixture weight
    w_k. When modes overlap, even exact samples are assigned to a neighbouring mode's component, so exact samples
    score above the floor (a 2-D, 8-mode member of this family: 0.07-0.08 against a floor of 0.016). Here
    ``mode_tv`` compares the assigned fractions of `samples` with those of `reference` (its floor is unchanged:
    the multinomial noise of B draws); the comparison with w_k is kept as ``mode_tv_weights``. Adds
    ``badness``, the largest metric / allowance ratio (see `GAP_TARGET`): <= 1 meets the target.
    """
    from scoresde_diffusers.evaluation import mixture_sample_metrics

    reference = reference.to(model.dtype).flatten(1)
    if reference_logp is None:
        reference_logp = torch.cat([model.log_prob(part) for part in reference.split(chunk)])
    metrics = mixture_sample_metrics(model, samples, reference=reference, reference_logp=reference_logp)
    k = model.config.num_components

    def assigned(x):
        labels = torch.cat([model.component_posteriors(part.to(model.dtype)).argmax(1) for part in x.flatten(1).split(chunk)])
        return torch.bincount(labels.cpu(), minlength=k).double() / labels.numel()

    metrics["mode_tv_weights"] = metrics["mode_tv"]
    metrics["mode_tv"] = 0.5 * float((assigned(samples) - assigned(reference)).abs().sum())
    metrics["badness"] = max(
        abs(metrics["logp_gap"]) / (GAP_TARGET + 2 * metrics["logp_gap_floor"]),
        metrics["spread"] / (SPREAD_TARGET + metrics["spread_floor"]),
        metrics["mode_tv"] / (2 * metrics["mode_tv_floor"] + TV_SLACK),
    )
    return metrics


def _uniform(generator: torch.Generator, low: float, high: float, size=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _random_rotation(generator: torch.Generator, dim: int) -> torch.Tensor:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed
    (Mezzadri 2007, "How to generate random matrices from the classical compact groups", sec. 5)."""
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


def _check_range(name: str, value: Optional[int], allowed: Tuple[int, int]) -> None:
    if value is not None and not (isinstance(value, int) and allowed[0] <= value <= allowed[1]):
        raise ValueError(f"{name} must be an integer in [{allowed[0]}, {allowed[1]}]; got {value!r}.")


def random_mixture(
    generator: torch.Generator,
    dim: Optional[int] = None,
    num_modes: Optional[int] = None,
    data_range: Optional[Sequence[float]] = None,
    max_dim: int = DIM_RANGE[1],
    num_rule_points: int = 1000,
) -> RandomMixture:
    """Draw a Gaussian mixture of the family; every choice not given is drawn from `generator`, in a fixed order.

    Args:
        generator (`torch.Generator`): the only source of randomness (CPU).
        dim (`int`, *optional*): D in [2, 256]; drawn log-uniformly in [2, `max_dim`] when not given.
        num_modes (`int`, *optional*): K in [1, 10]; drawn uniformly when not given.
        data_range (`(low, high)`, *optional*): ``(-1, 1)`` or ``(0, 1)``; drawn when not given.
        max_dim (`int`, defaults to 256): the largest dimension drawn (tests keep it small).
        num_rule_points (`int`, defaults to 1000): data points on which score_sde's sigma_max rule is measured.

    Each mode k has a random rotation U_k and axis standard deviations drawn log-uniformly between two log-uniform
    draws from `STD_FRACTION_RANGE` times the range width, so the family holds narrow isotropic, wide isotropic and
    strongly anisotropic modes: Sigma_k = U_k diag(s_k^2) U_k^T. Weights are 1/2 + Exp(1) draws, normalised: unequal,
    yet none so small that its mode cannot be counted. Means are uniform in the data range.
    """
    _check_range("dim", dim, DIM_RANGE)
    _check_range("num_modes", num_modes, NUM_MODES_RANGE)
    _check_range("max_dim", max_dim, DIM_RANGE)
    if data_range is not None and tuple(float(v) for v in data_range) not in DATA_RANGES:
        raise ValueError(f"data_range must be one of {list(DATA_RANGES)}; got {tuple(data_range)!r}.")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (the family is drawn on the CPU); got device {generator.device}.")

    # The draws happen even when a value is given, so that fixing one choice leaves the others unchanged.
    log_dim = _uniform(generator, math.log(DIM_RANGE[0]), math.log(max_dim + 1))
    drawn_modes = int(torch.randint(NUM_MODES_RANGE[0], NUM_MODES_RANGE[1] + 1, (), generator=generator))
    drawn_range = DATA_RANGES[int(torch.randint(len(DATA_RANGES), (), generator=generator))]
    dim = dim if dim is not None else min(max_dim, int(math.exp(float(log_dim))))
    k = num_modes if num_modes is not None else drawn_modes
    low, high = (float(v) for v in data_range) if data_range is not None else drawn_range
    width = high - low

    weights = 0.5 - torch.log(torch.rand(k, generator=generator, dtype=torch.float64))
    weights = weights / weights.sum()
    means = _uniform(generator, low, high, (k, dim))
    log_lo, log_hi = (math.log(f * width) for f in STD_FRACTION_RANGE)
    axis_stds, covariances = [], []
    for _ in range(k):
        a, b = _uniform(generator, log_lo, log_hi, (2,)).tolist()
        stds = _uniform(generator, min(a, b), max(a, b), (dim,)).exp()
        rotation = _random_rotation(generator, dim)
        axis_stds.append(stds)
        covariances.append(rotation @ torch.diag(stds**2) @ rotation.T)
    covariances = torch.stack(covariances)
    covariances = 0.5 * (covariances + covariances.transpose(-1, -2))  # exactly symmetric for from_mixture's check

    labels = torch.multinomial(weights, num_rule_points, replacement=True, generator=generator)
    chol = torch.linalg.cholesky(covariances)
    points = means[labels] + torch.einsum("bde,be->bd", chol[labels], torch.randn(num_rule_points, dim, generator=generator, dtype=torch.float64))
    largest = float(torch.cdist(points, points).max())
    return RandomMixture(weights, means, covariances, torch.stack(axis_stds), (low, high), largest)


def _scheduler(sde: str, parametrization: str, sigma_min: float, sigma_max: float):
    from scoresde_diffusers import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler

    keys, sdes = PARAMETRIZATIONS[parametrization]
    if sde == "ve":
        return VESDEScheduler(sigma_min=sigma_min, sigma_max=sigma_max, **keys)
    return {"vp": VPSDEScheduler, "subvp": SubVPSDEScheduler}[sde](**keys)


def family_member(
    mixture: RandomMixture,
    sde: str,
    parametrization: str,
    sigma_max_factor: float = 1.0,
    sigma_min_ratio: float = 4.0,
    dtype: torch.dtype = torch.float64,
) -> FamilyMember:
    """The exact model of `mixture` under `sde` (``ve``, ``vp``, ``subvp``) with `parametrization` (a key of
    `PARAMETRIZATIONS` that applies to that SDE), and its scheduler.

    Args:
        sigma_max_factor (`float`, defaults to 1): VE only, sigma_max over the largest pairwise data distance.
        sigma_min_ratio (`float`, defaults to 4): VE only, the narrowest mode's std over sigma_min (capped at 0.01).
        dtype (`torch.dtype`, defaults to float64): the model's dtype (float64 so that only the sampler errs).
    """
    if sde not in FAMILY_SDES:
        raise ValueError(f"sde must be one of {list(FAMILY_SDES)}; got {sde!r}.")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {list(PARAMETRIZATIONS)}; got {parametrization!r}.")
    if sde not in PARAMETRIZATIONS[parametrization][1]:
        allowed = [name for name, (_, sdes) in PARAMETRIZATIONS.items() if sde in sdes]
        raise ValueError(f"parametrization {parametrization!r} does not apply to {sde!r}; use one of {allowed}.")
    if not sigma_max_factor >= 1 or not sigma_min_ratio > 1:
        raise ValueError(f"sigma_max_factor must be >= 1 and sigma_min_ratio > 1; got {sigma_max_factor!r} and {sigma_min_ratio!r}.")
    sigma_min = min(0.01, float(mixture.axis_stds.min()) / sigma_min_ratio)
    sigma_max = mixture.largest_pairwise_distance * sigma_max_factor
    scheduler = _scheduler(sde, parametrization, sigma_min, sigma_max)
    model = GaussianMixtureScoreModel.from_mixture(mixture.weights, mixture.means, mixture.covariances, scheduler=scheduler)
    model = model.double() if dtype == torch.float64 else model.float() if dtype == torch.float32 else model.to(dtype)
    description = {"sde": sde, "parametrization": parametrization, **mixture.describe()}
    if sde == "ve":
        description.update(sigma_min=sigma_min, sigma_max=sigma_max, sigma_max_factor=sigma_max_factor)
    else:
        description.update(beta_min=scheduler.config.beta_min, beta_max=scheduler.config.beta_max)
    return FamilyMember(model=model, scheduler=scheduler, description=description)


def random_family_member(
    generator: torch.Generator,
    sde: Optional[str] = None,
    parametrization: Optional[str] = None,
    sigma_max_factor: Optional[float] = None,
    **mixture_options,
) -> FamilyMember:
    """Draw a mixture (`random_mixture` with `mixture_options`) and, where not given, the SDE, a parametrisation
    that applies to it and the VE sigma_max factor (one of `SIGMA_MAX_FACTORS`), all from `generator`."""
    mixture = random_mixture(generator, **mixture_options)
    drawn_sde = FAMILY_SDES[int(torch.randint(len(FAMILY_SDES), (), generator=generator))]
    sde = sde if sde is not None else drawn_sde
    if sde not in FAMILY_SDES:
        raise ValueError(f"sde must be one of {list(FAMILY_SDES)}; got {sde!r}.")
    applicable = [name for name, (_, sdes) in PARAMETRIZATIONS.items() if sde in sdes]
    drawn_parametrization = applicable[int(torch.randint(len(applicable), (), generator=generator))]
    drawn_factor = SIGMA_MAX_FACTORS[int(torch.randint(len(SIGMA_MAX_FACTORS), (), generator=generator))]
    return family_member(
        mixture,
        sde,
        parametrization if parametrization is not None else drawn_parametrization,
        sigma_max_factor=sigma_max_factor if sigma_max_factor is not None else drawn_factor,
    )


__all__ = [
    "DATA_RANGES",
    "DIM_RANGE",
    "FAMILY_SDES",
    "FamilyMember",
    "NUM_MODES_RANGE",
    "PARAMETRIZATIONS",
    "RandomMixture",
    "SIGMA_MAX_FACTORS",
    "STD_FRACTION_RANGE",
    "GAP_TARGET",
    "SPREAD_TARGET",
    "TV_SLACK",
    "family_member",
    "family_sample_metrics",
    "random_family_member",
    "random_mixture",
]
