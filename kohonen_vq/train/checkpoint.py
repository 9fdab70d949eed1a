"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain data only (state dicts, tensors, numbers, strings, lists, dicts), so loading
one never runs code: model and optimiser state dicts, the step, the resolved config, the loop's running
sums, and the torch / CUDA / NumPy / Python RNG states stored as tensors.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pickle
import random
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FORMAT = "kohonen_vq.train/1"


class CheckpointError(ValueError):
    """A file that is not a loadable kohonen-vq training checkpoint."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, folder not writable, ...); the file it was to replace is
    intact. The original error is its ``__cause__``."""


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Writes through a hidden temporary file in ``path``'s folder (``.<name>.<random>.tmp``), then renames it
    over ``path``. A crash, a kill or an error midway leaves the previous file intact (os.replace is atomic
    within one file system); the temporary file is removed on any error, and one left behind by a killed
    writer is removed by the next successful save. The file gets the permissions ``open`` would give it
    (mkstemp's would be 0600). Raises :class:`CheckpointWriteError` naming ``path`` if writing fails."""
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointWriteError(f"cannot write checkpoint {os.fspath(path)!r}: {e.strerror or e}; the previous "
                                   f"file at that path, if any, is unchanged") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a writer killed mid-save
        with contextlib.suppress(OSError):  # best effort: the checkpoint itself is written
            stale.unlink()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Saves ``state`` (plain data only) to ``path`` atomically."""
    state = {"format": FORMAT, **state}
    state["checksum"] = _checksum(state)
    _write_atomic(Path(path), lambda f: torch.save(state, f))


def _checksum(state: dict[str, Any]) -> str:
    """SHA-256 of everything in ``state`` but its "checksum" entry: torch.load does not check the CRCs of the
    tensor records, so bytes damaged inside tensor data would otherwise load silently as wrong weights."""
    digest = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            digest.update(f"D{len(obj)}".encode())
            for key, value in obj.items():
                feed(key)
                feed(value)
        elif isinstance(obj, (list, tuple)):
            digest.update(f"L{len(obj)}".encode())
            for value in obj:
                feed(value)
        else:
            digest.update(f"V{type(obj).__name__}:{obj!r};".encode())

    feed({k: v for k, v in state.items() if k != "checksum"})
    return digest.hexdigest()


def copy_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copies a checkpoint file atomically (best.pt from last.pt, without serialising again)."""
    with open(src, "rb") as source:
        _write_atomic(Path(dst), lambda f: shutil.copyfileobj(source, f))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`; refuses files holding other Python objects."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(e), flags=re.IGNORECASE)
        if found is None:  # not a pickle torch can read at all
            raise CheckpointError(f"{path!r} is not a readable checkpoint: {_last_line(e)}") from None
        raise CheckpointError(f"refusing to load {path!r}: it holds a pickled Python object ({found.group(1)}), and "
                              f"unpickling one can run arbitrary code; kohonen-vq checkpoints hold only tensors, "
                              f"numbers, strings, lists and dicts (torch.load weights_only=True)") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path!r} is not a readable checkpoint (truncated or not a torch file?): "
                              f"{_last_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a kohonen-vq training checkpoint (format {FORMAT!r})")
    if "checksum" in state and state["checksum"] != _checksum(state):  # files from before checksums have none
        raise CheckpointError(f"{path!r} is not a readable checkpoint: its contents do not match their checksum "
                              f"(the file is corrupted)")
    return state


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and "documentation" not in line]
    return lines[-1] if lines else type(error).__name__


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and numbers."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, mt, python_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(gauss)},
             "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": python_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` returned (the CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
