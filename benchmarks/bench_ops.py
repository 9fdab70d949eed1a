"""Op benchmark of kohonen_vq: assign, cluster_stats and som_update_ next to this machine's torch.mm rate,
copy bandwidth and the plain-PyTorch ways of doing the same work (METHOD.md §1-3).

    .venv/bin/python benchmarks/bench_ops.py [--quick] [--device cpu|cuda|all] [--repeats R] [--out PATH]

Prints one JSON document, writes it (default benchmarks/results/ops-<device kind>-<machine tag>.json) and
a Markdown summary with the target checks next to it. benchmarks/README.md explains each figure.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as tm  # noqa: E402

import kohonen_vq  # noqa: E402
from kohonen_vq import ops  # noqa: E402

D = 64
# shrink = 0 keeps A^(t) at its t = 0 form (the widest Gaussian), so every repeat times the same work.
SOM_ARGS = {"shrink": 0.0, "sigma": 1.0, "decay": 0.99, "eps": 1e-5}
NEIGHBOURHOODS = ("none", "hard", "gaussian")
ASSIGN_TORCH_WAYS = ("expand", "addmm", "cdist")
TARGETS = {"assign_vs_mm": 0.8, "assign_vs_torch": 1.5, "cluster_stats_vs_one_hot": 30.0}
MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Sizes:
    assign: tuple[tuple[int, int], ...]  # (N, K), every device
    assign_cuda_extra: tuple[tuple[int, int], ...]
    stats: tuple[int, int]  # (N, K)
    grids: tuple[tuple[int, ...], ...]
    gemm_n: dict[str, int]  # per device type
    copy_bytes: dict[str, int]
    isa_n: int  # N of the per-ISA assign timings: the scalar fallback is slow
    min_target_n: int  # smaller assign cases are latency figures, not judged against the targets
    warmup: int
    max_case_s: float  # sampling time cap per measured way


FULL = Sizes(assign=((65536, 512), (65536, 4096)), assign_cuda_extra=((262144, 512), (4096, 512)),
             stats=(65536, 512), grids=((32, 16), (64, 64), (128, 128), (256, 256)), gemm_n={"cpu": 2048, "cuda": 8192},
             copy_bytes={"cpu": 256 * MIB, "cuda": GIB}, isa_n=16384, min_target_n=65536, warmup=2, max_case_s=4.0)
QUICK = Sizes(assign=((4096, 64), (4096, 512)), assign_cuda_extra=((16384, 512),), stats=(4096, 64),
              grids=((8, 8), (256, 256)), gemm_n={"cpu": 512, "cuda": 2048},
              copy_bytes={"cpu": 16 * MIB, "cuda": 64 * MIB}, isa_n=1024, min_target_n=4096, warmup=1,
              max_case_s=0.1)

Fn = Callable[[], Any]
Spec = dict[str, Any]
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr, so stdout stays one JSON document."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ---- inputs and the ways of doing each op; a spec is JSON so a fresh process can rebuild the case ----

def _randn(*shape: int, seed: int, device: torch.device) -> torch.Tensor:
    # Generated on the CPU so every device and every process sees the same numbers.
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def build_assign(spec: Spec, device: torch.device) -> Fn:
    n, k = spec["n"], spec["k"]
    x, w = _randn(n, D, seed=1, device=device), _randn(k, D, seed=2, device=device)
    way = spec["way"]
    if way == "native":
        return lambda: ops.assign(x, w)
    if way == "expand":  # the textbook formula, as in the authors' code
        def expand() -> tuple[torch.Tensor, torch.Tensor]:
            d = (x * x).sum(1, keepdim=True) - 2 * x @ w.T + (w * w).sum(1)
            v, i = d.min(1)
            return i, v
        return expand
    if way == "addmm":  # the same with one fused GEMM; ||x||^2 only shifts rows, so it is added after min
        def addmm() -> tuple[torch.Tensor, torch.Tensor]:
            v, i = torch.addmm((w * w).sum(1), x, w.T, alpha=-2).min(1)
            return i, v + (x * x).sum(1)
        return addmm
    if way == "cdist":
        def cdist() -> tuple[torch.Tensor, torch.Tensor]:
            v, i = torch.cdist(x, w).min(1)
            return i, v * v
        return cdist
    raise ValueError(f"unknown assign way {way!r}")


def build_cluster_stats(spec: Spec, device: torch.device) -> Fn:
    n, k = spec["n"], spec["k"]
    x = _randn(n, D, seed=1, device=device)
    idx = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(3)).to(device)
    way = spec["way"]
    if way == "native":
        return lambda: ops.cluster_stats(x, idx, k)
    if way == "one_hot":
        def one_hot() -> tuple[torch.Tensor, torch.Tensor]:
            oh = F.one_hot(idx, k).to(x.dtype)
            return oh.T @ x, oh.sum(0)
        return one_hot
    if way == "index_add":
        return lambda: (x.new_zeros(k, D).index_add_(0, idx, x), torch.bincount(idx, minlength=k).to(x.dtype))
    raise ValueError(f"unknown cluster_stats way {way!r}")


def num_codes(grid: tuple[int, ...] | list[int]) -> int:
    k = 1
    for s in grid:
        k *= s
    return k


def dense_bytes(grid: tuple[int, ...] | list[int]) -> int:
    """Memory of the dense way: the stored K x K grid-distance matrix plus the per-step A."""
    return 2 * num_codes(grid) ** 2 * 4


def grid_coords(grid: tuple[int, ...] | list[int], device: torch.device) -> torch.Tensor:
    """(K, dims) float coordinates, code k at (k mod s0, (k div s0) mod s1, ...) as in METHOD.md §3."""
    k = torch.arange(num_codes(grid), device=device)
    coords = []
    for s in grid:
        coords.append(k % s)
        k = k // s
    return torch.stack(coords, 1).float()


def _som_state(k: int, device: torch.device) -> dict[str, torch.Tensor]:
    codebook = _randn(k, D, seed=4, device=device)
    counts = torch.rand(k, generator=torch.Generator().manual_seed(5)).mul_(256).to(device)
    return {"codebook": codebook, "ema_sums": codebook.clone(), "ema_counts": torch.ones(k, device=device),
            "sums": _randn(k, D, seed=6, device=device) * 16, "counts": counts}


def _dense_som(st: dict[str, torch.Tensor], grid: list[int], nb: str, device: torch.device) -> Fn:
    """The authors' way: A^(t) built per step from a stored K x K grid-distance matrix, then A @ sums,
    A @ counts and the EMA / Laplace smoothing / division as torch ops (fused where torch allows)."""
    k = num_codes(grid)
    shrink, decay, eps = SOM_ARGS["shrink"], SOM_ARGS["decay"], SOM_ARGS["eps"]
    t = torch.zeros((), device=device)  # the authors keep the step counter as a float tensor
    g = grid_coords(grid, device)
    exact = "donot_use_mm_for_euclid_dist"  # exact distances, and no K x K temporaries beyond the result
    neighbourhood: Callable[[], torch.Tensor] | None = None
    if nb == "hard":
        mask = torch.cdist(g, g, compute_mode=exact).lt_(1.5)  # Chebyshev distance <= 1 on the integer grid

        def hard() -> torch.Tensor:
            a = mask / (1 + t * shrink)
            a.fill_diagonal_(1.0)
            return a
        neighbourhood = hard
    elif nb == "gaussian":
        d2 = torch.cdist(g, g, compute_mode=exact).pow_(2)
        neighbourhood = lambda: (d2 * (-(1 + t * shrink) / SOM_ARGS["sigma"] ** 2)).exp_()  # noqa: E731
    cb, m, n, sums, counts = st["codebook"], st["ema_sums"], st["ema_counts"], st["sums"], st["counts"]

    def update() -> torch.Tensor:
        if neighbourhood is None:  # A = I: the authors skip the product
            n.mul_(decay).add_(counts, alpha=1 - decay)
            m.mul_(decay).add_(sums, alpha=1 - decay)
        else:  # A is symmetric, so A @ . equals the paper's sum over A_jk
            a = neighbourhood()
            n.addmv_(a, counts, beta=decay, alpha=1 - decay)
            m.addmm_(a, sums, beta=decay, alpha=1 - decay)
        total = n.sum()
        n.add_(eps).mul_(total / (total + k * eps))
        torch.div(m, n[:, None], out=cb)
        t.add_(1)
        return cb
    return update


def build_som(spec: Spec, device: torch.device) -> Fn:
    grid, nb = list(spec["grid"]), spec["neighbourhood"]
    st = _som_state(num_codes(grid), device)
    if spec["way"] == "torch_dense":
        return _dense_som(st, grid, nb, device)
    step, skipped = (torch.zeros(1, dtype=torch.long, device=device) for _ in range(2))

    def native() -> torch.Tensor:
        ops.som_update_(st["codebook"], st["ema_sums"], st["ema_counts"], step, skipped, st["sums"], st["counts"],
                        grid=grid, neighbourhood=nb, **SOM_ARGS)
        return st["codebook"]
    return native


BUILDERS: dict[str, Callable[[Spec, torch.device], Fn]] = {
    "assign": build_assign, "cluster_stats": build_cluster_stats, "som_update": build_som}
# Warm-up case run in a memory-measuring process before the baseline: loads kernels, thread pools and
# GEMM buffers while staying far below the real case's peak.
SMALL: dict[str, Spec] = {"assign": {"n": 256}, "cluster_stats": {"n": 256}, "som_update": {"grid": [8, 8]}}


# ---- measuring ----

@dataclass
class Bench:
    device: torch.device
    sizes: Sizes
    repeats: int
    threads: int
    cpu_memory: list[tuple[dict[str, Any], Spec]]  # results still waiting for their fresh-process memory figure

    def time(self, fn: Fn) -> dict[str, Any]:
        return tm.time_call(fn, self.device, self.repeats, self.sizes.warmup, max_total_s=self.sizes.max_case_s)

    def way(self, spec: Spec) -> dict[str, Any]:
        """Times one way; its peak extra memory is measured now (CUDA) or later in a fresh process (CPU)."""
        fn = BUILDERS[spec["op"]](spec, self.device)
        res: dict[str, Any] = {"time": self.time(fn)}
        if self.device.type == "cuda":
            res["peak_extra_bytes"] = tm.cuda_peak_extra_bytes(fn, self.device)
        else:
            res["peak_extra_bytes"] = None
            self.cpu_memory.append((res, spec))
        return res

    def outputs(self, spec: Spec) -> Any:
        """One call's outputs on freshly built inputs, for the agreement checks."""
        return BUILDERS[spec["op"]](spec, self.device)()


