"""Sample-quality metrics: exact ones against a known mixture, and FID / KID against a dataset.

- `mixture_sample_metrics(model, samples)`: for a `GaussianMixtureScoreModel` ground truth, the mean exact
  log-density gap (nats per dimension) of the samples against true samples, the per-dimension spread error, and
  the total variation between the mode weights of the samples (each sample assigned to its most probable
  component) and the mixture's weights, each with its sampling-noise floor for the same number of samples.
- `image_distribution_metrics(real, fake, feature)`: FID and KID through torchmetrics (a maintained
  implementation of Heusel et al. 2017 and Binkowski et al. 2018), with Inception-v3 weights from a local file or
  the package cache (`load_inception_feature`) or any `torch.nn.Module` feature extractor (tests use a tiny one),
  and the same KID on the full sets with its jackknife standard error.
- `kid(x, y)`, `kid_difference(x1, x2, y)`, `frechet_distance(a, b)`: the unbiased KID of two feature sets with a
  standard error, the paired difference of two samplers' KIDs from the same prior draws, and the Frechet distance,
  for features of any network (`benchmarks/trained_digits.py` scores samplers with them).
"""

import math
import os
from typing import Dict, Optional, Union

import torch

#: File name of torch-fidelity's FID Inception-v3 weights, as torchmetrics caches it.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


# ---------------------------------------------------------------------------- exact mixtures
@torch.no_grad()
def mixture_sample_metrics(
    model,
    samples: torch.Tensor,
    num_reference: int = 100_000,
    generator: Optional[torch.Generator] = None,
    reference: Optional[torch.Tensor] = None,
    reference_logp: Optional[torch.Tensor] = None,
) -> Dict[str, float]:
    """Exact quality metrics of `samples` from the mixture `model` (a `GaussianMixtureScoreModel`) at t = 0.

    Returns a dict with:

    - ``logp_gap``: (E_true[log p] - mean log p(samples)) / D, in nats per dimension; positive when the samples are
      too spread out or off the modes, negative when too concentrated. ``logp_gap_floor``: its standard error,
      std(log p) / sqrt(B) / D.
    - ``spread``: max over dimensions of |std(samples) / std(true) - 1|; ``spread_floor``: the same between two
      true samples of B and `num_reference` points (the noise of the estimate).
    - ``mode_tv``: 1/2 sum_k |w_k(samples) - w_k|; ``mode_tv_floor``: its expectation for B true samples
      (Monte Carlo, 20 draws).

    `reference` (true samples) replaces the `num_reference` drawn here, e.g. to share one large draw across calls,
    and `reference_logp` (its ``model.log_prob``) saves recomputing it.
    """
    samples = samples.detach().to(device=model.device, dtype=model.dtype).flatten(1)
    batch, dim = samples.shape
    generator = generator if generator is not None else torch.Generator().manual_seed(1234)
    if reference is None:
        reference = model.sample_data(num_reference, generator=generator)
    reference = reference.to(device=model.device, dtype=model.dtype).flatten(1)
    ref_logp = model.log_prob(reference) if reference_logp is None else reference_logp
    logp = model.log_prob(samples)
    weights = model.weights.detach().cpu().double() / model.weights.detach().cpu().double().sum()
    k = weights.numel()

    def tv(x):
        counts = torch.bincount(model.component_posteriors(x.to(model.dtype)).argmax(1).cpu(), minlength=k).double()
        return 0.5 * float((counts / x.shape[0] - weights).abs().sum())

    reference, samples = reference.double(), samples.double()
    ref_logp, logp = ref_logp.double(), logp.double()
    ref_std = reference.std(0)
    floor_draw = model.sample_data(batch, generator=generator).flatten(1).double()
    tv_floor = sum(0.5 * float((torch.multinomial(weights, batch, replacement=True, generator=generator).bincount(minlength=k) / batch - weights).abs().sum()) for _ in range(20)) / 20
    return {
        "logp_gap": float(ref_logp.mean() - logp.mean()) / dim,
        "logp_gap_floor": float(ref_logp.std()) / math.sqrt(batch) / dim,
        "spread": float((samples.std(0) / ref_std - 1).abs().max()),
        "spread_floor": float((floor_draw.std(0) / ref_std - 1).abs().max()),
        "mode_tv": tv(samples),
        "mode_tv_floor": tv_floor,
    }


