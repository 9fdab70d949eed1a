"""RESULTS.md of a sweep: its setup and wall time, the paper's claims (METHOD.md §7) checked against the
measured numbers, the tables of every study (also as tables/<study>.md and .csv), and the figures."""
from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import torch

from ..train.config import resolve
from .aggregate import (METRICS, ConfigResult, RunRecord, Stat, aggregate, aggregate_records, csv_rows,
                        markdown_table, relative, run_rows, write_csv)
from .figures import write_figures
from .runner import Run, read_sweep_log
from .studies import EMA_TUNED, KSOM_GAUSSIAN, KSOM_HARD, PAPER_K, Config, Study, ema, ksom

SIMILAR = 0.05  # "similar": means within 5 % of each other


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison of two configurations on one metric: ``a`` is claimed ``better``
    than (``"better"``), at least as good as (``"no worse"``) or as good as (``"similar"``) ``b``."""

    text: str
    paper: str
    a: Config
    b: Config
    metric: str
    kind: str = "better"
    higher_is_better: bool = False


CLAIMS = (
    Claim("Table 1: EMA-VQ with N0 = 0 and no update-0 is worse than well-configured EMA-VQ", "51.9 vs 148.8",
          EMA_TUNED, ema(0, False), "best_val_loss"),
    Claim("Table 1: EMA-VQ with N0 = 1 but no update-0 is worse than well-configured EMA-VQ", "51.9 vs 68.3",
          EMA_TUNED, ema(1, False), "best_val_loss"),
    Claim("Table 1: with update-0, N0 = 0 is about as good as N0 = 1", "52.1 vs 51.9", ema(0, True), EMA_TUNED,
          "best_val_loss", "similar"),
    *(Claim(f"Table 3: KSOM is at least as good as EMA-VQ with N0 = {n0}, {'update-0' if upd else 'no update-0'}",
            paper, ksom(n0=n0, update_empty=upd), ema(n0, upd), "best_val_loss", "no worse")
      for n0, upd, paper in ((0, False, "51.8 vs 148.8"), (1, False, "52.1 vs 68.3"), (0, True, "51.9 vs 52.1"))),
    Claim("Table 3: KSOM with N0 = 0 and no update-0 matches the recommended KSOM", "51.8 vs 52.1",
          ksom(n0=0, update_empty=False), KSOM_HARD, "best_val_loss", "similar"),
    *(Claim(f"Table 3: KSOM reaches +10 % at least as early as EMA-VQ with N0 = {n0}, "
            f"{'update-0' if upd else 'no update-0'}", paper, ksom(n0=n0, update_empty=upd), ema(n0, upd),
            "steps_to_10pct", "no worse")
      for n0, upd, paper in ((0, False, "5.2k vs 13.5k"), (1, False, "4.8k vs 16.3k"), (0, True, "4.8k vs 6.8k"))),
    Claim("Table 2: hard KSOM and well-configured EMA-VQ reach a similar loss", "52.1 vs 51.9", KSOM_HARD,
          EMA_TUNED, "best_val_loss", "similar"),
    Claim("Table 2: Gaussian KSOM and well-configured EMA-VQ reach a similar loss", "51.8 vs 51.9", KSOM_GAUSSIAN,
          EMA_TUNED, "best_val_loss", "similar"),
    Claim("Table 2: hard KSOM is faster early in training (steps to +20 %)", "2.5k vs 3.7k", KSOM_HARD, EMA_TUNED,
          "steps_to_20pct"),
    Claim("Table 2: hard KSOM reaches +10 % at least as early as EMA-VQ", "5.2k vs 5.4k", KSOM_HARD, EMA_TUNED,
          "steps_to_10pct", "no worse"),
    Claim("App. C.1: KSOM uses more of the codebook (validation perplexity)", "higher (Fig. 6)", KSOM_HARD, EMA_TUNED,
          "val_perplexity", higher_is_better=True),
    Claim("Sec. 3.3: KSOM orders the codes on the grid (topographic error)", "(qualitative)", KSOM_HARD, EMA_TUNED,
          "topographic_error"),
    Claim("Sec. 3.3: grid neighbours decode to similar images (decoded-neighbour ratio)", "(qualitative, Fig. 2)",
          KSOM_HARD, EMA_TUNED, "decoded_neighbour_ratio"),
    Claim("Table 4: a 1D grid does as well as a 2D grid (hard)", "52.0 vs 52.0", ksom("hard", 1), KSOM_HARD,
          "best_val_loss", "similar"),
    Claim("Table 4: tau = 1 does as well as tau = 0.01 (hard)", "52.1 vs 52.1", ksom("hard", 2, 1.0),
          ksom("hard", 2, 0.01), "best_val_loss", "similar"),
    Claim("Table 5: EMA-VQ beats the gradient-trained codebook", "51.9 vs 69.4",
          EMA_TUNED, Config("gradient-trained codebook", "gradient"), "best_val_loss"),
    Claim("Table 5: KSOM converges faster than SOM-VAE (steps to +10 %)", "5.2k vs 7.3k", KSOM_HARD,
          Config("gradient SOM (SOM-VAE), 2D", "gradient-som"), "steps_to_10pct"),
)


def verdict(claim: Claim, a: Stat, b: Stat) -> str:
    """The verdict on ``claim`` given its two configurations' values; a gap within the larger of the two seed
    spreads (sample std) settles nothing."""
    noise = max((s.std for s in (a, b) if not math.isnan(s.std)), default=0.0)
    gap = (a.mean - b.mean) if claim.higher_is_better else (b.mean - a.mean)  # > 0: a is better
    if claim.kind == "similar":
        if abs(gap) <= SIMILAR * max(abs(a.mean), abs(b.mean)):
            return "reproduced"
        return "within noise" if abs(gap) <= noise else f"not reproduced ({'a' if gap > 0 else 'b'} better)"
    if gap > noise or (claim.kind == "no worse" and gap >= 0):
        return "reproduced"
    return "within noise" if gap >= -noise else "not reproduced (b better)"


def still_improving(records: Sequence[RunRecord]) -> str:
    """How many runs had their best validation loss in the last 10 % of their steps, as a sentence."""
    late = sum(r.summary["best_step"] is not None and r.summary["best_step"] > 0.9 * r.summary["steps"]
               for r in records)
    return (f"{late} of {len(records)} runs had their best validation loss in the last 10 % of their steps: still "
            f"improving, their steps to +10 % / +20 % measure mostly the length of the run, not the speed of "
            f"convergence (the paper's curves flatten well before 30 000 steps).")


def collapse_counts(records: Sequence[RunRecord]) -> str:
    """"<quantiser> c/n" for each quantiser: how many of its runs ended with a collapsed codebook."""
    counts: dict[str, list[int]] = {}
    for record in records:
        seen = counts.setdefault(record.run.config.quantizer, [0, 0])
        seen[0] += record.collapsed
        seen[1] += 1
    return ", ".join(f"{quantizer} {c}/{n}" for quantizer, (c, n) in counts.items())


def claims_table(records: dict[str, list[RunRecord]]) -> str:
    """The Markdown table of the claims whose two configurations were both run (a per-level metric: its first
    level)."""
    digits = {m.name: m.digits for m in METRICS}
    lines = ["| claim | paper (CIFAR-10) | here: a vs b | verdict |", "|---|---|---|---|"]
    for claim in CLAIMS:
        if not (records.get(claim.a.name) and records.get(claim.b.name)):
            continue
        a, b = (aggregate_records(records[c.name])[claim.metric][0] for c in (claim.a, claim.b))
        here = f"{a.format(digits[claim.metric])} vs {b.format(digits[claim.metric])}"
        lines.append(f"| {claim.text} | {claim.paper} | {here} | {verdict(claim, a, b)} |")
    return "\n".join(lines) if len(lines) > 2 else "(none of the claims' configurations were run)"


def _setup(runs: Sequence[Run], seeds: int, jobs: int) -> str:
    cfg = resolve(runs[0].settings)
    data = f"`{cfg.dataset}`" + (f" from `{cfg.data_root}`" if cfg.data_root else " (built-in photographs)")
    return "\n".join([
        f"- data: {data}, {cfg.image_size}×{cfg.image_size} images, validation on "
        f"{'all' if cfg.val_limit is None else f'the first {cfg.val_limit}'} validation images",
        f"- model: {cfg.arch}, hidden {cfg.hidden}, residual channels {cfg.res_channels}, {cfg.num_res_blocks} "
        f"residual blocks, embedding dim {cfg.embedding_dim}; K = {PAPER_K} codes unless the configuration says "
        f"otherwise",
        f"- training: {cfg.max_steps} steps of batch {cfg.batch_size}, AdamW lr {cfg.lr:g}, gradient clip "
        f"{cfg.grad_clip:g}, validation every {cfg.eval_every} steps, "
        f"{f'seeds 0–{seeds - 1}' if seeds > 1 else 'seed 0'}, "
        f"{cfg.threads or 'default'} CPU thread(s) per run, {jobs} run(s) at a time",
        f"- machine: {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
        f"Python {platform.python_version()}",
    ])


def _wall_times(out: Path) -> str:
    """A line per invocation of the sweep that trained something; the others only reused finished runs."""
    lines, reused = [], 0
    for entry in read_sweep_log(out):
        if entry["counts"]["skipped"] == sum(entry["counts"].values()):
            reused += 1
            continue
        counts = ", ".join(f"{n} {status}" for status, n in entry["counts"].items() if n)
        lines.append(f"- {entry['started']}: `{entry['command']}`: **{entry['wall_s'] / 60:.1f} min** wall "
                     f"({counts})")
    if reused:
        lines.append(f"- and {reused} invocation(s) that only reused finished runs (regenerating this report)")
    return "\n".join(lines) or "- (no sweep log)"


def write_report(studies: Sequence[Study], runs: Sequence[Run], records: dict[Path, RunRecord], out: Path,
                 report: Path, seeds: int, jobs: int, command: str) -> Path:
    """Writes report/RESULTS.md, report/tables/ and report/figures/; returns the path of RESULTS.md."""
    tables, figures = report / "tables", report / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    by_config: dict[str, list[RunRecord]] = {}
    for record in records.values():
        by_config.setdefault(record.run.config.name, []).append(record)
    sections = []
    for study in studies:
        results: list[ConfigResult] = aggregate(study, runs, records)
        (tables / f"{study.name}.md").write_text(f"# {study.title}\n\n{study.about}\n\n"
                                                 f"{markdown_table(results, tables)}\n")
        write_csv(tables / f"{study.name}.csv", csv_rows(study, results, tables))
        sections.append(f"### {study.title}\n\n{study.about} CSV: [tables/{study.name}.csv](tables/{study.name}.csv)"
                        f"\n\n{markdown_table(results, report)}\n")
    write_csv(tables / "runs.csv", run_rows(sorted(records.values(), key=lambda r: r.run.key), tables))
    written = write_figures(by_config, figures)
    for stale in set(figures.glob("*.png")) - set(written.values()):  # from an earlier report: not this sweep's
        stale.unlink()
    figure_lines = [f"**{caption}**\n\n![{caption}]({relative(path, report)})\n"
                    for caption, path in written.items()]
    run_link = relative(out, report)
    text = f"""# Experiments: KSOM against EMA-VQ and gradient-trained codebooks ({', '.join(s.name for s in studies)})

