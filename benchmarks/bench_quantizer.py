"""One training forward of a VQ layer at the VQ-VAE-2 bottom shape (N = 65 536 vectors, K = 512, D = 64):
kohonen_vq.KohonenVQ (hard neighbourhood, 2D grid) against the same equations written densely in plain
PyTorch the way the authors' code does (N x K distances, N x K one-hot, K x K neighbourhood matrix), and
against vector_quantize_pytorch.VectorQuantize (EMA), all measured in the same run. Peak memory of each way
is measured in a fresh process. Prints JSON and writes it (plus a Markdown summary) under benchmarks/results/.

    python benchmarks/bench_quantizer.py [--quick] [--device cpu|cuda] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

import kohonen_vq as kvq  # noqa: E402
from kohonen_vq import reference  # noqa: E402

GRID = (32, 16)
WAYS = ("kohonen_vq", "dense_torch", "vector_quantize_pytorch")


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
    if way == "kohonen_vq":
        return kvq.KohonenVQ(num_codes, dim, grid=GRID, neighbourhood="hard").to(device).train()
    if way == "dense_torch":
        return DenseKSOM(num_codes, dim, device)
    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(dim=dim, codebook_size=num_codes, decay=0.99, commitment_weight=0.25).to(device).train()
    return lambda z: vq(z.unsqueeze(0))


def child(way: str, n: int, num_codes: int, dim: int, device: torch.device) -> dict[str, Any]:
    """Peak memory of one forward, in this fresh process."""
    fn = make_way(way, num_codes, dim, device)
    z = torch.randn(n, dim, device=device)
    fn(z)  # warm-up: allocator pools and lazy initialisation are not the forward's cost
    if device.type == "cuda":
        return {"peak_extra_bytes": _timing.cuda_peak_extra_bytes(lambda: fn(z), device)}
    return _timing.rss_peak_extra_bytes(lambda: fn(z))


def measure(n: int, num_codes: int, dim: int, device: torch.device, repeats: int) -> dict[str, Any]:
    z = torch.randn(n, dim, device=device)
    out: dict[str, Any] = {"n": n, "num_codes": num_codes, "dim": dim, "grid": GRID, "ways": {}}
    for way in WAYS:
        try:
            fn = make_way(way, num_codes, dim, device)
        except ImportError as err:
            out["ways"][way] = {"skipped": f"not installed: {err}"}
            continue
        out["ways"][way] = {"time": _timing.time_call(lambda: fn(z), device, repeats)}
    argvs = [[sys.executable, __file__, "--child", way, "--n", str(n), "--k", str(num_codes), "--d", str(dim),
              "--device", device.type] for way in WAYS if "time" in out["ways"][way]]
    for argv, mem in zip(argvs, _timing.run_json_children(argvs, parallel=1)):
        out["ways"][argv[3]].update(memory=mem)
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    ways = result["ways"]
    ours = ways["kohonen_vq"]
    checks = []
    for other, factor in (("dense_torch", 3.0), ("vector_quantize_pytorch", 2.0)):
        if "time" in ways.get(other, {}):
            ratio = ways[other]["time"]["median_s"] / ours["time"]["median_s"]
            checks.append({"target": f"speed-up over {other} >= {factor}x", "value": ratio, "pass": ratio >= factor})
    ours_mem = ours.get("memory", {}).get("peak_extra_bytes")
    dense_mem = ways["dense_torch"].get("memory", {}).get("peak_extra_bytes")
    if ours_mem is not None and dense_mem:
        share = ours_mem / dense_mem
        checks.append({"target": "peak memory <= 1/4 of dense_torch", "value": share, "pass": share <= 0.25})
    return checks


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# KohonenVQ training forward ({report['device']})", "",
             f"N = {report['result']['n']}, K = {report['result']['num_codes']}, D = {report['result']['dim']}, "
             f"grid {tuple(report['result']['grid'])}, machine: {report['machine'].get('gpu_name') or report['machine']['cpu_model']}, "
             f"torch {report['machine']['torch']}, {report['machine']['torch_threads']} threads", "",
             "| way | median ms | peak extra MiB |", "|---|---|---|"]
    for way, r in report["result"]["ways"].items():
        if "time" not in r:
            lines.append(f"| {way} | {r.get('skipped', '-')} | |")
            continue
        mem = r.get("memory", {}).get("peak_extra_bytes")
        lines.append(f"| {way} | {r['time']['median_s'] * 1e3:.2f} | {'-' if mem is None else f'{mem / 2**20:.1f}'} |")
    lines += ["", "| target | value | |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['value']:.3g} | {'PASS' if c['pass'] else 'FAIL'} |" for c in report["targets"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, seconds in total (CI)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path)
    p.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=65536)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--d", type=int, default=64)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.k, args.d, device)))
        return
    n = 2048 if args.quick else args.n
    result = measure(n, args.k, args.d, device, 3 if args.quick else args.repeats)
    report = {"benchmark": "quantizer_forward", "device": device.type, "quick": args.quick,
              "machine": _timing.machine_info(), "build_info": kvq.build_info(), "result": result}
    report["targets"] = targets(result)
    out = args.out or Path(__file__).parent / "results" / (
        f"quantizer-{device.type}-{_timing.machine_tag(device.type)}{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
