"""The training loop of ``kohonen-vq train`` (METHOD.md §5): AdamW with weight decay 0, no schedule,
gradient-norm clipping, validation every ``eval_every`` steps, checkpoints, metrics and figures.

Distributed (torchrun): the whole model is wrapped in DDP, without the buffer broadcast before each forward
(``broadcast_buffers=False``; ``forward_sync_buffers=False`` in newer torch). DDP must see every parameter,
because GradientVQ's codebook is one (its gradient has to be averaged like the encoder's). The KSOM / EMA
codebooks are buffers that the quantisers keep identical themselves (rank 0's initial state is broadcast, then
every update uses all-reduced statistics), so re-broadcasting them each step would only add a collective and
hide a bug that let them drift. ``--batch-size`` is the global batch: each rank takes its share of it.
"""
from __future__ import annotations

import inspect
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..data import Normalization
from ..models import VAEOutput, build_model
from .batches import build_datasets, train_loader, val_loader
from .checkpoint import copy_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .evaluate import evaluate
from .figures import run_figures
from .run_folder import RunFolder, last_checkpoint, summarize
from .runtime import Runtime, StopSignals, cpu_threads, deterministic, init_runtime, seed_everything, shutdown


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run; ``checkpoint`` holds its state at ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"{signal.Signals(signum).name} at step {step}: saved {checkpoint}")


@dataclass
class RunResult:
    """What :func:`train` returns (rank 0 holds the rows and summary; other ranks get them empty)."""

    folder: Path
    summary: dict[str, Any]
    rows: list[dict[str, float]]
    model: nn.Module
    normalization: Normalization


@dataclass
class LoopState:
    """The loop's own state, saved in checkpoints so a resumed run logs exactly what an uninterrupted one would."""

    step: int = 0
    best_val_loss: float = math.inf
    skipped_batches: int = 0
    window: list[float] = field(default_factory=list)  # [batches, loss, recon loss, perplexity per level] sums


