"""PNG figures of a run: curves over training steps and the decoded codebook grid (the paper's Fig. 2).

Uses matplotlib's object API with the Agg canvas (no pyplot), so importing it never changes the backend of
an interactive session.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from ..data import Normalization
from ..models import decode_constant_codes

Series = dict[str, tuple[Sequence[float], Sequence[float]]]
DECODE_SIDE = 64  # constant-code images are decoded at most this large: a 256x256 decode of 512 codes is slow


def agg_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_curves(series: Series, path: str | os.PathLike[str], title: str, ylabel: str, log_y: bool = False) -> None:
    """One line per entry of ``series`` (label -> (steps, values)), against the training step."""
    fig = agg_figure(6, 4)
    ax = fig.add_subplot()
    for label, (steps, values) in series.items():
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
    if log_y and all(v > 0 for _, values in series.values() for v in values if math.isfinite(v)):
        ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.savefig(path)


@torch.no_grad()
def codebook_grid(model: nn.Module, level: str, normalization: Normalization, image_size: int,
                  tile: int = 32) -> np.ndarray:
    """(H, W, 3) image in [0, 1]: the decoding of each code (a latent holding it everywhere, at most
    ``DECODE_SIDE`` pixels wide), scaled to ``tile`` pixels and placed at the code's grid position."""
    quantizer = model.quantizers[level]
    side = min(image_size, max(DECODE_SIDE, model.downsampling))
    images = normalization.denormalize(decode_constant_codes(model, level, image_size=side).float().cpu())
    images = images.clamp(0, 1)
    if images.shape[-1] != tile:
        images = F.interpolate(images, size=(tile, tile), mode="area" if images.shape[-1] > tile else "nearest")
    # Code k sits at (k mod s0, k div s0 ...): column k mod s0, row k div s0 (a 1D grid wraps every sqrt(K) codes).
    k = quantizer.num_codes
    columns = quantizer.grid[0] if len(quantizer.grid) > 1 else math.ceil(math.sqrt(k))
    codes = torch.arange(k)
    rows, cols = codes // columns, codes % columns
    canvas = torch.ones(3, int(rows.max() + 1) * tile, columns * tile)
    for code, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        canvas[:, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = images[code]
    return canvas.permute(1, 2, 0).numpy()


def plot_images(images: dict[str, np.ndarray], path: str | os.PathLike[str], title: str | None = None,
                row_labels: Sequence[str] = (), ylabel: str = "", width: float = 4.5, height: float = 3.2,
                dpi: int = 150) -> None:
    """Images side by side, each under its label; ``row_labels`` name equal-height bands of rows of each
    image (y ticks under ``ylabel``), otherwise the axes are hidden."""
    fig = agg_figure(width * len(images), height)
    for i, (label, image) in enumerate(images.items()):
        ax = fig.add_subplot(1, len(images), i + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize="medium")
        if row_labels:
            band = image.shape[0] / len(row_labels)
            ax.set_xticks([])
            ax.set_yticks([(j + 0.5) * band for j in range(len(row_labels))], list(row_labels))
            ax.set_ylabel(ylabel)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=dpi)


def run_figures(folder: str | os.PathLike[str], rows: Sequence[dict[str, float]], model: nn.Module,
                normalization: Normalization, image_size: int) -> dict[str, np.ndarray]:
    """loss.png, perplexity.png and codebook_<level>.png of one run; returns the codebook grids."""
    steps = [r["step"] for r in rows]
    losses: Series = {"validation (recon. MSE)": (steps, [r["val_loss"] for r in rows]),
                      "training (recon. + commitment)": (steps, [r["train_loss"] for r in rows])}
    plot_curves(losses, os.path.join(folder, "loss.png"), "Loss", "loss", log_y=True)
    levels = list(model.quantizers)
    perplexity: Series = {}
    for level in levels:
        name = "" if len(levels) == 1 else f" {level}"
        perplexity[f"training{name}"] = (steps, [r[f"train_perplexity_{level}"] for r in rows])
        perplexity[f"validation{name}"] = (steps, [r[f"val_perplexity_{level}"] for r in rows])
    plot_curves(perplexity, os.path.join(folder, "perplexity.png"), "Codebook perplexity", "perplexity")
    grids = {}
    for level in levels:
        grids[level] = codebook_grid(model, level, normalization, image_size)
        plot_images({f"{level} codebook, decoded ({'x'.join(map(str, model.quantizers[level].grid))} grid)":
                     grids[level]}, os.path.join(folder, f"codebook_{level}.png"))
    return grids
