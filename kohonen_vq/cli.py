"""The ``kohonen-vq`` command (also ``python -m kohonen_vq``): ``train``, ``demo``, ``sweep`` and ``info``.

User errors (bad settings, missing data, a run folder in use) print one line and exit non-zero; set
KOHONEN_VQ_DEBUG=1 to get the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Sequence

from . import build_info

PROG = "kohonen-vq"
# What a user can fix: bad settings or data, and the file system (a missing file, a full disk, a folder that
# cannot be written). One line, no traceback; KOHONEN_VQ_DEBUG=1 shows it.
USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from .train import config, demo

    parser = argparse.ArgumentParser(prog=PROG, description="Kohonen self-organising-map vector quantisation "
                                                            "(KSOM) for VQ-VAEs: training, demo, build info.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser(
        "train", help="train a VQ-VAE / VQ-VAE-2 (see kohonen-vq train --help)",
        description="Train a VQ-VAE or VQ-VAE-2 with a KSOM, EMA-VQ or gradient-trained codebook.\n"
                    "Settings: the preset, then --config FILE, then the flags given here.\n"
                    "Multi-GPU / multi-node: torchrun --nproc-per-node N -m kohonen_vq.train [flags]",
        epilog=config.presets_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", metavar="FILE", help="JSON (.json) or TOML file of settings, keys as the flags "
                                                         "without dashes (num_codes = 256)")
    train.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                       help="continue the run in the run folder from checkpoints/last.pt (or from CKPT), with the "
                            "settings stored in it; only " + ", ".join(config.flag(n) for n in sorted(config.RESUMABLE))
                            + " may be changed")
    train.add_argument("--overwrite", action="store_true", help="start afresh in a run folder that holds a run")
    config.add_arguments(train)
    train.set_defaults(subparser=train)
    demo.add_arguments(sub.add_parser("demo", help="train EMA-VQ and KSOM side by side on the built-in photographs "
                                                   "and write a report", description=demo.__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    sub.add_parser("sweep", add_help=False,  # main() hands its arguments to kohonen_vq.experiments unparsed
                   help="run a study of the paper (configurations x seeds) and write RESULTS.md, tables and figures "
                        "(see kohonen-vq sweep --help)")
    sub.add_parser("info", help="print what the native library was built with (JSON)")
    return parser


def _train(args: argparse.Namespace) -> None:
    from .train import config, load_checkpoint, train

    given = {k: v for k, v in vars(args).items() if k in config.FIELDS}
    checkpoint = None
    try:  # errors in the settings get the usage line and exit status 2, like argparse's own
        overrides = {**(config.load_config_file(args.config) if args.config else {}), **given}
        if args.resume is None:
            cfg = config.resolve(overrides)
        else:
            run_dir = overrides.get("out") or os.path.join("runs", overrides.get("preset", config.TrainConfig.preset))
            checkpoint = load_checkpoint(args.resume or os.path.join(run_dir, "checkpoints", "last.pt"))
            cfg = config.resume_config(checkpoint["config"], overrides)
    except (ValueError, FileNotFoundError) as e:
        args.subparser.error(str(e))
    train(cfg, checkpoint=checkpoint, overwrite=args.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: sys.argv[1:]); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["info"]:  # before build_parser, which imports the [train] extras (matplotlib, tqdm, tensorboard)
        print(json.dumps(build_info(), indent=2))
        return 0
    if argv[:1] == ["sweep"]:  # its own parser, which also takes the train flags after "--"
        from .experiments.cli import main as sweep

        return sweep(argv[1:], prog=f"{PROG} sweep")
    args = build_parser().parse_args(argv)
    from .train import TrainingInterrupted, demo

    try:
        if args.command == "train":
            _train(args)
        else:
            demo.main(args)
    except TrainingInterrupted as e:
        resume = f"{PROG} train --out {e.checkpoint.parent.parent} --resume"
        print(f"{PROG}: stopped by {signal.Signals(e.signum).name} at step {e.step}; saved {e.checkpoint}. "
              f"Continue with: {resume}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        print(f"{PROG}: aborted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("KOHONEN_VQ_DEBUG") == "1":
            raise
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0