def median(res: dict[str, Any]) -> float:
    return res["time"]["median_s"]


def bench_reference(b: Bench) -> dict[str, Any]:
    dev, kind = b.device, b.device.type
    ref = {"copy": tm.copy_bandwidth(dev, b.sizes.copy_bytes[kind], b.repeats)}
    if kind == "cuda":  # the fp32 reference is the non-tensor-core rate; TF32 and bf16 are for context
        with tm.fp32_matmul_precision(tf32=True):
            ref["gemm_tf32"] = tm.gemm_rate(dev, b.sizes.gemm_n[kind], torch.float32, b.repeats)
        ref["gemm_bf16"] = tm.gemm_rate(dev, b.sizes.gemm_n[kind], torch.bfloat16, b.repeats)
    ref["gemm_fp32"] = tm.gemm_rate(dev, b.sizes.gemm_n[kind], torch.float32, b.repeats)
    return ref


def _same_shape_mm_gflops(b: Bench, n: int, k: int) -> float:
    """torch.mm rate at the assign shape (N x D by D x K): thin GEMMs run below the square-GEMM rate."""
    x, w = _randn(n, D, seed=1, device=b.device), _randn(k, D, seed=2, device=b.device)
    t = b.time(lambda: torch.mm(x, w.T))
    return 2 * n * k * D / t["median_s"] / 1e9