# ---------------------------------------------------------------------------- feature-set distances with errors
def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KID's kernel k(x, y) = (x.y / d + 1)^3 between the rows of `a` and `b` (d: feature dimension)."""
    return (a @ b.T / a.shape[1] + 1) ** 3


#: Rows each feature set needs for KID's jackknife: a leave-one-out estimate of the x-x (y-y) term needs two rows left.
KID_MIN_ROWS = 3


def _kid_jackknife(x: torch.Tensor, y: torch.Tensor):
    """(MMD_u^2, its leave-one-x_i-out values (m), its leave-one-y_j-out values (n)), in closed form (see `kid`)."""
    x, y = x.double(), y.double()
    m, n = x.shape[0], y.shape[0]
    if m < KID_MIN_ROWS or n < KID_MIN_ROWS:
        raise ValueError(f"KID's jackknife needs at least {KID_MIN_ROWS} rows in each set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    rxx, ryy = kxx.sum(1) - kxx.diagonal(), kyy.sum(1) - kyy.diagonal()  # off-diagonal row sums
    sxx, syy, sxy = rxx.sum(), ryy.sum(), kxy.sum()
    value = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    # Leave one x_i out: its row and column leave sum_xx, its row leaves sum_xy; likewise for y_j.
    drop_x = (sxx - 2 * rxx) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2 * (sxy - kxy.sum(1)) / ((m - 1) * n)
    drop_y = sxx / (m * (m - 1)) + (syy - 2 * ryy) / ((n - 1) * (n - 2)) - 2 * (sxy - kxy.sum(0)) / (m * (n - 1))
    return value, drop_x, drop_y


def _jackknife_variance(drop: torch.Tensor) -> torch.Tensor:
    return (drop.shape[0] - 1) / drop.shape[0] * (drop - drop.mean()).square().sum()


def kid(x: torch.Tensor, y: torch.Tensor, given_y: bool = False):
    """Unbiased MMD^2 of feature sets `x` (m rows) and `y` (n rows) with the polynomial kernel, and its standard error.

    MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1)) - 2 sum_{i, j} k(x_i, y_j) / (m n)
    (Binkowski et al. 2018, eq. 3 with sec. 3's kernel), exact on the full sets. The standard error is the two-sample
    delete-one jackknife (Arvesen 1969): every leave-one-out estimate, dropping one x_i or one y_j, comes in closed form
    from the kernel matrices' row sums, and se^2 = (m - 1)/m sum_i (theta_(-i) - mean)^2 + the same over the y_j.
    With ``given_y`` it returns (value, se, se given y): the x part alone, the error of comparing several x sets with
    one shared y."""
    value, drop_x, drop_y = _kid_jackknife(x, y)
    variance_x, variance_y = _jackknife_variance(drop_x), _jackknife_variance(drop_y)
    se = float((variance_x + variance_y).sqrt())
    return (float(value), se, float(variance_x.sqrt())) if given_y else (float(value), se)


def kid_difference(x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor):
    """KID(x1, y) - KID(x2, y) and its paired jackknife standard error, for sample sets whose rows are paired (the same
    prior draw for row i of both) against one reference `y`: row i is left out of both at once, and each y_j of both,
    so the errors the two estimates share (the draws', the reference's) cancel."""
    if x1.shape[0] != x2.shape[0]:
        raise ValueError("paired sample sets need the same number of rows")
    value1, drop_x1, drop_y1 = _kid_jackknife(x1, y)
    value2, drop_x2, drop_y2 = _kid_jackknife(x2, y)
    variance = _jackknife_variance(drop_x1 - drop_x2) + _jackknife_variance(drop_y1 - drop_y2)
    return float(value1 - value2), float(variance.sqrt())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) of two feature sets (rows), in float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr (C_a C_b)^(1/2) = sum of sqrt of the eigenvalues of C_a^(1/2) C_b C_a^(1/2) (symmetric, PSD).
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


