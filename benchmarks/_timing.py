"""Shared helpers of the kohonen_vq benchmarks: timing, peak memory, hardware reference rates, machine info.

Every benchmark reports its figures next to reference rates measured in the same process on the same
machine, so ratios stay meaningful when the machine (or its load) changes.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import platform
import re
import resource
import statistics
import time
from typing import Any, Callable, Iterator, Sequence

import torch

Fn = Callable[[], Any]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample_s(fn: Fn, calls: int, device: torch.device) -> float:
    """Seconds per call, averaged over `calls` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def time_call(fn: Fn, device: torch.device, repeats: int, warmup: int = 2, min_sample_s: float = 2e-3,
              max_total_s: float = 4.0) -> dict[str, Any]:
    """Median and min seconds per call of `fn` after `warmup` calls.

    Short calls are batched so one sample lasts at least `min_sample_s` (timer and launch granularity).
    A call slower than a quarter of `max_total_s` ends the warm-up early.
    Sampling stops early, after at least 3 samples, once it has taken `max_total_s`, so slow baselines
    do not dominate the run; a call longer than `max_total_s` is sampled once (its length dwarfs the timer's
    granularity). `samples` records how many were taken.
    """
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if time.perf_counter() - t0 > max_total_s / 4:  # one slow call warms up enough
            break
    first = _sample_s(fn, 1, device)
    calls = max(1, math.ceil(min_sample_s / max(first, 1e-9)))
    samples = [first] if calls == 1 else []  # a slow call's calibration run is a valid sample
    wanted = 1 if first > max_total_s else repeats
    t0 = time.perf_counter()
    while len(samples) < wanted:
        samples.append(_sample_s(fn, calls, device))
        if len(samples) >= 3 and time.perf_counter() - t0 > max_total_s:
            break
    return {"median_s": statistics.median(samples), "min_s": min(samples), "samples": len(samples),
            "calls_per_sample": calls}


def cuda_peak_extra_bytes(fn: Fn, device: torch.device) -> int:
    """Peak bytes allocated by one call of `fn` beyond what was allocated before it (outputs included)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's address space (VmHWM).

    Preferred to ru_maxrss, which a child process inherits from its parent at exec and so starts at the
    parent's RSS; falls back to it where /proc is missing.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Lowers VmHWM to the current RSS (Linux >= 4.0), so earlier transients do not hide a later peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_extra_bytes(fn: Fn) -> dict[str, Any]:
    """Growth of the peak RSS during one call of `fn`; meant for a fresh process whose inputs exist.

    A fresh process per case keeps the allocator state of other cases out of the figure. Without the
    reset, the baseline is the peak so far (imports, input construction), which can hide a smaller peak.
    """
    was_reset = reset_peak_rss()
    base = peak_rss_bytes()
    fn()
    return {"peak_extra_bytes": max(0, peak_rss_bytes() - base), "baseline_rss_bytes": base,
            "peak_reset": was_reset}


def fresh_process_map(fn: Callable[[Any], Any], items: Sequence[Any], parallel: int,
                      preload: Sequence[str] = ("torch",), timeout_s: float = 1800.0) -> list[Any]:
    """fn(item) for each item, each in its own process, `parallel` at a time.

    The processes fork from a server that has only imported `preload`, so a case pays no import time and
    inherits no allocator state or peak from another case. `fn` must be a module-level function.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    with ctx.Pool(parallel, maxtasksperchild=1) as pool:
        return pool.map_async(fn, items, chunksize=1).get(timeout_s)


def machine_busy_s() -> float | None:
    """CPU seconds all processes on the machine have used so far (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def other_load(out: dict[str, Any]) -> Iterator[None]:
    """Sets out["other_load_cores"]: mean cores kept busy by other processes (or the hypervisor) meanwhile.

    Timings taken while this is well above 0 are skewed; the ratios to the reference rates only partly
    absorb it, since the load changes during the run.
    """
    t0, busy0, own0 = time.perf_counter(), machine_busy_s(), time.process_time()
    yield
    busy1 = machine_busy_s()
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (time.process_time() - own0)
        out["other_load_cores"] = max(0.0, others) / (time.perf_counter() - t0)


@contextlib.contextmanager
def fp32_matmul_precision(tf32: bool) -> Iterator[None]:
    """Allows (or forbids) TF32 tensor cores for fp32 CUDA matmuls inside the block."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9; mixing it with allow_tf32 is an error
        old = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if tf32 else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = old
    else:
        old_flag = matmul.allow_tf32
        matmul.allow_tf32 = tf32
        try:
            yield
        finally:
            matmul.allow_tf32 = old_flag


def gemm_rate(device: torch.device, n: int, dtype: torch.dtype, repeats: int) -> dict[str, Any]:
    """torch.mm GFLOP/s (2 n^3 flops) on square n x n operands."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    t = time_call(lambda: torch.mm(a, b), device, repeats)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "time": t,
            "gflops": 2 * n**3 / t["median_s"] / 1e9}


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> dict[str, Any]:
    """GB/s of dst.copy_(src) on fp32 tensors, counting bytes read plus bytes written."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), device, repeats)
    return {"bytes": src.numel() * 4, "time": t, "gbps": 2 * src.numel() * 4 / t["median_s"] / 1e9,
            "counts": "bytes read + bytes written"}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices_to_run(choice: str, cuda_built: bool) -> dict[str, str | None]:
    """"cpu" and "cuda" -> None to run it, or why it is not run (its targets are then listed as not run)."""
    cuda_missing = ("no CUDA device" if not torch.cuda.is_available()
                    else "native library built without CUDA kernels" if not cuda_built else None)
    if choice == "cuda" and cuda_missing:
        raise SystemExit(f"--device cuda impossible: {cuda_missing}")
    return {"cpu": None if choice in ("cpu", "all") else f"not requested (--device {choice})",
            "cuda": cuda_missing or (None if choice in ("cuda", "all") else f"not requested (--device {choice})")}


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """What ran the benchmark; deliberately without the host name."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cores_available": available_cores(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}", "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_memory_bytes=props.total_memory,
                    gpu_capability=f"{props.major}.{props.minor}", cuda_runtime=torch.version.cuda)
    return info


def slug(text: str) -> str:
    """Lower-case file-name-safe form of `text`, e.g. 'AMD EPYC' -> 'amd-epyc'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_tag(device_kind: str) -> str:
    """Short host-name-free tag of the machine: the GPU name for CUDA runs, else CPU model and core count."""
    if device_kind == "cuda":
        return slug(torch.cuda.get_device_name(0).removeprefix("NVIDIA "))
    return f"{slug(cpu_model())}-{available_cores()}c"