def _isa_rates(b: Bench, n: int, k: int, mm_gflops: float) -> dict[str, Any]:
    """Native assign rate per CPU kernel, at N = min(n, isa_n) because the scalar kernel is slow (the rate
    still grows a little with N, so compare the ISA rows with each other, not with the main rows)."""
    n = min(n, b.sizes.isa_n)
    fn = build_assign({"n": n, "k": k, "way": "native"}, b.device)
    out = {}
    try:
        for isa in kohonen_vq.build_info()["cpu_isas_supported"]:
            ops.set_cpu_isa(isa)
            t = b.time(fn)
            gflops = 2 * n * k * D / t["median_s"] / 1e9
            out[isa] = {"n": n, "time": t, "gflops": gflops, "ratio_to_mm": gflops / mm_gflops}
    finally:
        ops.set_cpu_isa("auto")
    return out


def bench_assign(b: Bench, mm_gflops: float) -> list[dict[str, Any]]:
    cases = b.sizes.assign + (b.sizes.assign_cuda_extra if b.device.type == "cuda" else ())
    rows = []
    for n, k in cases:
        spec = {"op": "assign", "n": n, "k": k}
        native = b.way({**spec, "way": "native"})
        native["gflops"] = 2 * n * k * D / median(native) / 1e9
        native["ratio_to_mm"] = native["gflops"] / mm_gflops
        torch_ways = {w: b.way({**spec, "way": w}) for w in ASSIGN_TORCH_WAYS}
        best = min(torch_ways, key=lambda w: median(torch_ways[w]))
        (i_a, d_a), (i_b, d_b) = b.outputs({**spec, "way": "native"}), b.outputs({**spec, "way": "addmm"})
        row = {"n": n, "k": k, "d": D, "native": native, "torch": torch_ways, "best_torch": best,
               "speedup_vs_best_torch": median(torch_ways[best]) / median(native),
               "mm_same_shape_gflops": _same_shape_mm_gflops(b, n, k),
               "check_vs_addmm": {"index_agreement": (i_a == i_b).double().mean().item(),
                                  "max_abs_sqdist_diff": (d_a - d_b).abs().max().item()},
               "judged": n >= b.sizes.min_target_n}
        if b.device.type == "cpu":
            row["isa"] = _isa_rates(b, n, k, mm_gflops)
        rows.append(row)
    return rows


