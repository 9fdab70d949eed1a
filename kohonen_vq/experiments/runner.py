"""Runs a sweep: every configuration x seed as its own ``python -m kohonen_vq train`` process, ``jobs`` at a
time, then the run's topography.json (:mod:`.posthoc`).

Resumable: run folders are named by configuration and seed (``OUT/runs/<config>/seed<S>``), and before
starting one the runner looks at what the folder holds:

- a finished run (summary.json written at the end of training, at the requested step count): skipped;
- a partial run (a checkpoint, but interrupted, crashed or asked for more steps now): ``train --resume``;
- nothing, or a run that died before its first checkpoint: trained from the start.

A folder holding a run with other settings is an error, never overwritten.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..train.config import flag, resolve
from ..train.run_folder import last_checkpoint
from .posthoc import read_topography, write_topography
from .studies import Config, Study

TRAIN_LOG = "train.log"
SWEEP_LOG = "sweep_log.jsonl"
# Settings that may differ between a run folder and the sweep's request for it: where and how it runs, and
# max_steps (a longer request resumes the run).
NOT_IDENTITY = frozenset({"out", "device", "workers", "threads", "progress", "figures", "data_root", "max_steps"})


@dataclass(frozen=True)
class Run:
    """One training run of a sweep: ``settings`` are every ``kohonen-vq train`` setting it passes."""

    config: Config
    seed: int
    folder: Path
    settings: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.config.name}/seed{self.seed}"


@dataclass(frozen=True)
class Outcome:
    """What happened to a run: ``status`` is skipped, trained, resumed or failed."""

    run: Run
    status: str
    seconds: float
    message: str = ""


def run_folder(out: str | os.PathLike[str], config: Config, seed: int) -> Path:
    """Where a configuration's run with ``seed`` lives in the sweep folder ``out``."""
    return Path(out) / "runs" / config.name / f"seed{seed}"


