"""Pictures of a training run: sample grids (images) or scatter plots (2-D vectors), and the loss curve."""

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import torch


def make_image_grid(samples: torch.Tensor, data_range: Tuple[float, float] = (-1.0, 1.0), min_width: int = 512, pad: int = 2) -> PIL.Image.Image:
    """A square-ish grid of image samples (B, C, H, W), scaled from `data_range` to [0, 255], laid out by diffusers'
    `make_image_grid`. Small images are enlarged by a whole factor (nearest neighbour, so pixels stay sharp) until
    the grid is at least `min_width` pixels wide: 64 8x8 digits become 64-pixel tiles in a 528-pixel grid, where
    unscaled they would be a 66-pixel thumbnail. Tiles are separated by `pad` grey pixels; greyscale stays one
    channel."""
    from diffusers.utils import make_image_grid as diffusers_image_grid

    x = samples.detach().float().cpu()
    low, high = data_range
    x = ((x - low) / (high - low)).clamp(0, 1)
    b, c, h, w = x.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    scale = max(1, math.ceil((min_width / cols - pad) / w))
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    # each tile framed by half the gap, so neighbours are `pad` apart; empty cells of the last row stay grey
    x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2) * 2, value=0.5)
    x = torch.cat([x, torch.full((rows * cols - b, *x.shape[1:]), 0.5)])
    arrays = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    tiles = [PIL.Image.fromarray(a[..., 0] if c == 1 else a) for a in arrays]
    grid = diffusers_image_grid(tiles, rows=rows, cols=cols)
    return grid.convert("L") if c == 1 else grid


def save_samples_figure(samples: torch.Tensor, path: str, data_range=(-1.0, 1.0), reference: Optional[torch.Tensor] = None, title: str = "") -> str:
    """Save samples as a PNG: an image grid for (B, C, H, W), a scatter plot (with `reference` data) for (B, 2)."""
    if samples.ndim == 4:
        make_image_grid(samples, data_range).save(path)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if reference is not None:
        ref = reference.detach().float().cpu().reshape(len(reference), -1).numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.3, color="tab:gray", label="data")
    x = samples.detach().float().cpu().reshape(len(samples), -1).numpy()
    ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6, color="tab:blue", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_loss_plot(history: Sequence[Sequence[float]], path: str, title: str = "training loss", window: int = 50) -> str:
    """Plot the per-step loss (thin) and its running mean over `window` steps (thick) on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h[0] for h in history], dtype=float)
    losses = np.array([h[1] for h in history], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(steps):
        ax.plot(steps, losses, lw=0.5, alpha=0.4, color="tab:blue", label="loss")
        k = max(1, min(window, len(losses)))
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=2, color="tab:blue", label=f"running mean ({k} steps)")
        if np.all(losses > 0):
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