def bench_cluster_stats(b: Bench, copy_gbps: float) -> list[dict[str, Any]]:
    n, k = b.sizes.stats
    spec = {"op": "cluster_stats", "n": n, "k": k}
    res = {w: b.way({**spec, "way": w}) for w in ("native", "one_hot", "index_add")}
    gbps = n * D * 4 / median(res["native"]) / 1e9
    (s_a, c_a), (s_b, c_b) = b.outputs({**spec, "way": "native"}), b.outputs({**spec, "way": "index_add"})
    return [{"n": n, "k": k, "d": D, **res, "native_gbps": gbps, "native_ratio_to_copy": gbps / copy_gbps,
             "speedup_vs_one_hot": median(res["one_hot"]) / median(res["native"]),
             "speedup_vs_index_add": median(res["index_add"]) / median(res["native"]),
             "check_vs_index_add": {"max_abs_sums_diff": (s_a - s_b).abs().max().item(),
                                    "counts_equal": bool(torch.equal(c_a, c_b))},
             "judged": n >= b.sizes.min_target_n}]


def bench_som(b: Bench, budget: int) -> list[dict[str, Any]]:
    rows = []
    for grid in b.sizes.grids:
        for nb in NEIGHBOURHOODS:
            spec = {"op": "som_update", "grid": list(grid), "neighbourhood": nb}
            row: dict[str, Any] = {"grid": list(grid), "k": num_codes(grid), "d": D, "neighbourhood": nb,
                                   "native": b.way({**spec, "way": "native"})}
            need = dense_bytes(grid) if nb != "none" else 0
            if need > budget:
                row["torch_dense"] = {"skipped": f"needs {need / GIB:.1f} GiB for K x K matrices, budget "
                                                 f"{budget / GIB:.1f} GiB (--dense-budget-gib)"}
            else:
                row["torch_dense"] = b.way({**spec, "way": "torch_dense"})
                row["torch_dense"]["state_bytes"] = need // 2  # the stored distance matrix, outside the peak
                row["speedup_vs_dense"] = median(row["torch_dense"]) / median(row["native"])
                cb_a, cb_b = b.outputs({**spec, "way": "native"}), b.outputs({**spec, "way": "torch_dense"})
                row["check_vs_dense"] = {"max_abs_codebook_diff": (cb_a - cb_b).abs().max().item()}
            rows.append(row)
    _estimate_skipped(rows)
    return rows


def _estimate_skipped(rows: list[dict[str, Any]]) -> None:
    """Dense work is O(K^2 D): scale the largest measured K of the same neighbourhood, labelled as such."""
    for row in rows:
        if "skipped" not in row["torch_dense"]:
            continue
        measured = [r for r in rows if r["neighbourhood"] == row["neighbourhood"] and "time" in r["torch_dense"]]
        if not measured:
            continue
        basis = max(measured, key=lambda r: r["k"])
        est = median(basis["torch_dense"]) * (row["k"] / basis["k"]) ** 2
        row["torch_dense"].update(estimate_median_s=est, estimate_basis=f"ESTIMATE: K={basis['k']} measured, "
                                  f"scaled by (K/{basis['k']})^2")
        row["speedup_vs_dense_estimate"] = est / median(row["native"])


