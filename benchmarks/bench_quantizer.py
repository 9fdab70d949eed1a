"""One training forward of a VQ layer at the VQ-VAE-2 bottom shape of issue 6 (N = 262 144 vectors, K = 512,
D = 64): kohonen_vq.KohonenVQ (hard neighbourhood, 2D grid) against the same equations written densely in
plain PyTorch the way the authors' code does (N x K distances, N x K one-hot, K x K neighbourhood matrix), and
against vector_quantize_pytorch.VectorQuantize (EMA), all measured in the same run, plus kohonen_vq's assign
alone at the same shape (the forward's floor). Peak memory of each way is measured in a fresh process.

    python benchmarks/bench_quantizer.py [--quick] [--device cpu|cuda|all] [--out FILE]

Prints JSON and writes it (plus a Markdown summary) under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report as rp  # noqa: E402
import _timing as tm  # noqa: E402

import kohonen_vq as kvq  # noqa: E402
from kohonen_vq import ops, reference  # noqa: E402

GRID = (32, 16)
WAYS = ("kohonen_vq", "dense_torch", "vector_quantize_pytorch")
# On CUDA also KohonenVQ(precision="tf32"), the opt-in tensor-core search; a CPU runs it exactly (not repeated).
EXTRA_WAYS = {"cpu": (), "cuda": ("kohonen_vq_tf32",)}
FORWARD_OVER_ASSIGN = {"cuda": 1.3}  # the target; on CPU the ratio is reported without one


class DenseKSOM:
    """KSOM training forward in plain PyTorch, dense as in the authors' code (the baseline to beat)."""

    def __init__(self, num_codes: int, dim: int, device: torch.device):
        self.w = torch.randn(num_codes, dim, device=device)
        self.m, self.n, self.t = self.w.clone(), torch.ones(num_codes, device=device), 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        x = z.detach()
        dist = (x * x).sum(1, keepdim=True) - 2 * x @ self.w.T + (self.w * self.w).sum(1)
        idx = dist.argmin(1)
        onehot = F.one_hot(idx, self.w.shape[0]).float()
        q = self.w[idx]
        a = reference.neighbourhood_matrix(GRID, "hard", self.t, 0.1, 1.0, 10.0).to(x.device)
        counts, sums = a @ onehot.sum(0), a @ (onehot.T @ x)
        self.n = 0.99 * self.n + 0.01 * counts
        self.m = 0.99 * self.m + 0.01 * sums
        total = self.n.sum()
        self.n = (self.n + 1e-5) / (total + self.n.numel() * 1e-5) * total
        self.w, self.t = self.m / self.n[:, None], self.t + 1
        loss = 0.25 * F.mse_loss(z, q)
        return z + (q - z).detach() + 0 * loss


def make_way(way: str, num_codes: int, dim: int, device: torch.device) -> Callable[[torch.Tensor], Any]:
    if way in ("kohonen_vq", "kohonen_vq_tf32"):
        precision = "tf32" if way == "kohonen_vq_tf32" else "exact"
        return kvq.KohonenVQ(num_codes, dim, grid=GRID, neighbourhood="hard", precision=precision).to(device).train()
    if way == "dense_torch":
        return DenseKSOM(num_codes, dim, device)
    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=dim, codebook_size=num_codes, decay=0.99, commitment_weight=0.25).to(device).train()
    return lambda z: vq(z.unsqueeze(0))


def memory_case(job: tuple[str, int, int, int, str]) -> dict[str, Any]:
    """Runs in a fresh process: peak extra memory of one forward after a warm-up forward."""
    way, n, num_codes, dim, device_type = job
    device = torch.device(device_type)
    fn = make_way(way, num_codes, dim, device)
    z = torch.randn(n, dim, device=device)
    fn(z)  # allocator pools and lazy initialisation are not the forward's cost
    if device.type == "cuda":
        return {"peak_extra_bytes": tm.cuda_peak_extra_bytes(lambda: fn(z), device)}
    return tm.rss_peak_extra_bytes(lambda: fn(z))


def measure(n: int, num_codes: int, dim: int, device: torch.device, repeats: int, max_s: float) -> dict[str, Any]:
    """Times each way (sampling stops after max_s, see time_call), then its memory in a fresh process."""
    z = torch.randn(n, dim, device=device)
    out: dict[str, Any] = {"n": n, "num_codes": num_codes, "dim": dim, "grid": GRID, "ways": {}}
    with tm.other_load(out):
        for way in (*WAYS, *EXTRA_WAYS[device.type]):
            try:
                fn = make_way(way, num_codes, dim, device)
            except ImportError as err:
                out["ways"][way] = {"skipped": f"not installed: {err}"}
                continue
            out["ways"][way] = {"time": tm.time_call(lambda: fn(z), device, repeats, max_total_s=max_s)}
            if isinstance(fn, kvq.KohonenVQ):  # its forward's floor: the assignment alone, same shape and codebook
                assign = lambda: ops.assign(z, fn.codebook, precision=fn.precision)  # noqa: E731
                key = "assign_alone" if fn.precision == "exact" else f"assign_alone_{fn.precision}"
                out[key] = {"time": tm.time_call(assign, device, repeats, max_total_s=max_s)}
    jobs = [(way, n, num_codes, dim, device.type) for way in out["ways"] if "time" in out["ways"][way]]
    preload = ("torch", "kohonen_vq", "vector_quantize_pytorch")
    for job, mem in zip(jobs, tm.fresh_process_map(memory_case, jobs, parallel=1, preload=preload)):
        out["ways"][job[0]]["memory"] = mem
    out["forward_over_assign"] = median(out["ways"]["kohonen_vq"]) / median(out["assign_alone"])
    if "time" in out["ways"].get("kohonen_vq_tf32", {}):
        out["forward_over_assign_tf32"] = median(out["ways"]["kohonen_vq_tf32"]) / median(out["assign_alone_tf32"])
    return out


