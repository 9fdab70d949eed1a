"""kohonen-vq demo: the main job in minutes on a CPU.

Trains three VQ-VAEs (METHOD.md §4, K = 512, D = 64) on 32x32 patches of the photographs bundled with
scikit-image, with the same seed (same initialisation, same batch order), differing only in the codebook
learner:

  ema-common  EMA-VQ as commonly implemented: N0 = 0, codes without vectors left as they are
  ema-tuned   EMA-VQ well configured: N0 = 1, every code's EMAs decay every step (update-0)
  ksom        KSOM: 2D 32x16 grid, hard neighbourhood, shrink 0.1

then writes REPORT.md with a table like the paper's Table 3 and PNG figures (validation and perplexity
curves, decoded codebook grids) into the output folder, next to each model's own run folder.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .config import resolve
from .figures import codebook_grid, plot_curves, plot_images
from .trainer import RunResult, train

# Measured on the 2-core development machine while it was shared with other work (docs/training.md): a step of
# batch 64 takes 0.2 s on one idle core and up to 0.4 s on a busy machine, so the three runs take 3-6 minutes.
# One thread by default: at this model size a second intra-op thread gains at most 1.6x on two idle cores but
# made steps 4-6x slower whenever other processes wanted the cores (its threads wait for each other).
STEPS, BATCH_SIZE, EVAL_EVERY, THREADS = 300, 64, 30, 1

RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "ema-common": ("EMA-VQ, N0 = 0, no update-0 (common)", dict(quantizer="ema", init_count=0.0, update_empty=False)),
    "ema-tuned": ("EMA-VQ, N0 = 1, update-0 (well configured)", dict(quantizer="ema", init_count=1.0,
                                                                     update_empty=True)),
    "ksom": ("KSOM, 2D hard, shrink 0.1", dict(quantizer="ksom", grid=(32, 16), neighbourhood="hard", shrink=0.1,
                                              init_count=1.0, update_empty=True)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's flags."""
    parser.add_argument("--steps", type=int, default=STEPS, metavar="N", help=f"training steps per model [default: {STEPS}]")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="B", help=f"batch size [default: {BATCH_SIZE}]")
    parser.add_argument("--eval-every", type=int, default=EVAL_EVERY, metavar="N",
                        help=f"validate every N steps [default: {EVAL_EVERY}]")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed shared by the three models [default: 0]")
    parser.add_argument("--threads", type=int, default=THREADS, metavar="N",
                        help=f"CPU threads (torch intra-op) [default: {THREADS}, robust on a shared machine]")
    parser.add_argument("--out", default=os.path.join("runs", "demo"), metavar="DIR", help="report folder [default: runs/demo]")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show progress bars [default: on]")


