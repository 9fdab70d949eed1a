"""Mean ± std tables of a sweep, with the paper's definitions (METHOD.md §5) computed by
:func:`kohonen_vq.train.run_folder.summarize` from each run's metrics.csv: the best validation loss, and the
first validation step within +10 % / +20 % of the run's own best.

Every table row names its run folders: relative links in the Markdown, a ``run_folders`` column in the CSV.
Std is the sample standard deviation over the finished runs (n - 1 in the denominator; none for one run).
"""
from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..train.run_folder import Row, read_rows, summarize
from .posthoc import read_topography
from .runner import Run, is_finished
from .studies import Entry, Study


def levels_of(rows: Sequence[Row]) -> list[str]:
    """The latent levels that metrics rows report (``val_perplexity_<level>`` columns)."""
    prefix = "val_perplexity_"
    return [key[len(prefix):] for key in rows[0] if key.startswith(prefix)] if rows else []


@dataclass
class RunRecord:
    """A finished run: its metrics rows, their summary (best loss, steps to +10 % ...) and topography.json."""

    run: Run
    rows: list[Row]
    summary: dict[str, Any]
    topography: dict[str, Any] | None

    @property
    def levels(self) -> list[str]:
        return levels_of(self.rows)

    @property
    def collapsed(self) -> bool:
        """Whether a codebook collapsed: every validation latent of some level went to one single code at the
        last step (the decoder then sees no information from that level)."""
        k = self.run.settings["num_codes"]
        return any(round(usage * k) <= 1 for usage in self.summary["final_usage"].values())


def load_record(run: Run) -> RunRecord | None:
    """``run``'s record, or None while it has not finished."""
    if not is_finished(run.folder, run.settings.get("max_steps")):
        return None
    rows = read_rows(run.folder)
    return RunRecord(run, rows, summarize(rows, levels_of(rows)), read_topography(run.folder))


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of the finite values of a metric over runs."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Stat":
        return cls(tuple(float(v) for v in values if v is not None and math.isfinite(v)))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    def format(self, digits: int) -> str:
        """``mean ± std`` (``mean`` for one run, ``–`` for none)."""
        if not self.n:
            return "–"
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.n > 1 else "")


@dataclass(frozen=True)
class Metric:
    """A table column: ``values`` gives a run's value per latent level (one value for whole-run metrics)."""

    name: str
    header: str
    values: Callable[[RunRecord], list[float | None]]
    scale: float = 1.0
    digits: int = 1


def _per_level(key: str) -> Callable[[RunRecord], list[float | None]]:
    return lambda r: [r.summary[key][level] for level in r.levels]


def _topography(key: str) -> Callable[[RunRecord], list[float | None]]:
    return lambda r: [r.topography["levels"][level][key] if r.topography else None for level in r.levels]


METRICS: tuple[Metric, ...] = (
    Metric("best_val_loss", "val. loss ×1e3", lambda r: [r.summary["best_val_loss"]], 1e3, 1),
    Metric("steps_to_10pct", "steps to +10 %", lambda r: [r.summary["steps_to_10pct"]], 1, 0),
    Metric("steps_to_20pct", "steps to +20 %", lambda r: [r.summary["steps_to_20pct"]], 1, 0),
    Metric("val_perplexity", "perplexity", _per_level("final_val_perplexity"), 1, 1),
    Metric("usage", "usage %", _per_level("final_usage"), 100, 1),
    Metric("topographic_error", "topogr. error", _topography("topographic_error"), 1, 3),
    Metric("decoded_neighbour_ratio", "decoded-nb. ratio", _topography("decoded_neighbour_ratio"), 1, 3),
)
PAPER_COLUMNS = ("loss ×1e3", "+10 % ×1e3 steps", "+20 % ×1e3 steps")


@dataclass
class ConfigResult:
    """One table row: a study entry, its planned runs, the finished ones and a Stat per metric and level."""

    entry: Entry
    runs: list[Run]
    records: list[RunRecord]
    stats: dict[str, list[Stat]]

    @property
    def levels(self) -> list[str]:
        return self.records[0].levels if self.records else []


