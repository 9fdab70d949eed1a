"""What was built and how loading fails: build_info is truthful, a missing library is a loud error."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import kohonen_vq


def test_build_info_reports_the_running_library():
    info = kohonen_vq.build_info()
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert info["cpu_isa"] in info["cpu_isas_supported"]
    assert set(info["cpu_isas_supported"]) <= set(info["cpu_isas_compiled"])
    assert "generic" in info["cpu_isas_supported"]
    assert Path(info["library"]).is_file()
    assert info["cuda"] == bool(info["cuda_archs"])


def test_cuda_kernels_are_built_wherever_nvcc_and_cuda_torch_exist():
    # CI has nvcc but no GPU: the normal install must still compile the CUDA kernels so they cannot rot.
    nvcc_present = shutil.which("nvcc") is not None or Path("/usr/local/cuda/bin/nvcc").exists()
    if os.environ.get("KVQ_CUDA", "AUTO").upper() == "OFF" or not nvcc_present or torch.version.cuda is None:
        return
    info = kohonen_vq.build_info()
    assert info["cuda"], f"nvcc and a CUDA torch are present but the CUDA kernels were not built: {info}"
    assert {"8.0", "9.0"} <= {a.removesuffix("+PTX") for a in info["cuda_archs"]}


def test_missing_native_library_raises_with_rebuild_hint(monkeypatch):
    from kohonen_vq import _native

    monkeypatch.setattr(_native.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(_native.NativeLibraryError, match="(?s)was not found.*pip install --no-build-isolation"):
        _native.load_library.__wrapped__()


def test_unloadable_native_library_raises_with_rebuild_hint(monkeypatch, tmp_path):
    from kohonen_vq import _native

    broken = tmp_path / "_C.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(_native.importlib.util, "find_spec", lambda name: SimpleNamespace(origin=str(broken)))
    with pytest.raises(_native.NativeLibraryError, match="(?s)failed to load.*pip install --no-build-isolation"):
        _native.load_library.__wrapped__()


def test_cpu_isa_can_be_selected_and_restored():
    from kohonen_vq import ops

    previous = ops.set_cpu_isa("generic")
    try:
        assert kohonen_vq.build_info()["cpu_isa"] == "generic"
    finally:
        ops.set_cpu_isa(previous)
    assert kohonen_vq.build_info()["cpu_isa"] == previous


def test_unsupported_cpu_isa_is_refused():
    from kohonen_vq import ops

    with pytest.raises(RuntimeError, match="not available"):
        ops.set_cpu_isa("sse1")


def test_native_errors_raise_in_a_fresh_interpreter():
    # A library that carries its own static copy of the C++ runtime kills the interpreter at its first error
    # (seen with a GCC wrapper that adds -static-libstdc++): a child process keeps that from ending the run.
    code = ("import torch, kohonen_vq.ops as ops\n"
            "try:\n    ops.assign(torch.zeros(2, 3), torch.zeros(4, 5))\n"
            "except RuntimeError as err:\n    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the native library crashed the interpreter ({proc.returncode}): {proc.stderr}"
    assert "kohonen_vq.assign: argument 'x' has D = 3" in proc.stdout
