"""`GaussianMixtureScoreModel`: the exact score of a Gaussian mixture pushed through an SDE.

If p_0 = sum_k w_k N(mu_k, Sigma_k) and the perturbation kernel is N(m(t) x_0, sigma(t)^2 I), then
p_t = sum_k w_k N(m(t) mu_k, m(t)^2 Sigma_k + sigma(t)^2 I) exactly, with a closed-form score and log-density.
This model is the ground truth of every sampler and likelihood test, and the four-Gaussian demo of `examples/four_gaussians.py`.
"""

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..sampling.parametrization import PREDICTION_TYPES, from_score, input_scale
from ..sampling.timesteps import timestep_to_t
from ..sdes import get_sde


class GaussianMixtureScoreModel(ModelMixin, ConfigMixin):
    r"""A Gaussian mixture with full covariances and its exact time-dependent score under an SDE.

    Called like a diffusers UNet, ``model(sample, timestep).sample``: the timestep is mapped back to continuous t
    with ``timestep_type`` (the scheduler's map), and the output is the exact score, epsilon, x_0 or v of
    p_t = sum_k w_k N(m(t) mu_k, m(t)^2 Sigma_k + sigma(t)^2 I) by ``prediction_type``. Input may be (B, D) or
    image-shaped (B, C, H, W) with C H W = D. Build one with `from_mixture` (or `four_gaussians`); it saves and
    loads with `save_pretrained` / `from_pretrained` (the mixture is in the weights, the rest in the config).

    Args:
        num_components (`int`): K, the number of mixture components.
        dim (`int`): D, the data dimension.
        sde (`str`, defaults to ``"vp"``): registered name of the SDE the mixture is pushed through.
        sde_config (`dict`, *optional*): keyword arguments of that SDE (its defaults otherwise).
        prediction_type (`str`, defaults to ``"score"``): ``score``, ``epsilon``, ``sample``, ``v_prediction`` or
            ``edm`` (then, like a preconditioned network, it takes the scheduler's scaled input).
        timestep_type (`str`, defaults to ``"continuous"``): how the `timestep` argument maps to t.
        num_train_timesteps (`int`, defaults to 1000): N of the ``discrete`` / ``scaled`` timestep maps.
        sample_size (`int`, *optional*): H = W of image-shaped samples (read by diffusers' pipelines).
        in_channels (`int`, *optional*): C of image-shaped samples.
    """

    @register_to_config
    def __init__(
        self,
        num_components: int,
        dim: int,
        sde: str = "vp",
        sde_config: Optional[dict] = None,
        prediction_type: str = "score",
        timestep_type: str = "continuous",
        num_train_timesteps: int = 1000,
        sample_size: Optional[int] = None,
        in_channels: Optional[int] = None,
    ):
        super().__init__()
        PREDICTION_TYPES.get(prediction_type)
        if (sample_size is None) != (in_channels is None):
            raise ValueError("Give both sample_size and in_channels for image-shaped samples, or neither.")
        if sample_size is not None and in_channels * sample_size**2 != dim:
            raise ValueError(f"in_channels * sample_size**2 = {in_channels * sample_size**2} must equal dim = {dim}.")
        self.sde = get_sde(sde, **(sde_config or {}))
        # Fixed parameters, not trained: they carry dtype and device like a network's weights would.
        self.weights = torch.nn.Parameter(torch.full((num_components,), 1.0 / num_components), requires_grad=False)
        self.means = torch.nn.Parameter(torch.zeros(num_components, dim), requires_grad=False)
        self.covariances = torch.nn.Parameter(torch.eye(dim).repeat(num_components, 1, 1), requires_grad=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mixture(
        cls,
        weights: Sequence[float],
        means: Sequence[Sequence[float]],
        covariances: Union[Sequence, torch.Tensor],
        scheduler=None,
        **config,
    ) -> "GaussianMixtureScoreModel":
        """Build the model of a given mixture.

        Args:
            weights: (K,) positive mixture weights (normalised here).
            means: (K, D) component means.
            covariances: (K, D, D) symmetric positive-definite covariances, or (K,) / (K, D) standard deviations
                of isotropic / diagonal components.
            scheduler (*optional*): a score-SDE scheduler whose SDE, `prediction_type`, `timestep_type` and
                `num_train_timesteps` the model should match, so its outputs feed that scheduler directly.
            config: any other `__init__` argument (e.g. ``sde="ve"``, ``sample_size``, ``in_channels``).
        """
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        if weights.ndim != 1 or means.ndim != 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(f"weights must be (K,) and means (K, D); got {tuple(weights.shape)} and {tuple(means.shape)}.")
        if torch.any(weights <= 0):
            raise ValueError("Mixture weights must be positive.")
        k, d = means.shape
        if covariances.shape == (k,):
            covariances = covariances[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        elif covariances.shape == (k, d):
            covariances = torch.diag_embed(covariances**2)
        if covariances.shape != (k, d, d):
            raise ValueError(f"covariances must be (K, D, D), (K, D) or (K,) with K={k}, D={d}; got {tuple(covariances.shape)}.")
        if not torch.allclose(covariances, covariances.transpose(-1, -2)) or torch.linalg.eigvalsh(covariances).min() <= 0:
            raise ValueError("Each covariance must be symmetric positive definite.")
        if scheduler is not None:
            config = {
                "sde": scheduler.sde.name,
                "sde_config": scheduler.sde.get_config(),
                "prediction_type": scheduler.config.prediction_type,
                "timestep_type": scheduler.config.timestep_type,
                "num_train_timesteps": scheduler.config.num_train_timesteps,
                **config,
            }
        model = cls(num_components=k, dim=d, **config)
        with torch.no_grad():
            model.weights.copy_(weights / weights.sum())
            model.means.copy_(means)
            model.covariances.copy_(covariances)
        return model

    @classmethod
    def four_gaussians(cls, scheduler=None, **config) -> "GaussianMixtureScoreModel":
        """The 2-D four-Gaussian demo distribution: unequal weights 0.1, 0.2, 0.3, 0.4, modes at
        (+-2, +-2) with standard deviations 0.3-0.5 and some correlation, so that a sampler which gets the weights,
        positions or shapes wrong is caught."""
        means = [[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]]
        covariances = [
            [[0.09, 0.0], [0.0, 0.09]],
            [[0.25, 0.1], [0.1, 0.16]],
            [[0.16, -0.06], [-0.06, 0.09]],
            [[0.2, 0.0], [0.0, 0.12]],
        ]
        return cls.from_mixture([0.1, 0.2, 0.3, 0.4], means, covariances, scheduler=scheduler, **config)

    # ------------------------------------------------------------------ the mixture at time t
    @property
    def data_shape(self) -> Tuple[int, ...]:
        """Shape of one sample: (C, H, W) when image-shaped, else (D,)."""
        c, s = self.config.in_channels, self.config.sample_size
        return (c, s, s) if s is not None else (self.config.dim,)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.config.dim:
            raise ValueError(f"Expected samples of shape (B, {self.config.dim}) or (B, *{self.data_shape}); got {tuple(x.shape)}.")
        return x.reshape(x.shape[0], -1)

    def _times(self, t, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1)

    def _eigendecomposition(self, dtype: torch.dtype):
        """Sigma_k = U diag(lambda) U^T, computed in float64 once per value of the covariances (a sampler calls
        the model at every step with the same mixture; the tensor's version counter tells when it changed)."""
        key = (self.covariances._version, self.covariances.data_ptr(), self.covariances.device, dtype)
        cache = getattr(self, "_eigh_cache", None)
        if cache is None or cache[0] != key:
            eigvals, eigvecs = torch.linalg.eigh(self.covariances.detach().to(torch.float64))
            self._eigh_cache = cache = (key, eigvals.to(dtype), eigvecs.to(dtype))
        return cache[1], cache[2]

    def _component_terms(self, x: torch.Tensor, t):
        """For flat x (B, D): the log of w_k N(x; m mu_k, m^2 Sigma_k + sigma^2 I), shape (B, K), and
        each component's score, shape (B, K, D). Uses Sigma_k = U diag(lambda) U^T, so the time-dependent
        covariance is U diag(m^2 lambda + sigma^2) U^T: no matrix inverse per step."""
        dtype = x.dtype
        t = self._times(t, x)
        eigvals, eigvecs = self._eigendecomposition(dtype)
        m = self.sde.marginal_mean_coeff(t)[:, None, None]
        std = self.sde.marginal_std(t)[:, None, None]
        diff = x[:, None, :] - m * self.means.to(dtype)[None]  # (B, K, D)
        z = torch.einsum("bkd,kde->bke", diff, eigvecs)
        var = m**2 * eigvals[None] + std**2  # (B, K, D)
        log_normal = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + x.shape[1] * math.log(2 * math.pi))
        # Normalise here, not only at construction: float32-stored weights sum to 1 only up to ~1e-7.
        weights = self.weights.to(dtype)
        log_joint = (weights / weights.sum()).log()[None] + log_normal
        scores = -torch.einsum("bke,kde->bkd", z / var, eigvecs)
        return log_joint, scores

    def log_prob(self, x: torch.Tensor, t=0.0) -> torch.Tensor:
        """Exact log p_t(x) per sample (t = 0 is the data distribution; for VE it includes sigma_min smoothing)."""
        log_joint, _ = self._component_terms(self._flatten(x), t)
        return torch.logsumexp(log_joint, dim=1)

    def component_posteriors(self, x: torch.Tensor, t=0.0) -> torch.Tensor:
        """p_t(k | x), shape (B, K): the exact time-dependent classifier of the mixture's components."""
        log_joint, _ = self._component_terms(self._flatten(x), t)
        return torch.softmax(log_joint, dim=1)

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """Exact grad_x log p_t(x) at continuous time t (scalar or (B,)), same shape as x."""
        log_joint, scores = self._component_terms(self._flatten(x), t)
        return torch.einsum("bk,bkd->bd", torch.softmax(log_joint, dim=1), scores).reshape(x.shape)

    def sample_data(
        self,
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        t: Optional[float] = None,
        return_labels: bool = False,
    ):
        """Exact samples of p_0 (t=None: the mixture itself) or of p_t, image-shaped if the model is.

        With `return_labels`, also returns the component index of each sample.
        """
        weights = self.weights.detach().to("cpu", torch.float64)
        labels = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covariances.detach().to("cpu", torch.float64))
        noise = torch.randn(batch_size, self.config.dim, generator=generator, dtype=torch.float64)
        x = self.means.detach().to("cpu", torch.float64)[labels] + torch.einsum("bde,be->bd", chol[labels], noise)
        if t is not None:
            t_ = torch.full((batch_size,), float(t), dtype=torch.float64)
            mean, std = self.sde.marginal_prob(x, t_)
            x = mean + std[:, None] * torch.randn(batch_size, self.config.dim, generator=generator, dtype=torch.float64)
        x = x.to(self.means.dtype).reshape(batch_size, *self.data_shape).to(self.device)
        return (x, labels) if return_labels else x

    # ------------------------------------------------------------------ the diffusers model interface
    def forward(
        self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int], return_dict: bool = True
    ) -> Union[UNet2DOutput, Tuple]:
        """The exact model output at (`sample`, `timestep`) by ``config.prediction_type``.

        Args:
            sample (`torch.Tensor`): (B, D) or (B, C, H, W) noisy samples x_t.
            timestep (`torch.Tensor`, `float` or `int`): the model timestep, scalar or (B,), mapped to t with
                ``config.timestep_type``.
            return_dict (`bool`, defaults to `True`): return a `UNet2DOutput` instead of a tuple.
        """
        timestep = torch.as_tensor(timestep, device=sample.device)
        if not timestep.is_floating_point():
            timestep = timestep.double()
        t = timestep_to_t(self.sde, timestep, self.config.timestep_type, self.config.num_train_timesteps)
        t = self._times(t.to(sample.dtype), sample)
        scale = input_scale(self.sde, sample, t, self.config.prediction_type)
        x = sample if scale is None else sample / scale  # a preconditioned model is handed c_in x_t: undo it
        score = self.score(x, t)
        output = from_score(self.sde, score, x, t, self.config.prediction_type)
        return UNet2DOutput(sample=output) if return_dict else (output,)
