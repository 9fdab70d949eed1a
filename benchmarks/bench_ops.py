"""Op benchmark of kohonen_vq: assign, cluster_stats and som_update_ next to this machine's torch.mm rate,
copy bandwidth, the plain-PyTorch ways of doing the same work (METHOD.md §1-3), vector_quantize_pytorch's
distance computation and faiss (IndexFlatL2, k = 1, CPU).

    .venv/bin/python benchmarks/bench_ops.py [--quick] [--device cpu|cuda|all] [--repeats R] [--out PATH]

Prints one JSON document, writes it (default benchmarks/results/ops-<device kind>-<machine tag>.json) and
a Markdown summary with the target checks next to it. benchmarks/README.md explains each figure.
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report as rp  # noqa: E402
import _timing as tm  # noqa: E402

import kohonen_vq  # noqa: E402
from kohonen_vq import ops  # noqa: E402

D = 64
# shrink = 0 keeps A^(t) at its t = 0 form (the widest Gaussian), so every repeat times the same work.
SOM_ARGS = {"shrink": 0.0, "sigma": 1.0, "decay": 0.99, "eps": 1e-5}
NEIGHBOURHOODS = ("none", "hard", "gaussian")
TORCH_WAYS = ("expand", "addmm", "cdist")  # plain torch; expand is the authors' dense formula
# faiss-cpu has no GPU; "tf32" is kohonen_vq's own opt-in tensor-core search (a CPU runs it exactly)
ASSIGN_BASELINES = {"cpu": (*TORCH_WAYS, "vqp", "faiss"), "cuda": (*TORCH_WAYS, "vqp", "tf32")}
STATS_BASELINES = ("one_hot", "index_add")
# Peak extra memory of each baseline in N x K fp32 buffers (measured at N = 65536, K = 1024), so a case
# over the memory budget is skipped before it runs; one_hot holds int64 and fp32 N x K one-hot matrices.
NK_BUFFERS = {"expand": 2, "addmm": 1, "cdist": 1, "vqp": 3, "faiss": 0, "tf32": 0, "one_hot": 3,
              "index_add": 0}
# A way slower than max_case_s per call runs about twice: one timed call without warm-up (the smaller
# cases warmed it up) and one call in its memory process.
SLOW_CALLS = 2
MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Sizes:
    n: tuple[int, ...]  # assign and cluster_stats run every N x K
    k: tuple[int, ...]
    grids: tuple[tuple[int, ...], ...]  # som_update_
    headline: tuple[int, int]  # (N, K) of the GPU assign targets: the VQ-VAE-2 bottom, K = 512
    gemm_n: dict[str, int]  # per device type
    copy_bytes: dict[str, int]
    isa_n: int  # N of the per-ISA assign timings: the scalar fallback is slow
    warmup: int
    max_case_s: float  # sampling time cap per measured way
    budget_bytes: int  # a baseline needing more N x K or K x K memory is skipped
    max_baseline_s: float  # a baseline whose measuring would take longer is skipped

    def cases(self) -> list[tuple[int, int]]:
        return [(n, k) for n in self.n for k in self.k]


FULL = Sizes(n=(4096, 65536, 262144), k=(512, 4096, 65536), grids=((32, 16), (64, 64), (128, 128), (256, 256)),
             headline=(262144, 512), gemm_n={"cpu": 2048, "cuda": 8192}, copy_bytes={"cpu": 256 * MIB, "cuda": GIB},
             isa_n=16384, warmup=2, max_case_s=4.0, budget_bytes=4 * GIB, max_baseline_s=60.0)
# The quick budget is small enough that some baselines are skipped, so the smoke test covers that path.
QUICK = Sizes(n=(1024, 4096), k=(512,), grids=((8, 8), (256, 256)), headline=(4096, 512),
              gemm_n={"cpu": 512, "cuda": 2048}, copy_bytes={"cpu": 16 * MIB, "cuda": 64 * MIB}, isa_n=1024,
              warmup=1, max_case_s=0.1, budget_bytes=16 * MIB, max_baseline_s=60.0)

Fn = Callable[[], Any]
Spec = dict[str, Any]
Row = dict[str, Any]
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr, so stdout stays one JSON document."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# ---- inputs and the ways of doing each op; a spec is JSON so a fresh process can rebuild the case ----

def _randn(*shape: int, seed: int, device: torch.device) -> torch.Tensor:
    # Generated on the CPU so every device and every process sees the same numbers.
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def _faiss_search(x: torch.Tensor, w: torch.Tensor) -> Fn:
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())  # its OpenMP OpenBLAS follows the same setting
    index = faiss.IndexFlatL2(D)
    index.add(w.numpy())
    xs = x.numpy()
    return lambda: index.search(xs, 1)


def _vqp_nearest(x: torch.Tensor, w: torch.Tensor) -> Fn:
    from vector_quantize_pytorch.vector_quantize_pytorch import cdist

    def vqp() -> torch.Tensor:  # EuclideanCodebook.forward: dist = -cdist(x, w), then argmax at temperature 0
        return (-cdist(x[None], w[None])[0]).argmax(-1)
    return vqp


def build_assign(spec: Spec, device: torch.device) -> Fn:
    n, k = spec["n"], spec["k"]
    x, w = _randn(n, D, seed=1, device=device), _randn(k, D, seed=2, device=device)
    way = spec["way"]
    if way == "native":
        return lambda: ops.assign(x, w)
    if way == "tf32":
        return lambda: ops.assign(x, w, precision="tf32")
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
    if way == "vqp":
        return _vqp_nearest(x, w)
    if way == "faiss":
        return _faiss_search(x, w)
    raise ValueError(f"unknown assign way {way!r}")


def build_cluster_stats(spec: Spec, device: torch.device) -> Fn:
    n, k = spec["n"], spec["k"]
    x = _randn(n, D, seed=1, device=device)
    idx = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(3)).to(device)
    way = spec["way"]
    if way == "native":  # as the quantisers call it: indices from assign need no (synchronising) range check
        return lambda: ops.cluster_stats(x, idx, k, check_range=False)
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
SMALL: dict[str, Spec] = {"assign": {"n": 256, "k": 64}, "cluster_stats": {"n": 256, "k": 64},
                          "som_update": {"grid": [8, 8]}}


def case_label(op: str, case: Spec) -> str:
    if op == "som_update":
        return f"K={num_codes(case['grid'])} ({'x'.join(map(str, case['grid']))}) {case['neighbourhood']}"
    return f"N={case['n']} K={case['k']} D={D}"


def work_units(op: str, case: Spec) -> float:
    """What a way's time scales with: N K for assign and cluster_stats, K^2 for the dense som_update_."""
    return float(num_codes(case["grid"]) ** 2 if op == "som_update" else case["n"] * case["k"])


