"""Training settings: one dataclass, the paper's presets (METHOD.md §5), config files and the argparse flags.

Precedence, lowest first: the dataclass defaults, the preset, a ``--config`` file (JSON or TOML), the
command line. Every field of :class:`TrainConfig` is a flag (``num_codes`` -> ``--num-codes``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .. import ops
from ..data import DATASETS
from ..grid import resolve_grid
from ..models import ARCHITECTURES, QUANTIZERS

Grid = tuple[int, ...]


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Every setting of a training run; ``config.json`` in the run folder holds the resolved values."""

    preset: str = _opt("samples-vqvae", "preset the other settings start from")
    # data
    dataset: str = _opt("samples", "dataset", choices=DATASETS)
    data_root: str | None = _opt(None, "dataset folder (cifar10: holds cifar-10-batches-py; imagenet: train/ and "
                                       "val/; faces: celeba_hq/ and afhq/); samples needs none", metavar="DIR")
    image_size: int = _opt(32, "image side: patch size for samples, resize for imagenet/faces, 32 for cifar10",
                           metavar="PX")
    val_limit: int | None = _opt(None, "validate on the first N validation images only [default: all]", metavar="N")
    # model
    arch: str = _opt("vqvae", "model: vqvae (METHOD.md §4, CIFAR-10) or vqvae2 (two levels)",
                     choices=tuple(ARCHITECTURES))
    hidden: int = _opt(128, "encoder/decoder channels", metavar="C")
    res_channels: int = _opt(32, "channels inside a residual block", metavar="C")
    num_res_blocks: int = _opt(2, "residual blocks per stack", metavar="N")
    embedding_dim: int = _opt(64, "latent vector size D", metavar="D")
    # quantiser
    quantizer: str = _opt("ksom", "codebook learner", choices=tuple(QUANTIZERS))
    num_codes: int = _opt(512, "codebook size K (per level)", metavar="K")
    grid: Grid | None = _opt(None, "grid of the codes, e.g. 32x16 or 512 (1D) [default: the squarest 2D grid]",
                             metavar="AxB")
    neighbourhood: str = _opt("hard", "KSOM neighbourhood (none = EMA-VQ)", choices=ops.NEIGHBOURHOODS)
    shrink: float = _opt(0.1, "KSOM shrink step tau: the neighbourhood narrows as 1/(1 + tau t)", metavar="TAU")
    sigma: float = _opt(1.0, "KSOM gaussian width at t = 0", metavar="S")
    base: float = _opt(10.0, "KSOM exponential kernel base", metavar="B")
    decay: float = _opt(0.99, "EMA decay gamma (ksom, ema)", metavar="G")
    init_count: float = _opt(1.0, "initial EMA count N0 (ksom, ema); the common implementations use 0",
                             metavar="N0")
    update_empty: bool = _opt(True, "decay the EMAs of codes that got no vectors this step (ksom, ema)")
    commitment: float = _opt(0.25, "commitment loss weight beta", metavar="BETA")
    neighbour_weight: float = _opt(1.0, "neighbour term weight (gradient-som)", metavar="W")
    assign_precision: str = _opt("exact", "arithmetic of the code search: exact fp32, or tf32 tensor cores (CUDA "
                                 "only; the CPU always searches exactly)", choices=ops.ASSIGN_PRECISIONS)
    # optimisation
    lr: float = _opt(1e-3, "AdamW learning rate (weight decay 0, no schedule)", metavar="LR")
    batch_size: int = _opt(256, "global batch size (split over the ranks of a torchrun job)", metavar="B")
    grad_clip: float = _opt(1.0, "gradient-norm clipping (0: off)", metavar="NORM")
    max_steps: int = _opt(30000, "training steps", metavar="N")
    eval_every: int = _opt(1000, "validate (and checkpoint) every N steps and at the last one", metavar="N")
    val_batch_size: int | None = _opt(None, "validation batch size [default: --batch-size]", metavar="B")
    seed: int = _opt(0, "seed of the initialisation and of the data order", metavar="S")
    strict_nan: bool = _opt(False, "stop on a non-finite loss or gradient instead of skipping the batch")
    # run
    out: str | None = _opt(None, "run folder [default: runs/<preset>]", metavar="DIR")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N (torchrun ranks use cuda:LOCAL_RANK)", metavar="DEV")
    workers: int = _opt(0, "DataLoader worker processes", metavar="N")
    threads: int | None = _opt(None, "CPU threads for torch's intra-op parallelism [default: torch's choice]",
                               metavar="N")
    progress: bool = _opt(True, "show a progress bar")
    figures: bool = _opt(True, "write PNG figures at the end")

    # --- derived -------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> str:
        """The run folder: ``out``, or ``runs/<preset>``."""
        return self.out if self.out is not None else os.path.join("runs", self.preset)

    def quantizer_kwargs(self) -> dict[str, Any]:
        """The settings the chosen quantiser's constructor takes (the others do not apply to it)."""
        common = dict(grid=self.grid, commitment=self.commitment, precision=self.assign_precision)
        ema = dict(decay=self.decay, init_count=self.init_count, update_empty=self.update_empty,
                   strict=self.strict_nan)
        return {"ksom": dict(common, **ema, neighbourhood=self.neighbourhood, shrink=self.shrink, sigma=self.sigma,
                             base=self.base),
                "ema": dict(common, **ema),
                "gradient": common,
                "gradient-som": dict(common, neighbour_weight=self.neighbour_weight)}[self.quantizer]

    def validate(self) -> "TrainConfig":
        """Raises ValueError naming the flag of the first invalid setting; returns self."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name, f in FIELDS.items():  # argparse and config files check these too; the Python API does not
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, name) not in choices:
                raise ValueError(f"{flag(name)} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        for name in ("image_size", "hidden", "res_channels", "embedding_dim", "num_codes", "batch_size",
                     "max_steps", "eval_every", "val_limit", "val_batch_size", "threads"):  # the last 3 may be None
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("num_res_blocks", "workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if not self.grad_clip >= 0:
            raise ValueError(f"--grad-clip must be >= 0, got {self.grad_clip}")
        for name, (bound, ok) in _QUANTIZER_RANGES.items():  # here, to name the flag before any work is done
            if not (ok(getattr(self, name)) and math.isfinite(getattr(self, name))):
                raise ValueError(f"{flag(name)} must be finite and {bound}, got {getattr(self, name)}")
        downsampling = ARCHITECTURES[self.arch].downsampling
        if self.image_size % downsampling:
            raise ValueError(f"--image-size must be a multiple of {downsampling} for {self.arch}, got {self.image_size}")
        if self.dataset == "cifar10" and self.image_size != 32:
            raise ValueError(f"cifar10 images are 32x32; --image-size {self.image_size} is not possible")
        if self.dataset == "samples" and self.data_root is not None:
            raise ValueError("the samples dataset is built in: drop --data-root (or pick another --dataset)")
        if self.dataset != "samples" and self.data_root is None:
            raise ValueError(f"the {self.dataset} dataset is read from disk, never downloaded: pass --data-root DIR, "
                             f"{_ROOT_HINTS[self.dataset]}")
        try:
            resolve_grid(self.grid, self.num_codes)
        except ValueError as e:
            raise ValueError(f"--grid: {e}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (the grid as a list)."""
        d = dataclasses.asdict(self)
        d["grid"] = None if self.grid is None else list(self.grid)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's optimiser settings (METHOD.md §5); samples-* mirror them on the built-in photographs.
    "samples-vqvae": dict(dataset="samples", arch="vqvae", image_size=32, lr=1e-3, batch_size=256),
    "samples-vqvae2": dict(dataset="samples", arch="vqvae2", image_size=64, lr=3e-4, batch_size=128),
    "cifar10-vqvae": dict(dataset="cifar10", arch="vqvae", image_size=32, lr=1e-3, batch_size=256),
    "imagenet-vqvae2": dict(dataset="imagenet", arch="vqvae2", image_size=256, lr=3e-4, batch_size=128),
    "faces-vqvae2": dict(dataset="faces", arch="vqvae2", image_size=256, lr=3e-4, batch_size=128),
}

