"""After a run: its model rebuilt from the last checkpoint, and its topographic metrics (topography.json).

The metrics, per latent level: the topographic error over the validation latents
(:func:`kohonen_vq.metrics.topographic_error`, computed by the trainer's own validation pass) and the
decoded-neighbour distance ratio (:func:`kohonen_vq.topography.decoded_neighbour_ratio`) of the images the
decoder makes from constant-code latents (:func:`kohonen_vq.models.decode_constant_codes`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset, Normalization
from ..models import decode_constant_codes
from ..topography import decoded_neighbour_ratio
from ..train.batches import build_datasets, val_loader
from ..train.checkpoint import load_checkpoint
from ..train.config import TrainConfig, resume_config
from ..train.evaluate import evaluate
from ..train.figures import DECODE_SIDE
from ..train.run_folder import last_checkpoint
from ..train.trainer import build

TOPOGRAPHY_FILE = "topography.json"
RANDOM_PAIRS = 4096  # random code pairs of the decoded-neighbour ratio's denominator
RATIO_SEED = 0  # fixed, so the ratio of a run is reproducible


@dataclass
class LoadedRun:
    """A trained model in eval mode with what is needed to look at it."""

    cfg: TrainConfig
    step: int
    model: nn.Module
    normalization: Normalization
    val_sets: dict[str, ImageDataset]


def load_run(folder: str | os.PathLike[str], device: torch.device | str = "cpu") -> LoadedRun:
    """The model of ``folder``'s checkpoints/last.pt, rebuilt from the settings stored in it, and its
    validation data."""
    checkpoint = load_checkpoint(last_checkpoint(folder), map_location=device)
    cfg = resume_config(checkpoint["config"], {})
    model = build(cfg)
    model.load_state_dict(checkpoint["model"])
    train_set, val_sets = build_datasets(cfg)
    return LoadedRun(cfg, int(checkpoint["step"]), model.to(device).eval(), train_set.normalization, val_sets)


def measure_topography(run: LoadedRun) -> dict[str, Any]:
    """topography.json's contents: the checkpoint's step and, per level, its grid, topographic error and
    decoded-neighbour ratio."""
    device = next(run.model.parameters()).device
    loaders = {name: val_loader(ds, run.cfg, 0, 1, False) for name, ds in run.val_sets.items()}
    metrics = evaluate(run.model, loaders, device)
    levels = {}
    for level, quantizer in run.model.quantizers.items():
        images = decode_constant_codes(run.model, level, image_size=min(run.cfg.image_size, DECODE_SIDE))
        ratio = decoded_neighbour_ratio(images, quantizer.grid, RANDOM_PAIRS,
                                        generator=torch.Generator().manual_seed(RATIO_SEED))
        levels[level] = {"grid": list(quantizer.grid), "topographic_error": metrics[f"topographic_error_{level}"],
                         "decoded_neighbour_ratio": ratio}
    return {"step": run.step, "levels": levels}


def read_topography(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``folder``'s topography.json, or None if it has none."""
    path = Path(folder) / TOPOGRAPHY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_topography(folder: str | os.PathLike[str], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Measures the run in ``folder`` and writes its topography.json (atomically); returns the contents."""
    result = measure_topography(load_run(folder, device))
    path = Path(folder) / TOPOGRAPHY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return result
