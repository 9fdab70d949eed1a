"""``python -m kohonen_vq.experiments STUDY [flags] [-- TRAIN FLAGS]`` (also ``kohonen-vq sweep``): runs a
study's configurations x seeds, then writes RESULTS.md, the tables and the figures."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from ..cli import USER_ERRORS
from ..train import config
from .aggregate import load_record
from .report import write_report
from .runner import append_sweep_log, plan, run_sweep
from .studies import ALL, STUDIES, select

PROG = "python -m kohonen_vq.experiments"
# --quick: a model and a run small enough for a test (seconds per run).
QUICK = dict(hidden=16, res_channels=8, num_res_blocks=1, embedding_dim=8, batch_size=8, max_steps=4, eval_every=2,
             val_limit=64, figures=False)
# Train settings the sweep's own flags set: passing them after "--" would be ambiguous.
OWN_FLAGS = {"preset": "--preset", "data_root": "--data-root", "max_steps": "--steps", "eval_every": "--eval-every",
             "batch_size": "--batch-size", "threads": "--threads", "seed": "--seeds", "out": "--out",
             "progress": None}


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The sweep's flags (the train flags after ``--`` are parsed by :func:`train_overrides`)."""
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{prog} STUDY [flags] [-- TRAIN FLAGS]",
        description="Runs the configurations of a study (the paper's Tables 1-5, or ksize) for several seeds, each as "
                    "its own training process, resumably, then writes RESULTS.md, Markdown + CSV tables and the "
                    "figures. TRAIN FLAGS after -- go to every run (e.g. -- --hidden 32 --embedding-dim 16).",
        epilog="studies:\n" + "\n".join(f"  {name:<7} {s.title}" for name, s in STUDIES.items())
               + f"\n  {'all':<7} {', '.join(ALL)}")
    parser.add_argument("study", choices=[*STUDIES, "all"], metavar="STUDY", help="a study, or all")
    parser.add_argument("--preset", default="samples-vqvae", choices=tuple(config.PRESETS),
                        help="training preset of every run [default: samples-vqvae]")
    parser.add_argument("--data-root", metavar="DIR", help="dataset folder (cifar10, imagenet, faces)")
    parser.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0..N-1 per configuration [default: 3]")
    parser.add_argument("--steps", type=int, metavar="N", help="training steps per run [default: the preset's, 30000]")
    parser.add_argument("--eval-every", type=int, metavar="N", help="validate every N steps [default: steps / 30]")
    parser.add_argument("--batch-size", type=int, metavar="B", help="batch size [default: the preset's]")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at a time [default: 1]")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads per run [default: 1]")
    parser.add_argument("--out", default="runs/experiments", metavar="DIR",
                        help="sweep folder: run folders in DIR/runs [default: runs/experiments]")
    parser.add_argument("--report", metavar="DIR", help="where RESULTS.md, tables/ and figures/ go [default: --out]")
    parser.add_argument("--quick", action="store_true",
                        help="tiny model and run (" + ", ".join(f"{k}={v}" for k, v in QUICK.items())
                             + "), for tests; flags given explicitly win")
    return parser


def train_overrides(flags: Sequence[str], prog: str) -> dict[str, Any]:
    """The train settings given after ``--`` (field name -> value), checked like ``kohonen-vq train`` does."""
    parser = argparse.ArgumentParser(prog=f"{prog} ... --", add_help=False)
    config.add_arguments(parser)
    given = vars(parser.parse_args(list(flags)))
    for name in given:
        if name in OWN_FLAGS:
            raise ValueError(f"{config.flag(name)} after -- is set by the sweep"
                             + (f": use its {OWN_FLAGS[name]} flag" if OWN_FLAGS[name] else ""))
    return given


def base_settings(args: argparse.Namespace, train_flags: Sequence[str], prog: str) -> dict[str, Any]:
    """The train settings every run of the sweep shares."""
    for name in ("seeds", "jobs", "threads", "steps", "eval_every", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    base: dict[str, Any] = {"preset": args.preset, **(QUICK if args.quick else {})}
    if args.data_root is not None:
        base["data_root"] = args.data_root
    if args.batch_size is not None:
        base["batch_size"] = args.batch_size
    base["max_steps"] = args.steps or base.get("max_steps") or config.TrainConfig.max_steps
    # As the paper's 1000 of 30 000 steps: the curves and the steps to +10 % get 30 points.
    base["eval_every"] = args.eval_every or base.get("eval_every") or max(1, base["max_steps"] // 30)
    base.update(threads=args.threads, progress=False)
    base.update(train_overrides(train_flags, prog))
    return base


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Runs the sweep command line ``argv``; returns the exit status (1 if a run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, train_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser(prog).parse_args(ours)
    command = f"{prog} {shlex.join(argv)}"
    try:
        studies = select(args.study)
        runs = plan(studies, args.seeds, base_settings(args, train_flags, prog), args.out)
        print(f"{len(runs)} runs ({', '.join(s.name for s in studies)}, {args.seeds} seed(s)), {args.jobs} at a time; "
              f"run folders in {Path(args.out) / 'runs'}", flush=True)
        started, start = datetime.now(), time.perf_counter()
        outcomes = run_sweep(runs, args.jobs, args.threads, log=lambda line: print(line, flush=True))
        wall = time.perf_counter() - start
        counts = {status: sum(o.status == status for o in outcomes) for status in ("trained", "resumed", "skipped",
                                                                                     "failed")}
        append_sweep_log(args.out, {"started": started.strftime("%Y-%m-%d %H:%M"), "command": command,
                                    "wall_s": round(wall, 1), "counts": counts, "jobs": args.jobs})
        records = {run.folder: record for run in runs if (record := load_record(run)) is not None}
        path = write_report(studies, runs, records, Path(args.out), Path(args.report or args.out), args.seeds,
                            args.jobs, command)
    except USER_ERRORS as e:
        if os.environ.get("KOHONEN_VQ_DEBUG") == "1":
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the runs saved checkpoints: run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"{wall:.0f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; report in {path}")
    for outcome in outcomes:
        if outcome.status == "failed":
            print(f"failed: {outcome.run.key}: {outcome.message}", file=sys.stderr)
    return 1 if counts["failed"] else 0