def need_bytes(spec: Spec) -> int:
    """N x K or K x K memory a way needs (0 for kohonen_vq's own ops: never such buffers)."""
    if spec["way"] == "native":
        return 0
    if spec["op"] == "som_update":
        return dense_bytes(spec["grid"]) if spec["neighbourhood"] != "none" else 0
    return NK_BUFFERS[spec["way"]] * spec["n"] * spec["k"] * 4


# ---- measuring ----

@dataclass
class Bench:
    device: torch.device
    sizes: Sizes
    repeats: int
    threads: int
    cpu_memory: list[tuple[dict[str, Any], Spec]] = field(default_factory=list)  # awaiting a fresh process
    # way -> (seconds per work unit, work units, case) at its largest measured case, to predict slow cases
    pace: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    mm_rates: dict[tuple[int, int], float] = field(default_factory=dict)

    def _skip_reason(self, spec: Spec, estimate_s: float | None) -> str | None:
        budget, need = self.sizes.budget_bytes, need_bytes(spec)
        if need > budget:
            return f"needs ~{need / MIB:.0f} MiB of N x K or K x K buffers, budget {budget / MIB:.0f} MiB"
        if spec["way"] != "native" and estimate_s and estimate_s * SLOW_CALLS > self.sizes.max_baseline_s:
            return (f"would take ~{estimate_s:.0f} s a call, ~{estimate_s * SLOW_CALLS:.0f} s to measure "
                    f"(limit {self.sizes.max_baseline_s:.0f} s)")
        return None

    def _skipped(self, reason: str, key: str, estimate_s: float | None, op: str) -> dict[str, Any]:
        out: dict[str, Any] = {"skipped": reason}
        if estimate_s is not None:
            out.update(estimate_median_s=estimate_s, estimate_basis=f"ESTIMATE: measured at {self.pace[key][2]}, "
                       f"scaled by {'K^2' if op == 'som_update' else 'N K'}")
        return out

    def way(self, spec: Spec) -> dict[str, Any]:
        """Times one way unless skipped; its peak extra memory is measured now (CUDA) or later in a fresh
        process (CPU). kohonen_vq's own ops are never skipped."""
        op, case = spec["op"], {k: v for k, v in spec.items() if k not in ("op", "way")}
        key, units = f"{op}/{spec['way']}/{spec.get('neighbourhood', '')}", work_units(op, case)
        estimate = self.pace[key][0] * units if key in self.pace else None
        reason = self._skip_reason(spec, estimate)
        try:
            fn = BUILDERS[op](spec, self.device) if reason is None else None
        except ImportError as err:
            fn, reason = None, f"not installed: {err}"
        if fn is None:
            return self._skipped(reason, key, estimate, op)
        slow = estimate is not None and estimate > self.sizes.max_case_s  # smaller cases warmed it up
        res: dict[str, Any] = {}
        with tm.other_load(res):  # per way: a burst of other work shows where it skewed a figure
            res["time"] = tm.time_call(fn, self.device, self.repeats, 0 if slow else self.sizes.warmup,
                                       max_total_s=self.sizes.max_case_s)
        if key not in self.pace or units >= self.pace[key][1]:
            self.pace[key] = (res["time"]["median_s"] / units, units, case_label(op, case))
        if self.device.type == "cuda":
            res["peak_extra_bytes"] = tm.cuda_peak_extra_bytes(fn, self.device)
        else:
            res["peak_extra_bytes"] = None
            self.cpu_memory.append((res, spec))
        return res

    def outputs(self, spec: Spec) -> Any:
        """One call's outputs on freshly built inputs, for the agreement checks."""
        return BUILDERS[spec["op"]](spec, self.device)()

    def mm_same_shape(self, n: int, k: int) -> dict[str, Any]:
        """torch.mm rate at the assign shape (N x D by D x K), rows capped so its N x K output fits the budget:
        thin GEMMs run below the square-GEMM rate, and the rate barely changes with more rows."""
        rows = max(1, min(n, self.sizes.budget_bytes // (4 * k)))
        if (rows, k) not in self.mm_rates:
            x, w = _randn(rows, D, seed=1, device=self.device), _randn(k, D, seed=2, device=self.device)
            t = tm.time_call(lambda: torch.mm(x, w.T), self.device, self.repeats, self.sizes.warmup,
                             max_total_s=self.sizes.max_case_s)
            self.mm_rates[rows, k] = 2 * rows * k * D / t["median_s"] / 1e9
        return {"rows": rows, "gflops": self.mm_rates[rows, k]}


def median(res: dict[str, Any]) -> float:
    return res["time"]["median_s"]


def measured(res: dict[str, Any]) -> bool:
    return "time" in res


def bench_reference(b: Bench) -> dict[str, Any]:
    dev, kind = b.device, b.device.type
    ref = {"copy": tm.copy_bandwidth(dev, b.sizes.copy_bytes[kind], b.repeats)}
    if kind == "cuda":  # the fp32 reference is the non-tensor-core rate; TF32 and bf16 are for context
        with tm.fp32_matmul_precision(tf32=True):
            ref["gemm_tf32"] = tm.gemm_rate(dev, b.sizes.gemm_n[kind], torch.float32, b.repeats)
        ref["gemm_bf16"] = tm.gemm_rate(dev, b.sizes.gemm_n[kind], torch.bfloat16, b.repeats)
    ref["gemm_fp32"] = tm.gemm_rate(dev, b.sizes.gemm_n[kind], torch.float32, b.repeats)
    return ref


def _isa_rates(b: Bench, mm_gflops: float) -> list[Row]:
    """Native assign rate per CPU kernel and K, at N = isa_n because the scalar kernel is slow (the rate
    still grows a little with N, so compare the ISA rows with each other, not with the main rows)."""
    n, rows = b.sizes.isa_n, []
    try:
        for k in b.sizes.k:
            fn = build_assign({"n": n, "k": k, "way": "native"}, b.device)
            for isa in kohonen_vq.build_info()["cpu_isas_supported"]:
                ops.set_cpu_isa(isa)
                row: Row = {"n": n, "k": k, "isa": isa}
                with tm.other_load(row):
                    row["time"] = tm.time_call(fn, b.device, b.repeats, b.sizes.warmup, max_total_s=b.sizes.max_case_s)
                row["gflops"] = 2 * n * k * D / median(row) / 1e9
                row["ratio_to_mm"] = row["gflops"] / mm_gflops
                rows.append(row)
    finally:
        ops.set_cpu_isa("auto")
    return rows


def _speedups(native: dict[str, Any], baselines: dict[str, Any]) -> dict[str, float]:
    return {w: median(r) / median(native) for w, r in baselines.items() if measured(r)}


def _assign_check(b: Bench, spec: Spec, baselines: dict[str, Any], way: str) -> dict[str, Any]:
    """How far ``way``'s result is from the exact native one: share of equal indices, largest sqdist gap."""
    if not measured(baselines[way]):
        return {"skipped": f"{way} not measured at this size"}
    (i_a, d_a), (i_b, d_b) = b.outputs({**spec, "way": "native"}), b.outputs({**spec, "way": way})
    return {"index_agreement": (i_a == i_b).double().mean().item(),
            "max_abs_sqdist_diff": (d_a - d_b).abs().max().item()}


def _native_and_baselines(b: Bench, op: str, n: int, k: int, baselines: tuple[str, ...]) -> tuple[Spec, dict, dict]:
    """One N x K case of ``op``: its spec, the native way's result and each baseline's."""
    log(f"{b.device.type}: {op} N={n} K={k}")
    spec = {"op": op, "n": n, "k": k}
    return spec, b.way({**spec, "way": "native"}), {w: b.way({**spec, "way": w}) for w in baselines}


def bench_assign(b: Bench, mm_gflops: float) -> list[Row]:
    rows = []
    for n, k in b.sizes.cases():
        spec, native, base = _native_and_baselines(b, "assign", n, k, ASSIGN_BASELINES[b.device.type])
        native["gflops"] = 2 * n * k * D / median(native) / 1e9
        native["ratio_to_mm"] = native["gflops"] / mm_gflops
        speedup = _speedups(native, base)
        best = min((w for w in TORCH_WAYS if w in speedup), key=lambda w: speedup[w], default=None)
        rows.append({"n": n, "k": k, "d": D, "native": native, "baselines": base, "speedup_vs": speedup,
                     "best_torch": best, "mm_same_shape": b.mm_same_shape(n, k),
                     "check_vs_addmm": _assign_check(b, spec, base, "addmm")})
        if "tf32" in base:  # the fast mode's speed-up over the exact search, and how often it differs
            rows[-1]["tf32_speedup"] = speedup["tf32"] ** -1 if "tf32" in speedup else None
            rows[-1]["check_tf32"] = _assign_check(b, spec, base, "tf32")
    return rows


def bench_cluster_stats(b: Bench, copy_gbps: float) -> list[Row]:
    rows = []
    for n, k in b.sizes.cases():
        spec, native, base = _native_and_baselines(b, "cluster_stats", n, k, STATS_BASELINES)
        gbps = n * D * 4 / median(native) / 1e9
        (s_a, c_a), (s_b, c_b) = b.outputs({**spec, "way": "native"}), b.outputs({**spec, "way": "index_add"})
        rows.append({"n": n, "k": k, "d": D, "native": native, "baselines": base, "speedup_vs": _speedups(native, base),
                     "native_gbps": gbps, "native_ratio_to_copy": gbps / copy_gbps,
                     "check_vs_index_add": {"max_abs_sums_diff": (s_a - s_b).abs().max().item(),
                                            "counts_equal": bool(torch.equal(c_a, c_b))}})
    return rows


def bench_som(b: Bench) -> list[Row]:
    rows = []
    for grid in b.sizes.grids:
        log(f"{b.device.type}: som_update_ {'x'.join(map(str, grid))}")
        for nb in NEIGHBOURHOODS:
            spec = {"op": "som_update", "grid": list(grid), "neighbourhood": nb}
            native, dense = b.way({**spec, "way": "native"}), b.way({**spec, "way": "torch_dense"})
            row: Row = {"grid": list(grid), "k": num_codes(grid), "d": D, "neighbourhood": nb, "native": native,
                        "torch_dense": dense}
            if measured(dense):
                dense["state_bytes"] = need_bytes({**spec, "way": "torch_dense"}) // 2  # held between calls
                row["speedup_vs_dense"] = median(dense) / median(native)
                cb_a, cb_b = b.outputs({**spec, "way": "native"}), b.outputs({**spec, "way": "torch_dense"})
                row["check_vs_dense"] = {"max_abs_codebook_diff": (cb_a - cb_b).abs().max().item()}
            elif "estimate_median_s" in dense:
                row["speedup_vs_dense_estimate"] = dense["estimate_median_s"] / median(native)
            rows.append(row)
    return rows


def memory_case(job: tuple[Spec, int]) -> dict[str, Any]:
    """Runs in a fresh process: peak extra RSS of one call of one CPU way, its inputs already built."""
    spec, threads = job
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    try:
        BUILDERS[spec["op"]]({**spec, **SMALL[spec["op"]]}, cpu)()
        fn = BUILDERS[spec["op"]](spec, cpu)
        gc.collect(1)  # young objects only: a full collection in a forked child touches (copies) every import
        return tm.rss_peak_extra_bytes(fn)
    except Exception as err:  # reported in the JSON next to the way instead of losing the whole run
        return {"error": repr(err)}


def fill_cpu_memory(b: Bench, parallel: int) -> None:
    """Peak extra RSS of each CPU way, each in a fresh process (the peak RSS of a process only grows)."""
    jobs = [(spec, b.threads) for _, spec in b.cpu_memory]
    preload = ("torch", "kohonen_vq", "faiss", "vector_quantize_pytorch")  # a missing one is ignored
    for (res, _), out in zip(b.cpu_memory, tm.fresh_process_map(memory_case, jobs, parallel, preload)):
        res["peak_extra_bytes"] = out.get("peak_extra_bytes")
        if "error" in out:
            res["memory_error"] = out["error"]
    b.cpu_memory.clear()


def bench_device(device: torch.device, sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    b = Bench(device, sizes, args.repeats, args.threads)
    out: dict[str, Any] = {}
    with tm.other_load(out):
        log(f"{device.type}: reference rates")
        out["reference"] = ref = bench_reference(b)
        out["assign"] = bench_assign(b, ref["gemm_fp32"]["gflops"])
        if device.type == "cpu":
            log("cpu: assign per CPU kernel")
            out["assign_isa"] = _isa_rates(b, ref["gemm_fp32"]["gflops"])
        out["cluster_stats"] = bench_cluster_stats(b, ref["copy"]["gbps"])
        out["som_update"] = bench_som(b)
    if device.type == "cpu":
        log(f"cpu: peak memory of {len(b.cpu_memory)} ways, one fresh process each")
        fill_cpu_memory(b, parallel=min(2, tm.available_cores()))
        out["memory_method"] = ("fresh process per way: peak RSS (VmHWM, reset to the current "
                               "RSS after building the inputs) after one call minus before it")
    else:
        out["memory_method"] = "torch.cuda.max_memory_allocated during one call minus memory_allocated before it"
        out["fp32_matmul"] = "ieee (TF32 off) for the reference and the torch ways"
    return out


# ---- targets (issue 6, plus the earlier assign_vs_torch and cluster_stats_vs_one_hot) ----

Value = Callable[[Row], "float | str"]


@dataclass(frozen=True)
class Target:
    name: str
    op: str  # the result list it reads
    devices: tuple[str, ...]
    compare: str
    threshold: float
    what: str
    judged: Callable[[Spec, Sizes], bool]  # which cases of `op` it checks
    value: Value | None  # a result row -> the figure, or why it was not measured
    status: str | None = None  # a fixed result without a verdict, e.g. for a feature not built yet


def _vs(way: str) -> Value:
    def value(r: Row) -> float | str:
        if way in r["speedup_vs"]:
            return r["speedup_vs"][way]
        return f"not measured: {way} {r['baselines'][way]['skipped']}"
    return value


def _vs_best_torch(r: Row) -> float | str:
    return r["speedup_vs"][r["best_torch"]] if r["best_torch"] else "not measured: every plain-torch way skipped"


def _peak_share(buffer_bytes: Callable[[Row], int]) -> Value:
    def value(r: Row) -> float | str:
        peak = r["native"].get("peak_extra_bytes")
        return peak / buffer_bytes(r) if peak is not None else f"not measured: {r['native'].get('memory_error')}"
    return value


def _nk_bytes(r: Row) -> int:
    return 4 * r["n"] * r["k"]


def _kk_bytes(r: Row) -> int:
    return 4 * r["k"] ** 2


def _headline(c: Spec, s: Sizes) -> bool:
    return (c["n"], c["k"]) == s.headline


def _not_smallest_n(c: Spec, s: Sizes) -> bool:  # the smallest N is a latency case
    return c["n"] > min(s.n)


def _largest_k(c: Spec, s: Sizes) -> bool:
    return c["k"] == max(s.k)


def _largest_grid(c: Spec, s: Sizes) -> bool:
    return c["grid"] == list(s.grids[-1])


_BOTH = ("cpu", "cuda")
TARGETS = (
    Target("assign_vs_mm", "assign", ("cpu",), ">=", 0.8, "assign GFLOP/s (2NKD / time) over the fp32 torch.mm "
           "GFLOP/s (square, same run)", lambda c, s: c["k"] >= 512, lambda r: r["native"]["ratio_to_mm"]),
    Target("assign_vs_faiss", "assign", ("cpu",), ">=", 1 / 1.2, "faiss IndexFlatL2 (k = 1, same threads) time "
           "over assign time; >= 1/1.2 is within 1.2x of faiss", lambda c, s: c["k"] >= 512, _vs("faiss")),
    Target("assign_vs_torch", "assign", ("cpu",), ">=", 1.5, "fastest plain-torch way's time (matmul + argmin) "
           "over assign time", _not_smallest_n, _vs_best_torch),
    Target("assign_vs_mm", "assign", ("cuda",), ">=", 0.6, "assign GFLOP/s over the fp32 (TF32 off) torch.mm "
           "GFLOP/s", _headline, lambda r: r["native"]["ratio_to_mm"]),
    Target("assign_vs_torch", "assign", ("cuda",), ">=", 3.0, "fastest plain-torch way's time (matmul + argmin, "
           "fp32) over assign time", _headline, _vs_best_torch),
    Target("assign_fast_mode", "assign", ("cuda",), ">=", 2.0, "opt-in tensor-core assign (precision='tf32') "
           "speed-up over the exact fp32 one", _headline,
           lambda r: r["tf32_speedup"] or f"not measured: tf32 {r['baselines']['tf32'].get('skipped')}"),
    Target("assign_small_n_vs_mm_shape", "assign", ("cuda",), ">=", 0.5, "assign GFLOP/s over torch.mm GFLOP/s at "
           "the same N x D by D x K shape, at the smallest N (not launch-bound)", lambda c, s: c["n"] == min(s.n),
           lambda r: r["native"]["gflops"] / r["mm_same_shape"]["gflops"]),
    Target("assign_memory_vs_nk", "assign", _BOTH, "<=", 0.25, "assign peak extra memory over N K fp32 bytes (an "
           "N x K buffer of even one byte an entry gives >= 0.25)", lambda c, s: c["k"] >= 512, _peak_share(_nk_bytes)),
    Target("cluster_stats_vs_one_hot", "cluster_stats", _BOTH, ">=", 30.0, "one-hot matmul way's time over "
           "cluster_stats time", _not_smallest_n, _vs("one_hot")),
    Target("cluster_stats_vs_copy_floor", "cluster_stats", ("cuda",), "<=", 3.0, "cluster_stats time over the "
           "time to read x once at the copy rate", _not_smallest_n, lambda r: 1 / r["native_ratio_to_copy"]),
    Target("cluster_stats_memory_vs_nk", "cluster_stats", _BOTH, "<=", 0.25, "cluster_stats peak extra memory over "
           "N K fp32 bytes", _largest_k, _peak_share(_nk_bytes)),
    Target("som_update_ms", "som_update", ("cuda",), "<=", 1.0, "som_update_ median time in ms",
           lambda c, s: _largest_grid(c, s) and c["neighbourhood"] != "none", lambda r: median(r["native"]) * 1e3),
    Target("som_update_memory_vs_kk", "som_update", _BOTH, "<=", 0.25, "som_update_ peak extra memory over K^2 fp32 "
           "bytes", _largest_grid, _peak_share(_kk_bytes)),
)


def op_cases(op: str, sizes: Sizes) -> list[Spec]:
    if op == "som_update":
        return [{"grid": list(g), "neighbourhood": nb} for g in sizes.grids for nb in NEIGHBOURHOODS]
    return [{"n": n, "k": k} for n, k in sizes.cases()]


def _row_of(rows: list[Row], case: Spec) -> Row:
    return next(r for r in rows if all(r[key] == v for key, v in case.items()))


def targets(devices: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    """Every target on every device; a device not run lists its targets with the reason."""
    out = []
    for dev, res in devices.items():
        for t in (t for t in TARGETS if dev in t.devices):
            for case in (c for c in op_cases(t.op, sizes) if t.judged(c, sizes)):
                label = case_label(t.op, case)
                if t.status or "skipped" in res:
                    out.append(rp.target_row(dev, t.name, label, None, t.threshold, t.compare, t.what,
                                             t.status or f"not run: {res['skipped']}"))
                    continue
                value = t.value(_row_of(res[t.op], case))
                figure = value if isinstance(value, float) else None
                out.append(rp.target_row(dev, t.name, label, figure, t.threshold, t.compare, t.what,
                                         None if figure is not None else value))
    return out


# ---- report ----

SKEWED_LOAD = 0.1  # cores of other work during a timing above which its figure is marked


def _ms(res: dict[str, Any]) -> str:
    if measured(res):
        return f"{median(res) * 1e3:.3g}{'*' if res.get('other_load_cores', 0.0) > SKEWED_LOAD else ''}"
    return f"~{res['estimate_median_s'] * 1e3:.3g} est." if "estimate_median_s" in res else "skipped"


def _mib(res: dict[str, Any]) -> str:
    b = res.get("peak_extra_bytes")
    return "—" if b is None else f"{b / MIB:.1f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _md_header(doc: dict[str, Any]) -> list[str]:
    m, info = doc["machine"], doc["build_info"]
    gpu = f", {m['gpu_name']}" if m.get("gpu_name") else ""
    lines = [f"# kohonen_vq op benchmark{' (QUICK: smoke-test sizes, figures not meaningful)' if doc['quick'] else ''}",
             "", f"{m['cpu_model']} ({m['cores_available']} cores, {m['torch_threads']} torch threads){gpu}; "
             f"torch {m['torch']}; kohonen_vq {info['version']} (CPU ISA {info['cpu_isa']}); {doc['created_utc']}; "
             f"run took {doc['elapsed_s']:.0f} s.",
             "Times are medians (ms); speed-ups are median / median of the same run; `est.` marks an ESTIMATE for "
             "a skipped baseline (scaled from its largest measured case, see the JSON); `*` marks a time taken "
             f"while other processes kept more than {SKEWED_LOAD} core busy (skewed; `other_load_cores` in the JSON)."]
    lines += [f"Other processes kept {r['other_load_cores']:.2f} of {m['cores_available']} cores busy on average "
              f"during the {d} timings{' (figures skewed)' if r['other_load_cores'] > SKEWED_LOAD else ''}."
              for d, r in doc["devices"].items() if "other_load_cores" in r]
    return lines + [f"Not run: {d}: {r['skipped']}." for d, r in doc["devices"].items() if "skipped" in r]


def _md_reference(devs: dict[str, Any]) -> list[str]:
    rows = []
    for dev, r in devs.items():
        ref = r["reference"]
        ctx = [f"{ref[k]['gflops']:.0f}" if k in ref else "—" for k in ("gemm_tf32", "gemm_bf16")]
        fp32 = ref["gemm_fp32"]
        rows.append([dev, fp32["n"], f"{fp32['gflops']:.0f}", *ctx, f"{ref['copy']['gbps']:.1f}"])
    return rp.table("Reference rates", ["device", "GEMM n", "fp32 GFLOP/s", "TF32 GFLOP/s", "bf16 GFLOP/s",
                                        "copy GB/s"], rows)


def _md_assign(devs: dict[str, Any]) -> list[str]:
    ways = ASSIGN_BASELINES["cpu"]
    times, memory = [], []
    for dev, r in devs.items():
        for a in r["assign"]:
            nat, base, check = a["native"], a["baselines"], a["check_vs_addmm"]
            best = a["best_torch"]
            times.append([dev, a["n"], a["k"], _ms(nat), f"{nat['gflops']:.0f}", f"{nat['ratio_to_mm']:.2f}",
                          f"{a['mm_same_shape']['gflops']:.0f}", *(_ms(base[w]) if w in base else "—" for w in ways),
                          f"{_x(a['speedup_vs'].get(best))} ({best})" if best else "—",
                          _x(a["speedup_vs"].get("faiss")), _x(check.get("index_agreement"))])
            memory.append([dev, a["n"], a["k"], f"{a['n'] * a['k'] * 4 / MIB:.0f}", _mib(nat),
                           *(_mib(base[w]) if w in base else "—" for w in ways)])
    lines = rp.table("assign (D = 64): time", ["device", "N", "K", "native ms", "GFLOP/s", "× fp32 mm",
                                              "mm at this shape GFLOP/s", *(f"{w} ms" for w in ways),
                                              "speed-up vs best torch", "speed-up vs faiss", "index agreement"], times)
    lines += rp.table("assign (D = 64): peak extra memory (MiB)", ["device", "N", "K", "N×K fp32", "native",
                                                                   *ways], memory)
    fast = [[dev, a["n"], a["k"], _ms(a["native"]), _ms(a["baselines"]["tf32"]), _x(a["tf32_speedup"]),
             _x(a["check_tf32"].get("index_agreement")), _x(a["check_tf32"].get("max_abs_sqdist_diff"))]
            for dev, r in devs.items() for a in r["assign"] if "tf32_speedup" in a]
    if fast:
        lines += rp.table("assign precision='tf32' (tensor cores) vs the exact search",
                          ["device", "N", "K", "exact ms", "tf32 ms", "speed-up", "index agreement",
                           "max |sqdist diff|"], fast)
    isa = [[v["n"], v["k"], v["isa"], _ms(v), f"{v['gflops']:.0f}", f"{v['ratio_to_mm']:.2f}"]
           for v in devs.get("cpu", {}).get("assign_isa", [])]
    if isa:
        lines += rp.table("assign per CPU kernel (set_cpu_isa)", ["N", "K", "ISA", "ms", "GFLOP/s", "× fp32 mm"], isa)
    return lines


def _md_cluster_stats(devs: dict[str, Any]) -> list[str]:
    rows = [[dev, c["n"], c["k"], _ms(c["native"]), f"{c['native_gbps']:.1f}", f"{c['native_ratio_to_copy']:.2f}",
             _ms(c["baselines"]["one_hot"]), _x(c["speedup_vs"].get("one_hot")), _ms(c["baselines"]["index_add"]),
             _x(c["speedup_vs"].get("index_add")), _mib(c["native"]), _mib(c["baselines"]["one_hot"]),
             _mib(c["baselines"]["index_add"])]
            for dev, r in devs.items() for c in r["cluster_stats"]]
    return rp.table("cluster_stats (D = 64)", ["device", "N", "K", "native ms", "GB/s (x read once)", "× copy GB/s",
                                               "one-hot ms", "speed-up", "index_add ms", "speed-up", "native MiB",
                                               "one-hot MiB", "index_add MiB"], rows)


def _md_som(devs: dict[str, Any]) -> list[str]:
    rows = []
    for dev, r in devs.items():
        for s in r["som_update"]:
            speed = (_x(s.get("speedup_vs_dense")) if "speedup_vs_dense" in s
                     else f"~{s['speedup_vs_dense_estimate']:.3g} est." if "speedup_vs_dense_estimate" in s else "—")
            grid = "x".join(map(str, s["grid"]))
            rows.append([dev, f"{s['k']} ({grid})", s["neighbourhood"], _ms(s["native"]), _ms(s["torch_dense"]), speed,
                         _mib(s["native"]), _mib(s["torch_dense"])])
    return rp.table("som_update_ (D = 64, shrink 0 so A^(t) stays at t = 0)",
                    ["device", "K (grid)", "neighbourhood", "native ms", "torch dense ms", "speed-up", "native MiB",
                     "dense MiB"], rows)


def _md_skipped(devs: dict[str, Any]) -> list[str]:
    skipped = []
    for dev, r in devs.items():
        for op in ("assign", "cluster_stats", "som_update"):
            for row in r[op]:
                ways = row.get("baselines") or {"torch_dense": row["torch_dense"]}
                skipped += [f"- {dev} {op} {case_label(op, row)} {w}: {res['skipped']}"
                            for w, res in ways.items() if "skipped" in res]
    return ["", "## Baselines skipped", "", *skipped] if skipped else []


def markdown(doc: dict[str, Any]) -> str:
    devs = {d: r for d, r in doc["devices"].items() if "skipped" not in r}
    lines = (_md_header(doc) + rp.targets_table(doc["targets"]) + _md_reference(devs) + _md_assign(devs)
             + _md_cluster_stats(devs) + _md_som(devs) + _md_skipped(devs))
    return "\n".join(lines) + "\n"


# ---- entry points ----

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, seconds in total (CI smoke test)")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="all = CPU, plus CUDA when available and built")
    p.add_argument("--repeats", type=int, help="timed samples per way (default 10, quick 3)")
    p.add_argument("--threads", type=int, default=tm.available_cores(), help="torch CPU threads")
    p.add_argument("--baseline-budget-gib", type=float,
                   help="largest N x K or K x K memory a baseline may need (default 4; quick 16 MiB)")
    p.add_argument("--out", type=Path, help="JSON path (the .md summary goes next to it)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 10)
    return args


def baseline_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in ("faiss-cpu", "vector-quantize-pytorch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    info, sizes = kohonen_vq.build_info(), QUICK if args.quick else FULL
    if args.baseline_budget_gib is not None:
        sizes = replace(sizes, budget_bytes=int(args.baseline_budget_gib * GIB))
    devices: dict[str, Any] = {}
    for dev, reason in tm.devices_to_run(args.device, info["cuda"]).items():
        if reason:
            devices[dev] = {"skipped": reason}
            continue
        with tm.fp32_matmul_precision(tf32=False):
            devices[dev] = bench_device(torch.device(dev), sizes, args)
    kind = "cuda" if "skipped" not in devices["cuda"] else "cpu"
    doc = {"benchmark": "kohonen_vq ops", "quick": args.quick, "created_utc": rp.now_utc(), "command": sys.argv,
           "machine": tm.machine_info(), "build_info": info, "baseline_versions": baseline_versions(),
           "settings": {"repeats": args.repeats, "threads": args.threads, "d": D, "sizes": asdict(sizes),
                        "som": SOM_ARGS, "nk_buffers": NK_BUFFERS,
                        "faiss_threads": "faiss.omp_set_num_threads(torch threads)",
                        "timing": "warm-up, then median and min over samples; CPU time.perf_counter, CUDA events"},
           "units": {"time": "s", "rate": "GFLOP/s (1e9 flop/s)", "bandwidth": "GB/s (1e9 bytes/s)",
                     "memory": "bytes", "ratio_to_mm": "op GFLOP/s / square fp32 torch.mm GFLOP/s",
                     "speedup_vs": "baseline median time / kohonen_vq median time"},
           "devices": devices}
    doc["targets"] = targets(devices, sizes)
    doc["elapsed_s"] = time.perf_counter() - t0
    rp.write(doc, markdown(doc), args.out or rp.RESULTS / f"{rp.stem('ops', kind, args.quick)}.json")


if __name__ == "__main__":
    main()
