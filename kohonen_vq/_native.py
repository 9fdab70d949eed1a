"""Loads the compiled kohonen_vq library into the PyTorch dispatcher, loudly.

There is no pure-Python fallback: if the library is missing or fails to load, importing the ops raises
an error that says why and how to rebuild.
"""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from typing import Any

import torch

_REBUILD_HINT = (
    "Rebuild it against the installed torch with:\n"
    "    pip install --no-build-isolation -e .   (from the kohonen_vq source tree)\n"
    "or run `make setup`."
)


class NativeLibraryError(ImportError):
    """The compiled kohonen_vq library could not be found or loaded."""


@lru_cache(maxsize=None)
def load_library() -> str:
    """Loads ``kohonen_vq/_C.so`` once and returns its path."""
    spec = importlib.util.find_spec("kohonen_vq._C")
    if spec is None or spec.origin is None:
        raise NativeLibraryError(
            "kohonen_vq: the native library kohonen_vq/_C.so was not found; the package was installed "
            "without building it. " + _REBUILD_HINT
        )
    try:
        torch.ops.load_library(spec.origin)
    except OSError as err:  # wrong torch ABI, missing CUDA runtime, ...
        raise NativeLibraryError(
            f"kohonen_vq: failed to load the native library {spec.origin}: {err.__cause__ or err}. "
            f"It may be damaged, or built against another torch than the installed {torch.__version__}. "
            + _REBUILD_HINT
        ) from err
    return spec.origin


def build_info() -> dict[str, Any]:
    """What the native library was built with and what it runs.

    Keys: ``version``, ``torch_version`` (built against), ``torch_runtime`` (imported now), ``cuda``
    (CUDA kernels compiled), ``cuda_version``, ``cuda_archs``, ``cpu_isas_compiled``,
    ``cpu_isas_supported`` (by this CPU), ``cpu_isa`` (in use), ``compiler``, ``library`` (path).
    """
    path = load_library()
    info = json.loads(torch.ops.kohonen_vq.build_info())
    info["torch_runtime"] = torch.__version__
    info["library"] = path
    return info
