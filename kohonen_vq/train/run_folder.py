"""The run folder: config.json, metrics.csv, summary.json, TensorBoard events and checkpoints/.

Only rank 0 writes; on the other ranks a RunFolder is inactive and every method does nothing.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

Row = dict[str, float]


def steps_to_within(steps: Sequence[int], losses: Sequence[float], fraction: float) -> int | None:
    """First validation step whose loss is <= (1 + fraction) x the run's own best (METHOD.md §5:
    fraction 0.1 -> "steps to +10 %"); None without a finite loss."""
    finite = [loss for loss in losses if math.isfinite(loss)]
    if not finite:
        return None
    threshold = (1 + fraction) * min(finite)
    return next(step for step, loss in zip(steps, losses) if loss <= threshold)


def summarize(rows: Sequence[Row], levels: Sequence[str]) -> dict[str, Any]:
    """summary.json's figures from the metrics rows: best validation loss and where, steps to +10 % / +20 %,
    and the last row's perplexity, codebook usage and topographic error per level."""
    if not rows:
        return {"steps": 0}
    steps, losses = [int(r["step"]) for r in rows], [r["val_loss"] for r in rows]
    finite = [(loss, step) for step, loss in zip(steps, losses) if math.isfinite(loss)]
    best_loss, best_step = min(finite) if finite else (math.nan, None)
    last = rows[-1]
    return {"steps": steps[-1], "best_val_loss": best_loss, "best_step": best_step,
            "steps_to_10pct": steps_to_within(steps, losses, 0.1), "steps_to_20pct": steps_to_within(steps, losses, 0.2),
            "final_val_loss": last["val_loss"],
            "final_train_perplexity": {lv: last[f"train_perplexity_{lv}"] for lv in levels},
            "final_val_perplexity": {lv: last[f"val_perplexity_{lv}"] for lv in levels},
            "final_usage": {lv: last[f"usage_{lv}"] for lv in levels},
            "final_topographic_error": {lv: last[f"topographic_error_{lv}"] for lv in levels},
            "skipped_batches": int(last["skipped_batches"])}


def read_rows(folder: str | os.PathLike[str]) -> list[Row]:
    """The rows of ``folder``'s metrics.csv, as floats."""
    with open(Path(folder) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def last_checkpoint(folder: str | os.PathLike[str]) -> Path:
    """checkpoints/last.pt of the run folder ``folder``."""
    return Path(folder) / "checkpoints" / "last.pt"


class RunFolder:
    """Writes one run's files under ``path``. ``resume_step``: keep metrics.csv rows up to that step (those
    after it were written past the checkpoint the run continues from); None starts the folder afresh."""

    def __init__(self, path: str | os.PathLike[str], active: bool, resume_step: int | None):
        self.path, self.active = Path(path), active
        self.checkpoints = self.path / "checkpoints"
        self._writer: Any = None
        if not active:
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            for stale in ("metrics.csv", "summary.json"):
                (self.path / stale).unlink(missing_ok=True)
            shutil.rmtree(self.path / "tensorboard", ignore_errors=True)
        else:
            self._rewrite([r for r in self.rows() if r["step"] <= resume_step])
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        self._writer = SummaryWriter(str(self.path / "tensorboard"), purge_step=resume_step)

    @property
    def last(self) -> Path:
        return last_checkpoint(self.path)

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """Writes ``name`` (config.json, summary.json) in the folder."""
        if self.active:
            (self.path / name).write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")

    def rows(self) -> list[Row]:
        """The rows of metrics.csv so far, as floats."""
        if not self.active or not (self.path / "metrics.csv").exists():
            return []
        return read_rows(self.path)

    def _rewrite(self, rows: list[Row]) -> None:
        if rows:
            with open(self.path / "metrics.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(_csv_row(r) for r in rows)
        else:
            (self.path / "metrics.csv").unlink(missing_ok=True)

    def log_row(self, row: Row) -> None:
        """Appends a validation row to metrics.csv and its values to TensorBoard."""
        if not self.active:
            return
        path = self.path / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(_csv_row(row))
        step = int(row["step"])
        for key, value in row.items():
            if key != "step":
                self._writer.add_scalar(_tag(key), value, step)
        self._writer.flush()

    def log_train_step(self, step: int, loss: float, perplexity: dict[str, float]) -> None:
        """Per-step training curves in TensorBoard."""
        if self.active:
            self._writer.add_scalar("train/loss_step", loss, step)
            for level, value in perplexity.items():
                self._writer.add_scalar(f"train/perplexity_step_{level}", value, step)

    def add_image(self, tag: str, image: Any, step: int) -> None:
        """An (H, W, 3) image in [0, 1] to TensorBoard."""
        if self.active:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _csv_row(row: Row) -> dict[str, str]:
    # repr of a float round-trips exactly, so a resumed run's rows can be compared bit for bit.
    return {k: str(int(v)) if k in ("step", "skipped_batches") else repr(float(v)) for k, v in row.items()}


def _tag(key: str) -> str:
    """TensorBoard tag of a metrics column: train_loss -> train/loss, usage_latent -> codebook/usage_latent."""
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return f"codebook/{key}" if key.startswith(("usage", "topographic")) else f"train/{key}"
