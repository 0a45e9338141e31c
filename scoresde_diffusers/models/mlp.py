"""`MLPScoreModel`: a small time-conditioned MLP score network for vector (e.g. 2-D toy) data."""

from typing import Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import GaussianFourierProjection, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn


class MLPScoreModel(ModelMixin, ConfigMixin):
    r"""A residual MLP s_theta(x, timestep) for data of shape (B, dim), called like a diffusers UNet.

    The timestep is embedded as in the UNets: sinusoidal (``"positional"``, DDPM; for integer-scale timesteps of
    the ``discrete`` / ``scaled`` maps) or Gaussian Fourier features of log(sigma) (``"fourier"``, NCSN++; for the
    ``sigma`` map, which needs sigma > 0). Each hidden layer adds the time embedding before its activation.
    Pipelines read ``config.dim`` for the sample shape. What the output means (score, epsilon, ...) is the
    scheduler's ``prediction_type``.

    Args:
        dim (`int`, defaults to 2): data dimension D.
        hidden_dim (`int`, defaults to 128): width of the hidden layers.
        num_layers (`int`, defaults to 3): number of hidden residual layers.
        time_embedding_type (`str`, defaults to ``"positional"``): ``"positional"`` or ``"fourier"``.
        time_embedding_dim (`int`, defaults to 64): size of the sinusoidal features before the embedding MLP.
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 2,
        hidden_dim: int = 128,
        num_layers: int = 3,
        time_embedding_type: str = "positional",
        time_embedding_dim: int = 64,
    ):
        super().__init__()
        if time_embedding_type == "positional":
            self.time_proj = Timesteps(time_embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
            proj_dim = time_embedding_dim
        elif time_embedding_type == "fourier":
            self.time_proj = GaussianFourierProjection(time_embedding_dim // 2, scale=16.0, log=True)
            proj_dim = 2 * (time_embedding_dim // 2)
        else:
            raise ValueError(f"time_embedding_type must be 'positional' or 'fourier', got {time_embedding_type!r}.")
        self.time_embedding = TimestepEmbedding(proj_dim, hidden_dim)
        self.input = nn.Linear(dim, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.time_layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.output = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(
        self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int], return_dict: bool = True
    ) -> Union[UNet2DOutput, Tuple]:
        """The network output at (`sample`, `timestep`).

        Args:
            sample (`torch.Tensor`): (B, dim) noisy samples.
            timestep (`torch.Tensor`, `float` or `int`): the model timestep, scalar or (B,).
            return_dict (`bool`, defaults to `True`): return a `UNet2DOutput` instead of a tuple.
        """
        if sample.ndim != 2 or sample.shape[1] != self.config.dim:
            raise ValueError(f"MLPScoreModel expects samples of shape (B, {self.config.dim}), got {tuple(sample.shape)}.")
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.float().reshape(-1).expand(sample.shape[0]) if timestep.numel() == 1 else timestep.float().reshape(-1)
        emb = self.time_embedding(self.time_proj(timestep).to(self.dtype))
        h = self.input(sample)
        for layer, time_layer, norm in zip(self.layers, self.time_layers, self.norms):
            h = h + layer(nn.functional.silu(norm(h) + time_layer(emb)))
        output = self.output(nn.functional.silu(h))
        return UNet2DOutput(sample=output) if return_dict else (output,)