# Settings that may change when a run is resumed: they do not alter what the next training step computes.
RESUMABLE = frozenset({"max_steps", "eval_every", "val_limit", "val_batch_size", "data_root", "out", "device",
                       "workers", "threads", "progress", "figures", "strict_nan"})

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def flag(name: str) -> str:
    """The command-line flag of a field."""
    return "--" + name.replace("_", "-")


# The quantisers' own constructor checks (kohonen_vq/quantizers), stated per flag; NaN fails every test.
_QUANTIZER_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "shrink": (">= 0", lambda v: v >= 0), "sigma": ("> 0", lambda v: v > 0), "base": ("> 0", lambda v: v > 0),
    "decay": ("in [0, 1)", lambda v: 0 <= v < 1), "init_count": (">= 0", lambda v: v >= 0),
    "commitment": (">= 0", lambda v: v >= 0), "neighbour_weight": (">= 0", lambda v: v >= 0)}

_ROOT_HINTS = {"cifar10": "the folder holding cifar-10-batches-py", "imagenet": "the folder holding train/ and val/",
               "faces": "the folder holding celeba_hq/ and afhq/"}


def parse_grid(text: str) -> Grid | None:
    """``"32x16"``, ``"32,16"`` or ``"512"`` -> a tuple; ``"auto"`` -> None."""
    if text.strip().lower() == "auto":
        return None
    try:
        sizes = tuple(int(s) for s in text.replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 32x16, 512 or auto, got {text!r}") from None
    return sizes


def _scalar_type(name: str) -> type:
    """int, float, str or bool: the field's type without ``| None``."""
    hint = _TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(name: str, value: Any) -> Any:
    """A config file's value for field ``name``, type-checked (no eval, no implicit conversions but int->float)."""
    if name not in FIELDS:
        raise ValueError(f"unknown setting {name!r}; valid settings: {', '.join(FIELDS)}")
    if value is None:
        if FIELDS[name].default is not None:
            raise ValueError(f"setting {name!r} cannot be null")
        return None
    if name == "grid":
        if isinstance(value, str):
            try:
                return parse_grid(value)
            except argparse.ArgumentTypeError as e:
                raise ValueError(str(e)) from None
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise ValueError(f"setting 'grid' must be a list of ints or a string like '32x16', got {value!r}")
    kind = _scalar_type(name)
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, str))
    if not ok:
        raise ValueError(f"setting {name!r} must be of type {kind.__name__}, got {value!r}")
    choices = FIELDS[name].metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"setting {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return float(value) if kind is float else value


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a JSON (``.json``) or TOML (any other suffix) file: a flat table of field names
    (``num_codes`` or ``num-codes``); parsed as data only."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    if not os.path.isfile(path):  # a folder, a device (/dev/zero would be read forever), a pipe
        raise ValueError(f"config file {path!r} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:  # permissions, I/O errors
        raise ValueError(f"cannot read config file {path!r}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
        if path.endswith(".json"):
            raw = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            raw = tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, TOMLDecodeError; deep nesting
        raise ValueError(f"cannot parse config file {path!r}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path!r} must hold a table of settings, got {type(raw).__name__}")
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        try:
            values[name] = _coerce(name, value)
        except ValueError as e:
            raise ValueError(f"config file {path!r}: {e}") from None
    return values


def resolve(overrides: Mapping[str, Any]) -> TrainConfig:
    """The dataclass defaults, then ``overrides["preset"]``'s values, then ``overrides``; validated."""
    preset = overrides.get("preset", TrainConfig.preset)
    # An unknown preset gets no values here; validate() then rejects it by name.
    return TrainConfig(**{**PRESETS.get(preset, {}), **overrides, "preset": preset}).validate()


def resume_config(saved: Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainConfig:
    """A checkpoint's config with ``overrides`` on top; only settings in ``RESUMABLE`` may change."""
    values = {name: _coerce(name, value) for name, value in saved.items()}
    changed = sorted(name for name, value in overrides.items() if name not in RESUMABLE and value != values.get(name))
    if changed:
        raise ValueError(f"cannot change {', '.join(flag(n) for n in changed)} when resuming: the run was trained "
                         f"with {', '.join(f'{n}={values.get(n)!r}' for n in changed)}. Only "
                         f"{', '.join(flag(n) for n in sorted(RESUMABLE))} may change.")
    return TrainConfig(**{**values, **overrides}).validate()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field, with ``argparse.SUPPRESS`` defaults so the namespace holds only what was given."""
    defaults = TrainConfig()
    groups: dict[str, Any] = {}
    for name, f in FIELDS.items():
        title = _GROUPS.get(name)
        group = parser if title is None else groups.get(title) or groups.setdefault(
            title, parser.add_argument_group(title))
        default = getattr(defaults, name)
        help_text = f.metadata["help"] + (" [default: set by the preset]" if name in _BY_PRESET else
                                          "" if default is None else f" [default: {_show(default)}]")
        kind = _scalar_type(name)
        if kind is bool:
            group.add_argument(flag(name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
            continue
        parse: Callable[[str], Any] = parse_grid if name == "grid" else kind
        choices = f.metadata.get("choices") or (tuple(PRESETS) if name == "preset" else None)
        group.add_argument(flag(name), type=parse, choices=choices, metavar=f.metadata.get("metavar"),
                           default=argparse.SUPPRESS, help=help_text)


_BY_PRESET = {key for values in PRESETS.values() for key in values}
_GROUPS = {**dict.fromkeys(("dataset", "data_root", "image_size", "val_limit"), "data"),
           **dict.fromkeys(("arch", "hidden", "res_channels", "num_res_blocks", "embedding_dim"), "model"),
           **dict.fromkeys(("quantizer", "num_codes", "grid", "neighbourhood", "shrink", "sigma", "base", "decay",
                            "init_count", "update_empty", "commitment", "neighbour_weight", "assign_precision"),
                            "quantiser"),
           **dict.fromkeys(("lr", "batch_size", "grad_clip", "max_steps", "eval_every", "val_batch_size", "seed",
                            "strict_nan"), "optimisation"),
           **dict.fromkeys(("out", "device", "workers", "threads", "progress", "figures"), "run")}


def _show(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


def presets_epilog() -> str:
    """The presets' settings, for ``--help``."""
    lines = ["presets (all: AdamW, weight decay 0, grad clip 1.0, 30000 steps, validation every 1000):"]
    for name, values in PRESETS.items():
        lines.append(f"  {name:<16} " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)