def aggregate_records(records: Sequence[RunRecord]) -> dict[str, list[Stat]]:
    """A Stat per metric of ``METRICS`` and per level, over ``records`` (values scaled for display)."""
    stats = {}
    for metric in METRICS:
        per_run = [metric.values(r) for r in records]
        width = max((len(v) for v in per_run), default=0)
        stats[metric.name] = [Stat.of([None if v[i] is None else v[i] * metric.scale for v in per_run if i < len(v)])
                              for i in range(width)]
    return stats


def aggregate(study: Study, runs: Sequence[Run], records: dict[Path, RunRecord]) -> list[ConfigResult]:
    """The rows of ``study``'s table from the sweep's ``runs`` and the finished runs' ``records``."""
    results = []
    for entry in study.entries:
        mine = [r for r in runs if r.config == entry.config]
        found = [records[r.folder] for r in mine if r.folder in records]
        results.append(ConfigResult(entry, mine, found, aggregate_records(found)))
    return results


def relative(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to the folder ``base``, with forward slashes (for Markdown links and CSV cells)."""
    return Path(os.path.relpath(path, base)).as_posix()


def _links(result: ConfigResult, base: Path) -> str:
    return " ".join(f"[s{r.run.seed}]({relative(r.run.folder, base)})" for r in result.records)


def _cell(stats: list[Stat], digits: int) -> str:
    return " / ".join(s.format(digits) for s in stats) if stats else "–"


def markdown_table(results: Sequence[ConfigResult], base: str | os.PathLike[str]) -> str:
    """The study's Markdown table; run-folder links relative to the folder ``base`` the file will be in."""
    show_paper = any(r.entry.paper for r in results)
    levels = next((r.levels for r in results if r.records), [])
    per_level = f" ({' / '.join(levels)})" if len(levels) > 1 else ""
    header = ["configuration", "runs", "collapsed",
              *(m.header + (per_level if any(len(r.stats[m.name]) > 1 for r in results) else "") for m in METRICS),
              *(["paper, CIFAR-10"] if show_paper else []), "run folders"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r.entry.config.label, f"{len(r.records)}/{len(r.runs)}", str(sum(x.collapsed for x in r.records)),
                 *(_cell(r.stats[m.name], m.digits) for m in METRICS)]
        if show_paper:  # the loss, then steps in thousands
            cells.append("; ".join([*r.entry.paper[:1], *(f"{v} k" for v in r.entry.paper[1:])]) or "–")
        lines.append("| " + " | ".join([*cells, _links(r, Path(base))]) + " |")
    return "\n".join(lines)


def csv_rows(study: Study, results: Sequence[ConfigResult], base: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One CSV row per configuration: mean, std and n per metric (and level), the paper's numbers, and the
    run folders relative to ``base``, separated by ``;``."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"study": study.name, "config": r.entry.config.name, "label": r.entry.config.label,
                               "runs_finished": len(r.records), "runs_planned": len(r.runs),
                               "runs_collapsed": sum(x.collapsed for x in r.records)}
        levels = r.levels
        for metric in METRICS:
            for i, stat in enumerate(r.stats[metric.name]):
                name = metric.name if len(r.stats[metric.name]) == 1 else f"{metric.name}_{levels[i]}"
                row.update({f"{name}_mean": stat.mean, f"{name}_std": stat.std, f"{name}_n": stat.n})
        row.update({f"paper_{c}": (r.entry.paper[i] if i < len(r.entry.paper) else "")
                    for i, c in enumerate(("loss_x1e3", "steps_to_10pct_x1e3", "steps_to_20pct_x1e3"))})
        row["run_folders"] = ";".join(relative(rec.run.folder, base) for rec in r.records)
        rows.append(row)
    return rows


def run_rows(records: Sequence[RunRecord], base: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One CSV row per finished run: its configuration, seed, metrics (unscaled) and folder."""
    rows = []
    for record in records:
        row: dict[str, Any] = {"config": record.run.config.name, "seed": record.run.seed,
                               "collapsed": record.collapsed}
        for metric in METRICS:
            values = metric.values(record)
            for level, value in zip(record.levels if len(values) > 1 else [""], values):
                row[metric.name + (f"_{level}" if level else "")] = value
        row["run_folder"] = relative(record.run.folder, base)
        rows.append(row)
    return rows


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as CSV (the union of their keys as columns, in first-seen order)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