def median(res: dict[str, Any]) -> float:
    return res["time"]["median_s"]


def _peak(res: dict[str, Any]) -> int | None:
    return res.get("memory", {}).get("peak_extra_bytes")


def device_targets(dev: str, res: dict[str, Any], case: str) -> list[dict[str, Any]]:
    """The targets of one device; a device not run lists them with the reason."""
    not_run = f"not run: {res['skipped']}" if "skipped" in res else None
    ways = res.get("ways", {})
    rows = []
    for other, factor in (("dense_torch", 3.0), ("vector_quantize_pytorch", 2.0)):
        ratio = median(ways[other]) / median(ways["kohonen_vq"]) if "time" in ways.get(other, {}) else None
        rows.append(rp.target_row(dev, f"forward_vs_{other}", case, ratio, factor, ">=",
                                  f"{other} forward time over KohonenVQ forward time",
                                  not_run or (None if ratio is not None else f"not measured: {other} skipped")))
    ours, dense = (_peak(ways.get(w, {})) for w in ("kohonen_vq", "dense_torch"))
    share = ours / dense if ours is not None and dense else None
    rows.append(rp.target_row(dev, "forward_memory_vs_dense_torch", case, share, 0.25, "<=",
                              "KohonenVQ forward peak extra memory over dense_torch's",
                              not_run or (None if share is not None else "not measured: a memory figure is missing")))
    threshold = FORWARD_OVER_ASSIGN.get(dev)
    rows.append(rp.target_row(dev, "forward_over_assign", case, res.get("forward_over_assign"), threshold, "<=",
                              "KohonenVQ training forward time over kohonen_vq.ops.assign time at the same shape",
                              not_run or (None if threshold else f"no target on {dev} (reported only)")))
    return rows


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"# KohonenVQ training forward{' (QUICK: figures not meaningful)' if doc['quick'] else ''}", "",
             f"N = {doc['settings']['n']}, K = {doc['settings']['k']}, D = {doc['settings']['d']}, grid {GRID}; "
             f"{m['cpu_model']}{', ' + m['gpu_name'] if m.get('gpu_name') else ''}; torch {m['torch']}, "
             f"{m['torch_threads']} threads; {doc['created_utc']}; run took {doc['elapsed_s']:.0f} s."]
    lines += [f"Not run: {d}: {r['skipped']}." for d, r in doc["devices"].items() if "skipped" in r]
    lines += rp.targets_table(doc["targets"])
    for dev, res in doc["devices"].items():
        if "skipped" in res:
            continue
        rows = [[way, r.get("skipped") or f"{median(r) * 1e3:.2f}",
                 "—" if _peak(r) is None else f"{_peak(r) / 2**20:.1f}"] for way, r in res["ways"].items()]
        rows += [[f"kohonen_vq.ops.assign alone{key.removeprefix('assign_alone').replace('_', ', ')}",
                  f"{median(res[key]) * 1e3:.2f}", "—"] for key in ("assign_alone", "assign_alone_tf32") if key in res]
        lines += rp.table(f"{dev} (other processes kept {res.get('other_load_cores', 0):.2f} cores busy)",
                          ["way", "median ms", "peak extra MiB"], rows)
        lines += ["", f"KohonenVQ forward / assign alone: {res['forward_over_assign']:.2f}"]
        if "forward_over_assign_tf32" in res:
            lines += ["", f"With precision='tf32' (reported only): {res['forward_over_assign_tf32']:.2f}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, seconds in total (CI)")
    p.add_argument("--device", default="all", choices=("cpu", "cuda", "all"),
                   help="all = CPU, plus CUDA when available and built")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path)
    p.add_argument("--n", type=int, default=262144)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--d", type=int, default=64)
    args = p.parse_args()
    t0 = time.perf_counter()
    n, repeats, max_s = (2048, 3, 0.2) if args.quick else (args.n, args.repeats, 4.0)
    info = kvq.build_info()
    devices: dict[str, Any] = {}
    for dev, reason in tm.devices_to_run(args.device, info["cuda"]).items():
        devices[dev] = {"skipped": reason} if reason else measure(n, args.k, args.d, torch.device(dev), repeats, max_s)
    case = f"N={n} K={args.k} D={args.d}"
    doc = {"benchmark": "quantizer_forward", "quick": args.quick, "created_utc": rp.now_utc(), "command": sys.argv,
           "machine": tm.machine_info(), "build_info": info,
           "settings": {"n": n, "k": args.k, "d": args.d, "grid": GRID, "repeats": repeats, "max_sample_s": max_s},
           "devices": devices,
           "targets": [row for dev, res in devices.items() for row in device_targets(dev, res, case)],
           "elapsed_s": time.perf_counter() - t0}
    kind = "cuda" if "skipped" not in devices["cuda"] else "cpu"
    rp.write(doc, markdown(doc), args.out or rp.RESULTS / f"{rp.stem('quantizer', kind, args.quick)}.json")


if __name__ == "__main__":
    main()