def build(cfg: TrainConfig) -> nn.Module:
    """The model ``cfg`` describes, freshly initialised from the current torch RNG."""
    return build_model(cfg.arch, cfg.quantizer, cfg.num_codes, hidden=cfg.hidden, res_channels=cfg.res_channels,
                       num_res_blocks=cfg.num_res_blocks, embedding_dim=cfg.embedding_dim, **cfg.quantizer_kwargs())


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over every parameter, without the per-forward buffer broadcast (see the module docstring)."""
    no_sync = ({"forward_sync_buffers": False}  # torch >= 2.14 deprecates broadcast_buffers for this
               if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, grad_clip: float
               ) -> tuple[VAEOutput, bool]:
    """One step: forward (KSOM / EMA quantisers update their codebooks in it), backward, gradient clipping,
    AdamW. A non-finite gradient norm skips the optimiser step; returns the output and whether it was finite."""
    out = model(x)
    optimizer.zero_grad(set_to_none=True)
    out.total.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    finite = bool(torch.isfinite(norm))
    if finite:
        optimizer.step()
    return out, finite


def train(cfg: TrainConfig, checkpoint: dict[str, Any] | None = None, overwrite: bool = False) -> RunResult:
    """Trains as ``cfg`` says, continuing from ``checkpoint`` (see :func:`load_checkpoint`) if given.

    Raises FileExistsError if the run folder already holds a run and neither ``checkpoint`` nor ``overwrite``
    is given, and :class:`TrainingInterrupted` after saving last.pt on SIGINT / SIGTERM.
    """
    runtime = init_runtime(cfg.device)
    try:
        last = last_checkpoint(cfg.run_dir)
        if runtime.is_main and checkpoint is None and not overwrite and last.exists():
            raise FileExistsError(f"{cfg.run_dir!r} already holds a run ({last}); continue it with --resume, "
                                  f"start it again with --overwrite, or pick another --out")
        with deterministic(runtime.device), cpu_threads(cfg.threads), StopSignals() as stop:
            return _train(cfg, checkpoint, runtime, stop)
    finally:
        shutdown(runtime)


def _train(cfg: TrainConfig, checkpoint: dict[str, Any] | None, runtime: Runtime, stop: StopSignals) -> RunResult:
    device, main = runtime.device, runtime.is_main
    train_set, val_sets = build_datasets(cfg)
    seed_everything(cfg.seed)
    model = build(cfg).to(device)
    levels = list(model.quantizers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    state = LoopState(window=[0.0] * (3 + len(levels)))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = LoopState(**checkpoint["loop"])
        set_rng_state(checkpoint["rng"])
    ddp = wrap_ddp(model, device) if runtime.distributed else model
    pin = device.type == "cuda"
    # The loaders check the batch size against the data: before the run folder, so a refused run leaves none.
    batches = train_loader(train_set, cfg, state.step, runtime.rank, runtime.world_size, pin)
    val = {name: val_loader(ds, cfg, runtime.rank, runtime.world_size, pin) for name, ds in val_sets.items()}
    folder = RunFolder(cfg.run_dir, main, resume_step=state.step if checkpoint is not None else None)
    folder.write_json("config.json", cfg.to_dict())

    def save_last() -> None:
        if main:
            save_checkpoint({"step": state.step, "config": cfg.to_dict(), "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "loop": asdict(state), "rng": rng_state()},
                            folder.last)

    bar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"{cfg.preset} {cfg.quantizer}", dynamic_ncols=True,
               disable=not (main and cfg.progress))
    start_step, start_time = state.step, time.perf_counter()
    model.train()
    try:
        for x in batches:
            out, finite = train_step(ddp, optimizer, x.to(device, non_blocking=True), cfg.grad_clip)
            state.step += 1
            values = torch.stack([out.total.detach(), out.recon_loss.detach(), *out.perplexity.values()]).tolist()
            if finite:
                state.window = [s + v for s, v in zip(state.window, [1.0, *values])]
            elif cfg.strict_nan:
                raise FloatingPointError(f"non-finite loss or gradient at step {state.step} (loss {values[0]}); "
                                         f"stopped because of --strict-nan")
            else:
                state.skipped_batches += 1
            folder.log_train_step(state.step, values[0], dict(zip(levels, values[2:])))
            bar.update(1)
            if not bar.disable:  # format the postfix only for a visible bar
                postfix = {"loss": f"{values[0]:.4f}", **{f"ppl_{lv}": f"{p:.0f}" for lv, p in zip(levels, values[2:])}}
                bar.set_postfix(postfix, refresh=False)

            if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
                window = torch.tensor(state.window, dtype=torch.float64, device=device)
                if runtime.distributed:  # perplexities are global already; losses are per rank
                    dist.all_reduce(window)
                means = (window[1:] / window[0].clamp_min(1)).tolist()
                row = metrics_row(state.step, means, evaluate(model, val, device, runtime.distributed), levels,
                                  state.skipped_batches)
                folder.log_row(row)
                improved = row["val_loss"] < state.best_val_loss
                state.best_val_loss = min(state.best_val_loss, row["val_loss"])
                state.window = [0.0] * len(state.window)
                save_last()
                if improved and main:
                    copy_checkpoint(folder.last, folder.best)
                folder.write_json("summary.json", summarize(folder.rows(), levels))
                if main and cfg.progress:
                    bar.write(f"step {state.step}: val loss {row['val_loss']:.5g}, train loss {row['train_loss']:.5g}")

            if stop.requested(runtime):
                save_last()
                raise TrainingInterrupted(stop.received or signal.SIGTERM, state.step, folder.last)
        bar.close()

        elapsed = time.perf_counter() - start_time
        rows = folder.rows()
        summary = {**summarize(rows, levels), "session_wall_s": round(elapsed, 2),  # validation time included
                   "train_images_per_s": round((state.step - start_step) * cfg.batch_size / elapsed, 1)}
        normalization = train_set.normalization
        if main:
            folder.write_json("summary.json", summary)
            if cfg.figures and rows:
                for level, grid in run_figures(folder.path, rows, model, normalization, cfg.image_size).items():
                    folder.add_image(f"codebook/{level}", grid, state.step)
            print(one_line(cfg, summary, folder.path))
    finally:
        bar.close()
        folder.close()
    return RunResult(folder.path, summary, rows, model, normalization)


def metrics_row(step: int, means: list[float], metrics: dict[str, float], levels: list[str], skipped: int
                ) -> dict[str, float]:
    """One metrics.csv row: the training means since the last row, then the validation metrics, per level."""
    row = {"step": step, "train_loss": means[0], "train_recon_loss": means[1]}
    row.update({k: v for k, v in metrics.items() if k.startswith("val_loss")})
    for i, level in enumerate(levels):
        row[f"train_perplexity_{level}"] = means[2 + i]
        for name in ("val_perplexity", "usage", "topographic_error"):
            row[f"{name}_{level}"] = metrics[f"{name}_{level}"]
    row["skipped_batches"] = skipped
    return row


def one_line(cfg: TrainConfig, summary: dict[str, Any], folder: Path) -> str:
    """The end-of-run summary line."""
    if not summary.get("steps"):
        return f"{cfg.preset} {cfg.quantizer}: no validation yet | {folder}"
    ppl = ", ".join(f"{v:.0f}" for v in summary["final_val_perplexity"].values())
    usage = ", ".join(f"{v:.1%}" for v in summary["final_usage"].values())
    return (f"{cfg.preset} {cfg.quantizer}: {summary['steps']} steps ({summary['train_images_per_s']} img/s) | "
            f"best val loss {summary['best_val_loss']:.5g} at step {summary['best_step']} | "
            f"steps to +10%: {summary['steps_to_10pct']} | perplexity {ppl} | usage {usage} | {folder}")