def plan(studies: Iterable[Study], seeds: int, base: dict[str, Any], out: str | os.PathLike[str]) -> list[Run]:
    """Every run of ``studies`` (configurations shared by several studies once), settings validated.

    ``base`` holds the settings shared by all runs (preset, steps, model size ...); it must not set what the
    configurations or the runner set.
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    runs: dict[Path, Run] = {}
    for study in studies:
        for config in study.configs:
            clash = sorted(set(base) & {*config.settings(), "seed", "out"})
            if clash:
                raise ValueError(f"{', '.join(flag(n) for n in clash)} is set by the sweep per run; do not pass it")
            for seed in range(seeds):
                folder = run_folder(out, config, seed)
                if folder not in runs:
                    settings = {**base, **config.settings(), "seed": seed, "out": str(folder)}
                    resolve(settings)  # a setting the trainer rejects fails here, before any run starts
                    runs[folder] = Run(config, seed, folder, settings)
    return list(runs.values())


def to_flags(settings: dict[str, Any]) -> list[str]:
    """The ``kohonen-vq train`` command-line flags of ``settings`` (field name -> value; None is left out)."""
    argv: list[str] = []
    for name, value in settings.items():
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + flag(name)[2:])
        elif isinstance(value, (tuple, list)):
            argv += [flag(name), "x".join(map(str, value))]
        elif value is not None:
            argv += [flag(name), str(value)]
    return argv


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def is_finished(folder: str | os.PathLike[str], max_steps: int | None = None) -> bool:
    """Whether ``folder`` holds a run that trained to its end (to ``max_steps`` if given): the trainer adds
    ``session_wall_s`` to summary.json only after the last step."""
    summary = _read_json(Path(folder) / "summary.json")
    config = _read_json(Path(folder) / "config.json")
    if summary is None or config is None or "session_wall_s" not in summary:
        return False
    return summary["steps"] == (config["max_steps"] if max_steps is None else max_steps)


def action(run: Run) -> str:
    """``"skip"``, ``"resume"`` or ``"start"`` for ``run`` given what its folder holds (see the module
    docstring); ValueError if the folder holds a run with other settings."""
    if not last_checkpoint(run.folder).exists():
        return "start"
    want = resolve(run.settings).to_dict()
    saved = _read_json(run.folder / "config.json") or {}  # written before the first checkpoint
    differ = sorted(name for name in want if name not in NOT_IDENTITY and saved.get(name) != want[name])
    if differ:
        raise ValueError(f"{run.folder} holds a run with other settings ("
                         + ", ".join(f"{flag(n)} {saved.get(n)!r} there, {want[n]!r} here" for n in differ)
                         + "): pick another --out or delete that folder")
    if saved["max_steps"] > want["max_steps"]:
        raise ValueError(f"{run.folder} holds a run of {saved['max_steps']} steps, more than --steps "
                         f"{want['max_steps']}: pick another --out or ask for at least as many steps")
    return "skip" if is_finished(run.folder, want["max_steps"]) else "resume"


def _needs_topography(folder: Path) -> bool:
    topography, summary = read_topography(folder), _read_json(folder / "summary.json")
    return topography is None or summary is None or topography["step"] != summary["steps"]


def execute(run: Run, log: Callable[[str], None]) -> Outcome:
    """Trains (or resumes, or skips) ``run`` in a subprocess whose output goes to its train.log, then writes
    its topography.json if missing or stale."""
    start = time.perf_counter()
    todo = action(run)
    if todo != "skip":
        run.folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "kohonen_vq", "train", *to_flags(run.settings),
                *(["--resume"] if todo == "resume" else [])]
        log(f"{todo} {run.key}")
        env = {**os.environ, "OMP_NUM_THREADS": str(run.settings.get("threads") or 1)}
        with open(run.folder / TRAIN_LOG, "a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            return Outcome(run, "failed", time.perf_counter() - start,
                           f"exit status {code}; see {run.folder / TRAIN_LOG}")
    if _needs_topography(run.folder):
        write_topography(run.folder)
    seconds = time.perf_counter() - start
    summary = _read_json(run.folder / "summary.json") or {}
    message = f"best val loss {summary.get('best_val_loss', float('nan')):.5g}, +10 % at step " \
              f"{summary.get('steps_to_10pct')}"
    return Outcome(run, {"skip": "skipped", "start": "trained", "resume": "resumed"}[todo], seconds, message)


def run_sweep(runs: Sequence[Run], jobs: int = 1, threads: int = 1, log: Callable[[str], None] = print
              ) -> list[Outcome]:
    """Executes ``runs``, ``jobs`` at a time; the topography measurements run in this process on ``threads``
    CPU threads (the training processes on their own ``threads`` setting). A failing run is reported and the
    others go on. Ctrl-C reaches the training processes too: they save a checkpoint, and
    the next sweep resumes them."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    for run in runs:  # a folder holding another run stops the sweep before anything starts
        action(run)
    torch.set_num_threads(threads)  # the topography measurements run in this process, beside the trainings
    lock = threading.Lock()
    done: list[Outcome] = []

    def say(text: str) -> None:
        with lock:
            log(text)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(execute, run, say): run for run in runs}
        try:
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as e:  # noqa: BLE001 - one broken run must not stop the sweep
                    outcome = Outcome(futures[future], "failed", 0.0, f"{type(e).__name__}: {e}")
                done.append(outcome)
                say(f"[{len(done)}/{len(runs)}] {outcome.status} {outcome.run.key} ({outcome.seconds:.0f} s)"
                    + (f": {outcome.message}" if outcome.message else ""))
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return done


def append_sweep_log(out: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Appends one invocation's record (command, wall time, counts) to ``out``/sweep_log.jsonl."""
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / SWEEP_LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_sweep_log(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record :func:`append_sweep_log` wrote in ``out``, oldest first."""
    path = Path(out) / SWEEP_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
