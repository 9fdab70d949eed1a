"""Training throughput of the ``cifar10-vqvae`` preset (VQ-VAE of METHOD.md §4, K = 512, batch 256, AdamW, grad
clip 1.0) on synthetic data of CIFAR-10's shape, and the share of each step spent in the quantiser's forward
(assignment, statistics and the codebook update: all of its work, its backward being the straight-through
identity). Uses the trainer's own ``train_step``. Prints JSON and writes it under benchmarks/results/.

    python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--steps N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
import _timing  # noqa: E402

from kohonen_vq.train import resolve, train_step  # noqa: E402
from kohonen_vq.train.runtime import deterministic  # noqa: E402
from kohonen_vq.train.trainer import build  # noqa: E402

TARGET_SHARE = 0.05  # the target: the quantiser takes at most 5 % of a training step


class QuantizerTimer:
    """Wall time spent inside a module's forward, via forward pre- and post-hooks (synchronising on CUDA)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device, self.seconds, self._start = device, 0.0, 0.0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _before(self, *_: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start


def measure(quantizer: str, device: torch.device, batch_size: int, steps: int, warmup: int) -> dict[str, Any]:
    cfg = resolve({"preset": "cifar10-vqvae", "data_root": "(synthetic)", "quantizer": quantizer,
                   "batch_size": batch_size})
    torch.manual_seed(0)
    model = build(cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    timer = QuantizerTimer(model.quantizer, device)
    x = torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    step_s, quantizer_s = [], []
    with deterministic(device):
        for i in range(warmup + steps):
            before = timer.seconds
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            train_step(model, optimizer, x, cfg.grad_clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                step_s.append(time.perf_counter() - start)
                quantizer_s.append(timer.seconds - before)
    median = statistics.median(step_s)
    share = sum(quantizer_s) / sum(step_s)
    return {"quantizer": quantizer, "batch_size": batch_size, "steps": steps, "step_median_s": median,
            "step_min_s": min(step_s), "images_per_s": batch_size / median,
            "quantizer_forward_median_s": statistics.median(quantizer_s), "quantizer_share": share,
            "target": f"quantizer share <= {TARGET_SHARE:.0%}", "pass": share <= TARGET_SHARE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quantizers", nargs="+", default=["ksom", "ema"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on CPU, 50 on CUDA)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 timed steps; figures mean nothing")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/train-<device>-<tag>.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = 2 if args.quick else args.steps or (50 if device.type == "cuda" else 10)
    load_before = os.getloadavg()[0]  # other work on the machine slows every figure but the share
    cases = [measure(q, device, args.batch_size, steps, warmup=1 if args.quick else 3) for q in args.quantizers]
    results = {"benchmark": "train", "preset": "cifar10-vqvae", "data": "synthetic (B, 3, 32, 32) N(0, 1)",
               "device": device.type, "machine": _timing.machine_info(), "quick": args.quick,
               "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]}, "cases": cases}
    out = args.out or _report.RESULTS / f"{_report.stem('train', device.type, args.quick)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