def memory_case(job: tuple[Spec, int]) -> dict[str, Any]:
    """Runs in a fresh process: peak extra RSS of one call of one CPU way, its inputs already built."""
    spec, threads = job
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    try:
        BUILDERS[spec["op"]]({**spec, **SMALL[spec["op"]]}, cpu)()
        fn = BUILDERS[spec["op"]](spec, cpu)
        gc.collect()
        return tm.rss_peak_extra_bytes(fn)
    except Exception as err:  # reported in the JSON next to the way instead of losing the whole run
        return {"error": repr(err)}


def fill_cpu_memory(b: Bench, parallel: int) -> None:
    """Peak extra RSS of each CPU way, each in a fresh process (the peak RSS of a process only grows)."""
    jobs = [(spec, b.threads) for _, spec in b.cpu_memory]
    for (res, _), out in zip(b.cpu_memory, tm.fresh_process_map(memory_case, jobs, parallel, ("torch", "kohonen_vq"))):
        res["peak_extra_bytes"] = out.get("peak_extra_bytes")
        if "error" in out:
            res["memory_error"] = out["error"]
    b.cpu_memory.clear()


def bench_device(device: torch.device, sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    b = Bench(device, sizes, args.repeats, args.threads, [])
    out: dict[str, Any] = {}
    with tm.other_load(out):
        log(f"{device.type}: reference rates")
        out["reference"] = ref = bench_reference(b)
        log(f"{device.type}: assign")
        out["assign"] = bench_assign(b, ref["gemm_fp32"]["gflops"])
        log(f"{device.type}: cluster_stats")
        out["cluster_stats"] = bench_cluster_stats(b, ref["copy"]["gbps"])
        log(f"{device.type}: som_update_")
        out["som_update"] = bench_som(b, int(args.dense_budget_gib * GIB))
    if device.type == "cpu":
        log(f"cpu: peak memory of {len(b.cpu_memory)} ways, one fresh process each")
        fill_cpu_memory(b, parallel=min(4, tm.available_cores()))
        out["memory_method"] = ("fresh process per way: peak RSS (VmHWM, reset to the current "
                               "RSS after building the inputs) after one call minus before it")
    else:
        out["memory_method"] = "torch.cuda.max_memory_allocated during one call minus memory_allocated before it"
        out["fp32_matmul"] = "ieee (TF32 off) for the reference and the torch ways"
    return out


# ---- targets and report ----

def targets(devices: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(dev: str, name: str, case: str, value: float) -> None:
        out.append({"device": dev, "target": name, "case": case, "value": value, "threshold": TARGETS[name],
                    "pass": value >= TARGETS[name]})
    for dev, res in devices.items():
        if "skipped" in res:
            continue
        for r in (r for r in res["assign"] if r["judged"]):
            case = f"N={r['n']} K={r['k']} D={r['d']}"
            add(dev, "assign_vs_mm", case, r["native"]["ratio_to_mm"])
            add(dev, "assign_vs_torch", case, r["speedup_vs_best_torch"])
        for r in (r for r in res["cluster_stats"] if r["judged"]):
            add(dev, "cluster_stats_vs_one_hot", f"N={r['n']} K={r['k']} D={r['d']}", r["speedup_vs_one_hot"])
    return out


def _ms(res: dict[str, Any]) -> str:
    return f"{median(res) * 1e3:.3g}" if "time" in res else "—"


def _mib(res: dict[str, Any]) -> str:
    b = res.get("peak_extra_bytes")
    return "—" if b is None else f"{b / MIB:.1f}"


def _table(title: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _md_header(doc: dict[str, Any]) -> list[str]:
    m, info = doc["machine"], doc["build_info"]
    gpu = f", {m['gpu_name']}" if m.get("gpu_name") else ""
    lines = [f"# kohonen_vq op benchmark{' (QUICK: smoke-test sizes, figures not meaningful)' if doc['quick'] else ''}",
             "", f"{m['cpu_model']} ({m['cores_available']} cores, {m['torch_threads']} torch threads){gpu}; "
             f"torch {m['torch']}; kohonen_vq {info['version']} (CPU ISA {info['cpu_isa']}); {doc['created_utc']}; "
             f"run took {doc['elapsed_s']:.0f} s.",
             "Times are medians (ms); speed-ups are median / median of the same run."]
    lines += [f"Other processes kept {r['other_load_cores']:.2f} of {m['cores_available']} cores busy on average "
              f"during the {d} timings{' (figures skewed)' if r['other_load_cores'] > 0.1 else ''}."
              for d, r in doc["devices"].items() if "other_load_cores" in r]
    return lines + [f"Not run: {d}: {r['skipped']}." for d, r in doc["devices"].items() if "skipped" in r]


def _md_reference(devs: dict[str, Any]) -> list[str]:
    rows = []
    for dev, r in devs.items():
        ref = r["reference"]
        ctx = [f"{ref[k]['gflops']:.0f}" if k in ref else "—" for k in ("gemm_tf32", "gemm_bf16")]
        fp32 = ref["gemm_fp32"]
        rows.append([dev, fp32["n"], f"{fp32['gflops']:.0f}", *ctx, f"{ref['copy']['gbps']:.1f}"])
    return _table("Reference rates", ["device", "GEMM n", "fp32 GFLOP/s", "TF32 GFLOP/s", "bf16 GFLOP/s", "copy GB/s"],
                  rows)


def _md_assign(devs: dict[str, Any]) -> list[str]:
    rows = []
    for dev, r in devs.items():
        for a in r["assign"]:
            t, nat = a["torch"], a["native"]
            rows.append([dev, a["n"], a["k"], _ms(nat), f"{nat['gflops']:.0f}", f"{nat['ratio_to_mm']:.2f}",
                         f"{a['mm_same_shape_gflops']:.0f}", *(_ms(t[w]) for w in ASSIGN_TORCH_WAYS),
                         f"{a['speedup_vs_best_torch']:.2f} ({a['best_torch']})", _mib(nat), _mib(t[a["best_torch"]]),
                         f"{a['check_vs_addmm']['index_agreement']:.5f}"])
    header = ["device", "N", "K", "native ms", "GFLOP/s", "× fp32 mm", "mm at this shape GFLOP/s",
              *(f"{w} ms" for w in ASSIGN_TORCH_WAYS), "speed-up vs best", "native MiB", "best torch MiB",
              "index agreement"]
    lines = _table("assign (D = 64)", header, rows)
    isa = [[v["n"], a["k"], name, _ms(v), f"{v['gflops']:.0f}", f"{v['ratio_to_mm']:.2f}"]
           for a in devs.get("cpu", {}).get("assign", []) for name, v in a["isa"].items()]
    if isa:
        lines += _table("assign per CPU kernel (set_cpu_isa)", ["N", "K", "ISA", "ms", "GFLOP/s", "× fp32 mm"], isa)
    return lines


def _md_cluster_stats(devs: dict[str, Any]) -> list[str]:
    rows = [[dev, c["n"], c["k"], _ms(c["native"]), f"{c['native_gbps']:.1f}", f"{c['native_ratio_to_copy']:.2f}",
             _ms(c["one_hot"]), f"{c['speedup_vs_one_hot']:.3g}", _ms(c["index_add"]),
             f"{c['speedup_vs_index_add']:.3g}", _mib(c["native"]), _mib(c["one_hot"])]
            for dev, r in devs.items() for c in r["cluster_stats"]]
    return _table("cluster_stats (D = 64)", ["device", "N", "K", "native ms", "GB/s (x read once)", "× copy GB/s",
                                             "one-hot ms", "speed-up", "index_add ms", "speed-up", "native MiB",
                                             "one-hot MiB"], rows)


def _md_som(devs: dict[str, Any]) -> list[str]:
    rows, skipped = [], []
    for dev, r in devs.items():
        for s in r["som_update"]:
            td = s["torch_dense"]
            if "time" in td:
                dense, speed = _ms(td), f"{s['speedup_vs_dense']:.3g}"
            elif "estimate_median_s" in td:
                dense = f"~{td['estimate_median_s'] * 1e3:.3g} (estimate)"
                speed = f"~{s['speedup_vs_dense_estimate']:.3g} (estimate)"
            else:
                dense, speed = "skipped", "—"
            if "skipped" in td:
                skipped.append(f"{dev} K={s['k']} {s['neighbourhood']}: {td['skipped']}")
            grid = "x".join(map(str, s["grid"]))
            rows.append([dev, f"{s['k']} ({grid})", s["neighbourhood"], _ms(s["native"]), dense, speed,
                         _mib(s["native"]), _mib(td)])
    lines = _table("som_update_ (D = 64, shrink 0 so A^(t) stays at t = 0)",
                   ["device", "K (grid)", "neighbourhood", "native ms", "torch dense ms", "speed-up", "native MiB",
                    "dense MiB"], rows)
    if skipped:
        lines += ["", "Dense way skipped (estimates scale the largest measured K by K²): " + "; ".join(skipped) + "."]
    return lines


def markdown(doc: dict[str, Any]) -> str:
    devs = {d: r for d, r in doc["devices"].items() if "skipped" not in r}
    targets_rows = [[t["device"], t["target"], t["case"], f"{t['value']:.2f}", f"≥ {t['threshold']}",
                     "PASS" if t["pass"] else "FAIL"] for t in doc["targets"]]
    lines = (_md_header(doc)
             + _table("Targets", ["device", "target", "case", "value", "threshold", "result"], targets_rows)
             + _md_reference(devs) + _md_assign(devs) + _md_cluster_stats(devs) + _md_som(devs))
    return "\n".join(lines) + "\n"


# ---- entry points ----

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, seconds in total (CI smoke test)")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="all = CPU, plus CUDA when available and built")
    p.add_argument("--repeats", type=int, help="timed samples per way (default 10, quick 3)")
    p.add_argument("--threads", type=int, default=tm.available_cores(), help="torch CPU threads")
    p.add_argument("--dense-budget-gib", type=float, default=2.0,
                   help="largest K x K memory the dense som_update way may use (default 2)")
    p.add_argument("--out", type=Path, help="JSON path (the .md summary goes next to it)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 10)
    return args


def devices_to_run(choice: str, info: dict[str, Any]) -> dict[str, str | None]:
    """Device -> None to run it, or the reason it is skipped."""
    cuda_missing = ("no CUDA device" if not torch.cuda.is_available()
                    else "native library built without CUDA kernels" if not info["cuda"] else None)
    if choice == "cuda" and cuda_missing:
        sys.exit(f"bench_ops: --device cuda impossible: {cuda_missing}")
    out: dict[str, str | None] = {}
    if choice in ("cpu", "all"):
        out["cpu"] = None
    if choice in ("cuda", "all"):
        out["cuda"] = cuda_missing
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    info, sizes = kohonen_vq.build_info(), QUICK if args.quick else FULL
    devices: dict[str, Any] = {}
    for dev, reason in devices_to_run(args.device, info).items():
        if reason:
            devices[dev] = {"skipped": reason}
            continue
        with tm.fp32_matmul_precision(tf32=False):
            devices[dev] = bench_device(torch.device(dev), sizes, args)
    kind = "cuda" if "cuda" in devices and "skipped" not in devices["cuda"] else "cpu"
    doc = {"benchmark": "kohonen_vq ops", "quick": args.quick,
           "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "command": sys.argv, "machine": tm.machine_info(), "build_info": info,
           "settings": {"repeats": args.repeats, "threads": args.threads, "d": D,
                        "dense_budget_bytes": int(args.dense_budget_gib * GIB), "som": SOM_ARGS,
                        "timing": "warm-up, then median and min over samples; CPU time.perf_counter, CUDA events"},
           "units": {"time": "s", "rate": "GFLOP/s (1e9 flop/s)", "bandwidth": "GB/s (1e9 bytes/s)",
                     "memory": "bytes", "ratio_to_mm": "op GFLOP/s / square fp32 torch.mm GFLOP/s",
                     "speedup": "baseline median time / kohonen_vq median time"},
           "devices": devices}
    doc["targets"] = targets(devices)
    doc["elapsed_s"] = time.perf_counter() - t0
    out = args.out or (Path(__file__).resolve().parent / "results" /
                       f"ops-{kind}-{tm.machine_tag(kind)}{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1)
    out.write_text(text + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(text)
    print(f"bench_ops: wrote {out} and {out.with_suffix('.md').name}", file=sys.stderr)


if __name__ == "__main__":
    main()