def run_demo(steps: int = STEPS, batch_size: int = BATCH_SIZE, eval_every: int = EVAL_EVERY, seed: int = 0,
             out: str | os.PathLike[str] = os.path.join("runs", "demo"), progress: bool = True,
             threads: int | None = THREADS) -> Path:
    """Trains the three models and writes the report; returns the path of REPORT.md."""
    out = Path(out)
    results: dict[str, RunResult] = {}
    seconds: dict[str, float] = {}
    for name, (label, settings) in RUNS.items():
        cfg = resolve({"preset": "samples-vqvae", "max_steps": steps, "batch_size": batch_size,
                       "eval_every": eval_every, "seed": seed, "out": str(out / name), "progress": progress,
                       "threads": threads, **settings})
        print(f"[{len(results) + 1}/{len(RUNS)}] {label}")
        start = time.perf_counter()
        results[name] = train(cfg, overwrite=True)
        seconds[name] = time.perf_counter() - start
    return write_report(out, results, seconds, dict(steps=steps, batch_size=batch_size, eval_every=eval_every,
                                                    seed=seed, threads=threads or torch.get_num_threads()))


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def write_report(out: Path, results: dict[str, RunResult], seconds: dict[str, float], settings: dict[str, int]
                 ) -> Path:
    """REPORT.md and its figures (val_loss.png, perplexity.png, codebooks.png) in ``out``."""
    labels = {name: RUNS[name][0] for name in results}
    series = {name: [r["step"] for r in res.rows] for name, res in results.items()}
    plot_curves({labels[n]: (series[n], [r["val_loss"] for r in res.rows]) for n, res in results.items()},
                out / "val_loss.png", "Validation reconstruction loss", "MSE (normalised pixels)", log_y=True)
    plot_curves({labels[n]: (series[n], [r["train_perplexity_latent"] for r in res.rows])
                 for n, res in results.items()}, out / "perplexity.png", "Codebook perplexity (training batches)",
                "perplexity")
    plot_images({labels[n]: codebook_grid(res.model, "latent", res.normalization, 32) for n, res in results.items()},
                out / "codebooks.png", "Decoded codebooks at their grid positions (32x16)")

    header = ("| model | best val. loss (×1e3) | steps to +10 % | steps to +20 % | final perplexity | "
              "codebook usage | topographic error | time (s) |\n|---|---|---|---|---|---|---|---|")
    lines = []
    for name, res in results.items():
        s = res.summary
        lines.append(f"| {labels[name]} | {_fmt(s['best_val_loss'] * 1e3, '.1f')} | {_fmt(s['steps_to_10pct'], 'd')} | "
                     f"{_fmt(s['steps_to_20pct'], 'd')} | {s['final_val_perplexity']['latent']:.1f} | "
                     f"{s['final_usage']['latent']:.1%} | {s['final_topographic_error']['latent']:.3f} | "
                     f"{seconds[name]:.0f} |")
    table = "\n".join([header, *lines])
    print(table)
    total = sum(seconds.values())
    report = f"""# kohonen-vq demo: EMA-VQ and KSOM codebooks in a VQ-VAE

Three VQ-VAEs (the CIFAR-10 architecture of METHOD.md §4: 8×8 latent, K = 512 codes of size 64) trained on
32×32 patches of the photographs bundled with scikit-image (`samples` dataset; validation patches come from
image regions no training patch overlaps). Same seed ({settings['seed']}): same initial weights and codebook,
same batch order. AdamW, lr 1e-3, weight decay 0, gradient clipping 1.0, batch {settings['batch_size']},
{settings['steps']} steps, validation every {settings['eval_every']} steps over the whole validation split
(eval mode, per-element MSE in the normalised pixel space).
Wall time {total:.0f} s on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()},
torch {torch.__version__}, {settings['threads']} thread(s)). *time* includes validation and figures.

{table}

- *best val. loss*: the minimum over the validation points; *steps to +10 % / +20 %*: the first validation step
  whose loss is within 10 % / 20 % of the run's own best (METHOD.md §5).
- *final perplexity* and *codebook usage*: over all validation latents at the last step.
- *topographic error*: share of validation latents whose two nearest codes are not grid neighbours (0 = ordered
  map). EMA-VQ has no grid; its codes are laid out on the same 32×16 grid only to compare.

![validation loss](val_loss.png)

![perplexity](perplexity.png)

![codebooks](codebooks.png)

For comparison, the paper's Table 3 (CIFAR-10, 30 000 steps, loss ×1e3, steps ×1e3): EMA-VQ with N0 = 0 and no
update-0 148.8 ± 11.0 (13.5 ± 0.7 k steps to +10 %); well-configured EMA-VQ 51.9 ± 0.2 (5.4 ± 0.5 k); KSOM
51.8–52.1 (4.8–5.2 k). This demo is a few hundred steps on a small dataset, so only the direction of the
differences is meaningful, not their size. Each model's own run folder (`{'/`, `'.join(results)}/`) holds its
metrics.csv, summary.json, TensorBoard events, checkpoints and figures.
"""
    path = out / "REPORT.md"
    path.write_text(report)
    print(f"demo: {total:.0f} s; report in {path}")
    return path


def main(args: argparse.Namespace) -> None:
    """``kohonen-vq demo``."""
    for name in ("steps", "batch_size", "eval_every", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    run_demo(args.steps, args.batch_size, args.eval_every, args.seed, args.out, args.progress, args.threads)
