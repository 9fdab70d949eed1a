"""The sweep's figures (METHOD.md §6), from its finished runs: Fig. 1 validation loss for N0 = 0 / 1 (EMA-VQ),
Fig. 2 decoded codebooks, Fig. 3 latent perturbation by grid offsets, Fig. 6 perplexity curves, and the
U-matrix of the learned codebooks. A figure whose runs are missing is left out.

Curves are the mean over a configuration's seeds; the images come from its lowest-seed run.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..topography import perturbed_indices, u_matrix
from ..train.figures import agg_figure, codebook_grid, plot_images
from .aggregate import RunRecord
from .posthoc import LoadedRun, load_run
from .studies import EMA_TUNED, KSOM_GAUSSIAN, KSOM_HARD, STUDIES, Config

OFFSETS = range(-3, 4)  # Fig. 3's grid offsets
PERTURBED_IMAGES = 4  # validation images in Fig. 3, spread over the validation set
TILE = 8  # pixels per decoded code in Fig. 2 (keeps the PNG small)
Records = dict[str, list[RunRecord]]  # config name -> its finished runs


def mean_curve(records: Sequence[RunRecord], column: str) -> tuple[list[float], list[float]]:
    """Steps and the mean of ``column`` over the runs at each step all of them logged (NaN-aware)."""
    common = sorted(set.intersection(*(set(r["step"] for r in rec.rows) for rec in records)))
    means = []
    for step in common:
        values = [row[column] for rec in records for row in rec.rows if row["step"] == step]
        finite = [v for v in values if math.isfinite(v)]
        means.append(sum(finite) / len(finite) if finite else math.nan)
    return common, means


def _groups(records: Records, configs: Sequence[Config]) -> dict[str, list[RunRecord]]:
    return {c.label: records[c.name] for c in configs if records.get(c.name)}


def _first(records: Records, config: Config) -> RunRecord | None:
    runs = records.get(config.name)
    return min(runs, key=lambda r: r.run.seed) if runs else None


def plot_runs(groups: dict[str, Sequence[RunRecord]], column: str, path: str | os.PathLike[str], title: str,
              ylabel: str, log_y: bool = False) -> None:
    """``column`` against the step: a colour per configuration, a thin line per run and a thick one for the mean
    over its runs (a mean alone would hide a seed that went wrong, as in the paper's Fig. 1)."""
    fig = agg_figure(6.5, 4.2)
    ax = fig.add_subplot()
    for i, (label, runs) in enumerate(groups.items()):
        for run in runs:
            ax.plot([r["step"] for r in run.rows], [r[column] for r in run.rows], color=f"C{i}", lw=0.7, alpha=0.45)
        ax.plot(*mean_curve(runs, column), color=f"C{i}", lw=2, label=f"{label} (mean of {len(runs)})")
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path)


@torch.no_grad()
def perturbation_grid(run: LoadedRun, offsets: Sequence[int] = OFFSETS, count: int = PERTURBED_IMAGES) -> np.ndarray:
    """(H, W, 3) image in [0, 1]: a row per offset, a column per validation image; each image encoded, every
    latent code moved by the offset along each grid axis (clamped, :func:`perturbed_indices`), decoded."""
    val = next(iter(run.val_sets.values()))
    picks = torch.linspace(0, len(val) - 1, count).long().tolist()
    x = torch.stack([val[i] for i in picks])
    codes = run.model.encode(x)
    levels = codes if isinstance(codes, tuple) else (codes,)
    grids = [q.grid for q in run.model.quantizers.values()]
    moved = [perturbed_indices(c, g, offsets) for c, g in zip(levels, grids)]  # each (offsets, B, h, w)
    rows = []
    for i in range(len(offsets)):
        shifted = tuple(m[i] for m in moved)
        images = run.model.decode_indices(shifted if isinstance(codes, tuple) else shifted[0])
        rows.append(torch.cat(list(run.normalization.denormalize(images).clamp(0, 1)), dim=2))  # side by side
    return torch.cat(rows, dim=1).permute(1, 2, 0).numpy()


def plot_u_matrices(maps: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """U-matrices side by side (grid axis 0 horizontal, as in the codebook figure), each with its colour bar."""
    fig = agg_figure(4.5 * len(maps), 3.4)
    for i, (label, values) in enumerate(maps.items()):
        ax = fig.add_subplot(1, len(maps), i + 1)
        shown = values.T if values.ndim == 2 else values[None, :]
        fig.colorbar(ax.imshow(shown, cmap="viridis", interpolation="nearest", aspect="auto"), ax=ax, shrink=0.8)
        ax.set(title=label, xlabel="grid axis 0", ylabel="grid axis 1" if values.ndim == 2 else "")
    fig.savefig(path, dpi=100)


def write_figures(records: Records, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Writes every figure whose runs are there into ``out``; returns caption -> PNG path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    table1 = _groups(records, STUDIES["table1"].configs)
    if len(table1) > 1:
        path = out / "fig1_val_loss_n0.png"
        plot_runs(table1, "val_loss", path, "Fig. 1: EMA-VQ validation loss, N0 = 0 vs 1", "MSE", log_y=True)
        written["Fig. 1: validation loss of EMA-VQ with N0 = 0 and 1, with and without update-0 (thin lines: "
                "each seed)"] = path
    table2 = _groups(records, (EMA_TUNED, KSOM_HARD, KSOM_GAUSSIAN))
    for level in next(iter(table2.values()))[0].levels if table2 else ():
        path = out / f"fig6_perplexity_{level}.png"
        plot_runs(table2, f"train_perplexity_{level}", path, f"Fig. 6: codebook perplexity ({level})", "perplexity")
        written[f"Fig. 6: perplexity ({level}) of the training batches, mean over the steps between validations"] = path

    pair = {config.label: _first(records, config) for config in (KSOM_HARD, EMA_TUNED)}
    if not all(pair.values()):
        return written
    loaded = {label: load_run(record.run.folder) for label, record in pair.items()}
    captions = {label: f"{label}, seed {pair[label].run.seed}" for label in loaded}
    for level in next(iter(loaded.values())).model.levels:
        path = out / f"fig2_codebooks_{level}.png"
        plot_images({captions[label]: codebook_grid(run.model, level, run.normalization, run.cfg.image_size, tile=TILE)
                     for label, run in loaded.items()}, path, dpi=100)  # 100 dpi: the PNGs stay under 300 KB
        written[f"Fig. 2: decoded codebook ({level}) at the codes' grid positions"] = path
    path = out / "fig3_perturbation.png"
    plot_images({captions[label]: perturbation_grid(run) for label, run in loaded.items()}, path,
                row_labels=[f"{o:+d}" for o in OFFSETS], ylabel="grid offset", width=3.2, height=4.6, dpi=100)
    written["Fig. 3: validation images with every latent code moved by the same grid offset (row); EMA-VQ's codes "
            "are shifted on the same grid layout, which its training ignores"] = path
    path = out / "u_matrix.png"
    plot_u_matrices({f"{captions[label]} ({lv})": u_matrix(q.codebook, q.grid).numpy()
                     for label, run in loaded.items() for lv, q in run.model.quantizers.items()}, path)
    written["U-matrix: mean distance of each code to its grid neighbours (low = smooth map)"] = path
    return written