# ---------------------------------------------------------------------------- FID / KID
def load_inception_feature(weights_path: Optional[str] = None, feature: int = 2048):
    """torchmetrics' FID Inception-v3 (torch-fidelity's port of the TF FID network) with weights from a local file.

    Args:
        weights_path (`str`, *optional*): path of ``weights-inception-2015-12-05-6726825d.pth``; without it, the
            torch hub cache (``$TORCH_HOME/hub/checkpoints``) is searched. Nothing is downloaded.
        feature (`int`, defaults to 2048): the feature layer (64, 192, 768 or 2048).

    Raises:
        `FileNotFoundError` with instructions when the weights are in neither place; `ImportError` when
        torchmetrics or torch-fidelity is not installed.
    """
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("FID with Inception needs torchmetrics and torch-fidelity: `pip install \"scoresde_diffusers[eval]\"`.") from error
    if weights_path is None:
        hub = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_FILE)
        weights_path = hub if os.path.isfile(hub) else None
    if weights_path is None or not os.path.isfile(weights_path):
        raise FileNotFoundError(
            f"Inception-v3 FID weights not found ({weights_path or 'torch hub cache: ' + os.path.join(torch.hub.get_dir(), 'checkpoints')}). "
            f"Download {INCEPTION_WEIGHTS_FILE} from https://github.com/toshas/torch-fidelity/releases on a machine "
            f"with network access and pass --inception_weights PATH (or copy it into the torch hub cache), or use "
            f"--feature_extractor for a custom feature network."
        )
    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=weights_path)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The Inception feature extractor needs torch-fidelity: `pip install \"scoresde_diffusers[eval]\"`.") from error


def _as_uint8_images(x: torch.Tensor, data_range=(-1.0, 1.0)) -> torch.Tensor:
    low, high = data_range
    x = ((x.float() - low) / (high - low)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


@torch.no_grad()
def image_distribution_metrics(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature: Union[int, torch.nn.Module] = 2048,
    inception_weights: Optional[str] = None,
    data_range=(-1.0, 1.0),
    kid_subset_size: int = 1000,
    batch_size: int = 256,
) -> Dict[str, float]:
    """FID and KID between image batches `real` and `fake` of shape (N, C, H, W) in `data_range`: torchmetrics'
    ``kid_mean`` / ``kid_std`` (the mean and spread over random subsets of `kid_subset_size`, as papers report it)
    and ``kid`` / ``kid_se``, the unbiased estimate on the full sets with its jackknife standard error (`kid`; from
    `KID_MIN_ROWS` images of each kind).

    Args:
        real (`torch.Tensor`): dataset images.
        fake (`torch.Tensor`): generated images.
        feature (`int` or `torch.nn.Module`, defaults to 2048): an Inception feature layer (its weights then come
            from `inception_weights` or the cache, see `load_inception_feature`), or any module mapping uint8
            images (N, C, H, W) to features (N, F).
        inception_weights (`str`, *optional*): path of the Inception weights file.
        data_range (`tuple`, defaults to ``(-1, 1)``): range of the pixel values, mapped to uint8 [0, 255].
        kid_subset_size (`int`, defaults to 1000): subset size of KID (capped by the number of images).
        batch_size (`int`, defaults to 256): images per feature-extractor call.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
        from torchmetrics.utilities import dim_zero_cat
    except ImportError as error:
        raise ImportError("FID / KID need torchmetrics (and torch-fidelity for Inception): `pip install \"scoresde_diffusers[eval]\"`.") from error
    if isinstance(feature, int):
        feature = load_inception_feature(inception_weights, feature)
    elif not hasattr(feature, "num_features"):
        # torchmetrics would probe a custom extractor with a 3x299x299 image; tell it the feature size instead.
        feature.num_features = int(feature(_as_uint8_images(real[:1], data_range)).shape[-1])
    subset = min(kid_subset_size, real.shape[0], fake.shape[0])
    fid = FrechetInceptionDistance(feature=feature)
    kid_metric = KernelInceptionDistance(feature=feature, subset_size=subset)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            chunk = _as_uint8_images(chunk, data_range)
            fid.update(chunk, real=is_real)
            kid_metric.update(chunk, real=is_real)
    kid_mean, kid_std = kid_metric.compute()
    metrics = {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}
    if min(real.shape[0], fake.shape[0]) >= KID_MIN_ROWS:
        # The same kernel on the full sets (torchmetrics' states hold the features): one estimate, with its jackknife se.
        metrics["kid"], metrics["kid_se"] = kid(dim_zero_cat(kid_metric.fake_features), dim_zero_cat(kid_metric.real_features))
    return metrics


__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "frechet_distance",
    "image_distribution_metrics",
    "kid",
    "kid_difference",
    "load_inception_feature",
    "mixture_sample_metrics",
    "polynomial_kernel",
]