Generated by `{command}` on {datetime.now().strftime('%Y-%m-%d %H:%M')}; rerun it to regenerate this file, the
tables and the figures (finished runs are reused). The run folders (metrics.csv,
summary.json, topography.json, checkpoints, train.log) are under [`{run_link}/runs/`]({run_link}/runs/), which the
command produces (`runs/` is not in git). {len(records)} of {len(runs)} planned runs finished.

## Setup

{_setup(runs, seeds, jobs)}

Wall time of the sweep (training and topography.json of every run; the report adds seconds):

{_wall_times(out)}

## The paper's claims, checked here

Each claim compares configuration a with b on the mean over seeds, against the larger of their two seed
standard deviations (sd). *reproduced*: a is better by more than the sd ("at least as good": a is not worse;
"similar": a and b are within {SIMILAR:.0%} of each other); *within noise*: not reproduced, but the difference
is within the sd; *not reproduced*: the difference is beyond the sd, the other way. With {seeds} seed(s) the
sd is a rough guide, and a run whose codebook collapsed to one code (the *collapsed* column) dominates a mean.
Collapsed runs, all studies: {collapse_counts(list(records.values()))}. {still_improving(list(records.values()))}

The paper's numbers are CIFAR-10 at 30 000 steps of batch 256 with 10 seeds: values compare only with
a sweep of that setup, directions with any.

{claims_table(by_config)}

## Tables

Columns: best validation loss (minimum over the validation points, per-element MSE in the normalised pixel
space, ×1e3); the first validation step within +10 % / +20 % of the run's own best (METHOD.md §5); at the last
step: validation perplexity, share of codes used on the validation set, topographic error (share of
validation latents whose two nearest codes are not grid neighbours), decoded-neighbour ratio (mean pixel
distance between the decoded constant-code images of grid-adjacent codes over that of random code pairs:
below 1 = an ordered map). Mean ± sample std over the finished seeds (*runs* = finished/planned; *collapsed* =
runs whose validation latents all went to a single code at the end). EMA-VQ and
the plain gradient codebook have no grid: their codes are laid on the same grid only to measure it.

{chr(10).join(sections)}
## Figures

{chr(10).join(figure_lines) or '(no figure: their runs are missing)'}
"""
    path = report / "RESULTS.md"
    path.write_text(text)
    return path
