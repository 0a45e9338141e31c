"""Time-dependent classifiers p_t(y | x_t): the exact one of a Gaussian mixture and small networks to train.

Class-conditional sampling needs grad log p_t(y | x) at every time t of the sampler (Song et al. 2021, section 5
eq. 14, and Appendix I.1). Every classifier here is a diffusers
`ModelMixin` + `ConfigMixin` called like a UNet, ``classifier(sample, timestep).logits`` with the same model
timestep the score model gets (the scheduler's ``timestep_type`` map), and saves / loads with
`save_pretrained` / `from_pretrained` (safetensors + config):

- `GaussianMixtureClassifier`: the exact classifier of a Gaussian mixture whose components are grouped into
  classes, log p_t(y | x) = log sum_{k in y} p_t(k | x) from the component posteriors of the noised mixture.
  With `GaussianMixtureScoreModel` it makes class-conditional sampling exactly checkable.
- `TimeDependentClassifier`: a UNet encoder for images (diffusers' `DownBlock2D` residual blocks with the time
  embedding added in every block, then global average pooling and a linear head): the "encoder half of the score
  network" that Song et al. train for CIFAR-10 (Appendix I.1, a WideResNet on noisy images).
- `MLPClassifier`: a residual MLP for vector (2-D toy) data, as a small classifier for MNIST-sized data would be.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import GaussianFourierProjection, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import DownBlock2D
from diffusers.utils import BaseOutput
from torch import nn

from ..sampling.timesteps import timestep_to_t
from .gaussian_mixture import GaussianMixtureScoreModel


@dataclass
class TimeDependentClassifierOutput(BaseOutput):
    """Output of a time-dependent classifier.

    Args:
        logits (`torch.Tensor`): (B, num_classes) unnormalised log-probabilities of the classes at (x_t, t)
            (for `GaussianMixtureClassifier` the normalised log p_t(y | x) itself).
    """

    logits: torch.Tensor


def _batch_timesteps(timestep, sample: torch.Tensor) -> torch.Tensor:
    timestep = torch.as_tensor(timestep, device=sample.device)
    timestep = timestep.float().reshape(-1)
    return timestep.expand(sample.shape[0]) if timestep.numel() == 1 else timestep


def _time_projection(time_embedding_type: str, dim: int):
    """(projection, its output size): sinusoidal for integer-scale timesteps (``discrete`` / ``scaled`` maps),
    Gaussian Fourier features of log(sigma) for the ``sigma`` map, as in `MLPScoreModel` and the UNet presets."""
    if time_embedding_type == "positional":
        return Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0), dim
    if time_embedding_type == "fourier":
        return GaussianFourierProjection(dim // 2, scale=16.0, log=True), 2 * (dim // 2)
    raise ValueError(f"time_embedding_type must be 'positional' or 'fourier', got {time_embedding_type!r}.")


# ---------------------------------------------------------------------------------------------- exact classifier
class GaussianMixtureClassifier(ModelMixin, ConfigMixin):
    r"""The exact time-dependent classifier of a Gaussian mixture whose components are grouped into classes.

    With p_0 = sum_k w_k N(mu_k, Sigma_k) and class y owning the components k with ``component_classes[k] = y``,
    the noised mixture gives p_t(k | x) exactly (`GaussianMixtureScoreModel.component_posteriors`) and
    log p_t(y | x) = logsumexp_{k in y} log(w_k N(x; m mu_k, m^2 Sigma_k + sigma^2 I)) - log p_t(x). Its gradient
    added to the exact score is the exact conditional score grad log p_t(x | y), so guidance_scale 1 samples
    p_0(x | y) = sum_{k in y} w_k N(mu_k, Sigma_k) / sum_{k in y} w_k exactly.

    Build it with `from_mixture` or `from_score_model`; ``forward`` returns those log-probabilities as `logits`.

    Args:
        num_components (`int`): K, the number of mixture components.
        dim (`int`): D, the data dimension.
        component_classes (`List[int]`): the class of each component (K values in [0, num_classes)).
        num_classes (`int`, *optional*): number of classes; defaults to ``max(component_classes) + 1``. Every class
            must own at least one component.
        sde, sde_config, timestep_type, num_train_timesteps, sample_size, in_channels: as in
            `GaussianMixtureScoreModel` (the SDE the mixture is noised by and how the timestep maps to t).
    """

    @register_to_config
    def __init__(
        self,
        num_components: int,
        dim: int,
        component_classes: Sequence[int],
        num_classes: Optional[int] = None,
        sde: str = "vp",
        sde_config: Optional[dict] = None,
        timestep_type: str = "continuous",
        num_train_timesteps: int = 1000,
        sample_size: Optional[int] = None,
        in_channels: Optional[int] = None,
    ):
        super().__init__()
        classes = [int(c) for c in component_classes]
        if len(classes) != num_components:
            raise ValueError(f"component_classes needs one class per component ({num_components}), got {len(classes)}.")
        if min(classes) < 0:
            raise ValueError(f"component_classes must be >= 0, got {classes}.")
        n = max(classes) + 1 if num_classes is None else int(num_classes)
        if max(classes) >= n:
            raise ValueError(f"component_classes {classes} has classes >= num_classes={n}.")
        empty = sorted(set(range(n)) - set(classes))
        if empty:
            raise ValueError(f"Every class needs at least one component; classes {empty} have none (component_classes={classes}).")
        self.register_to_config(component_classes=classes, num_classes=n)
        self.mixture = GaussianMixtureScoreModel(
            num_components, dim, sde=sde, sde_config=sde_config, timestep_type=timestep_type,
            num_train_timesteps=num_train_timesteps, sample_size=sample_size, in_channels=in_channels,
        )  # fmt: skip
        membership = torch.zeros(n, num_components)
        membership[classes, torch.arange(num_components)] = 1.0
        self.register_buffer("membership", membership, persistent=False)  # (C, K): 1 if component k is in class c

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_score_model(cls, model: GaussianMixtureScoreModel, component_classes: Sequence[int], num_classes: Optional[int] = None):
        """The classifier of the mixture of `model` (same SDE, timestep map, shape, dtype and device)."""
        config = {k: model.config[k] for k in ("sde", "sde_config", "timestep_type", "num_train_timesteps", "sample_size", "in_channels")}
        classifier = cls(model.config.num_components, model.config.dim, component_classes, num_classes=num_classes, **config)
        classifier.mixture.load_state_dict(model.state_dict())
        return classifier.to(device=model.device, dtype=model.dtype)

    @classmethod
    def from_mixture(cls, weights, means, covariances, component_classes: Sequence[int], scheduler=None, num_classes: Optional[int] = None, **config):
        """Build the classifier of a mixture; arguments as in `GaussianMixtureScoreModel.from_mixture`."""
        model = GaussianMixtureScoreModel.from_mixture(weights, means, covariances, scheduler=scheduler, **config)
        return cls.from_score_model(model, component_classes, num_classes=num_classes)

    # ------------------------------------------------------------------ the classes
    @property
    def class_weights(self) -> torch.Tensor:
        """p_0(y): the summed mixture weight of each class's components, shape (num_classes,)."""
        weights = self.mixture.weights / self.mixture.weights.sum()
        return self.membership.to(weights.dtype) @ weights

    def log_prob_classes(self, x: torch.Tensor, t) -> torch.Tensor:
        """log p_t(y | x) for every class, shape (B, num_classes), at continuous times t (scalar or (B,))."""
        log_joint, _ = self.mixture._component_terms(self.mixture._flatten(x), t)  # (B, K)
        log_membership = self.membership.to(log_joint.dtype).log()  # 0 or -inf
        log_class_joint = torch.logsumexp(log_joint[:, None, :] + log_membership[None], dim=2)  # (B, C)
        return log_class_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)

    def sample_data(self, batch_size: int, generator: Optional[torch.Generator] = None, t: Optional[float] = None):
        """(x, y): exact samples of the mixture (or of p_t) and their classes."""
        x, components = self.mixture.sample_data(batch_size, generator=generator, t=t, return_labels=True)
        return x, torch.as_tensor(self.config.component_classes)[components]

    # ------------------------------------------------------------------ the diffusers model interface
    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True) -> Union[TimeDependentClassifierOutput, Tuple]:
        """log p_t(y | sample) for every class y at the model `timestep` (mapped to t with ``config.timestep_type``).

        Args:
            sample (`torch.Tensor`): (B, D) or (B, C, H, W) noisy samples x_t.
            timestep (`torch.Tensor`, `float` or `int`): the model timestep, scalar or (B,).
            return_dict (`bool`, defaults to `True`): return a `TimeDependentClassifierOutput` instead of a tuple.
        """
        timestep = torch.as_tensor(timestep, device=sample.device)
        if not timestep.is_floating_point():
            timestep = timestep.double()
        t = timestep_to_t(self.mixture.sde, timestep, self.config.timestep_type, self.config.num_train_timesteps)
        logits = self.log_prob_classes(sample, self.mixture._times(t.to(sample.dtype), sample))
        return TimeDependentClassifierOutput(logits=logits) if return_dict else (logits,)


# ---------------------------------------------------------------------------------------------- networks
class TimeDependentClassifier(ModelMixin, ConfigMixin):
    r"""A time-dependent image classifier: the encoder half of a diffusers `UNet2DModel` and a linear head.

    conv_in -> one `DownBlock2D` per entry of `block_out_channels` (residual blocks that add the time embedding,
    downsampling between levels) -> GroupNorm, SiLU, global average pooling -> Linear(num_classes). Called like the
    score model, ``classifier(x_t, timestep).logits``, with the scheduler's model timestep.

    Args:
        sample_size (`int`, defaults to 8): image height = width.
        in_channels (`int`, defaults to 1): image channels.
        num_classes (`int`, defaults to 10): number of classes.
        block_out_channels (`Tuple[int]`, defaults to ``(32, 64)``): width of each level.
        layers_per_block (`int`, defaults to 1): residual blocks per level.
        time_embedding_type (`str`, defaults to ``"positional"``): ``"positional"`` for the ``discrete`` /
            ``scaled`` timestep maps, ``"fourier"`` (of log sigma) for the ``sigma`` map.
        norm_num_groups (`int`, defaults to 8): groups of the GroupNorms; must divide every width.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        in_channels: int = 1,
        num_classes: int = 10,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        time_embedding_type: str = "positional",
        norm_num_groups: int = 8,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if any(c % norm_num_groups for c in block_out_channels):
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every width in block_out_channels={tuple(block_out_channels)}.")
        width = block_out_channels[0]
        time_dim = 4 * width
        self.time_proj, proj_dim = _time_projection(time_embedding_type, width)
        self.time_embedding = TimestepEmbedding(proj_dim, time_dim)
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        channels = width
        for i, out_channels in enumerate(block_out_channels):
            self.down_blocks.append(
                DownBlock2D(
                    in_channels=channels, out_channels=out_channels, temb_channels=time_dim, num_layers=layers_per_block,
                    resnet_groups=norm_num_groups, add_downsample=i < len(block_out_channels) - 1, downsample_padding=1,
                )
            )  # fmt: skip
            channels = out_channels
        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True) -> Union[TimeDependentClassifierOutput, Tuple]:
        """Class logits at (`sample` (B, C, H, W), model `timestep` scalar or (B,))."""
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if sample.ndim != 4 or tuple(sample.shape[1:]) != expected:
            raise ValueError(f"TimeDependentClassifier expects images of shape (B, {', '.join(map(str, expected))}), got {tuple(sample.shape)}.")
        emb = self.time_embedding(self.time_proj(_batch_timesteps(timestep, sample)).to(self.dtype))
        h = self.conv_in(sample)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = nn.functional.silu(self.norm_out(h)).mean(dim=(2, 3))
        logits = self.head(h)
        return TimeDependentClassifierOutput(logits=logits) if return_dict else (logits,)


class MLPClassifier(ModelMixin, ConfigMixin):
    r"""A time-dependent classifier for vector data (B, dim): a residual MLP whose layers add the time embedding
    (a Wide-ResNet-style classifier, Song et al. 2021, Appendix I.1, at small width), with a linear head.

    Args:
        dim (`int`, defaults to 2): data dimension D.
        num_classes (`int`, defaults to 2): number of classes.
        hidden_dim (`int`, defaults to 128): width of the hidden layers.
        num_layers (`int`, defaults to 3): hidden residual layers.
        time_embedding_type (`str`, defaults to ``"positional"``): ``"positional"`` or ``"fourier"``.
        time_embedding_dim (`int`, defaults to 64): size of the time features.
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 2,
        num_classes: int = 2,
        hidden_dim: int = 128,
        num_layers: int = 3,
        time_embedding_type: str = "positional",
        time_embedding_dim: int = 64,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.time_proj, proj_dim = _time_projection(time_embedding_type, time_embedding_dim)
        self.time_embedding = TimestepEmbedding(proj_dim, hidden_dim)
        self.input = nn.Linear(dim, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.time_layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True) -> Union[TimeDependentClassifierOutput, Tuple]:
        """Class logits at (`sample` (B, dim), model `timestep` scalar or (B,))."""
        if sample.ndim != 2 or sample.shape[1] != self.config.dim:
            raise ValueError(f"MLPClassifier expects samples of shape (B, {self.config.dim}), got {tuple(sample.shape)}.")
        emb = self.time_embedding(self.time_proj(_batch_timesteps(timestep, sample)).to(self.dtype))
        h = self.input(sample)
        for layer, time_layer, norm in zip(self.layers, self.time_layers, self.norms):
            h = h + layer(nn.functional.silu(norm(h) + time_layer(emb)))
        logits = self.head(nn.functional.silu(h))
        return TimeDependentClassifierOutput(logits=logits) if return_dict else (logits,)


#: Classifier presets by kind of data: the training script picks ``image`` for (C, H, W) data, ``mlp`` for vectors.
CLASSIFIER_PRESETS = {"image": TimeDependentClassifier, "mlp": MLPClassifier}

__all__: List[str] = [
    "CLASSIFIER_PRESETS",
    "GaussianMixtureClassifier",
    "MLPClassifier",
    "TimeDependentClassifier",
    "TimeDependentClassifierOutput",
]
