"""Where the time of one KohonenVQ training forward goes: torch.profiler's per-kernel device time at the
VQ-VAE-2 bottom shape (N = 262 144, K = 512, D = 64), next to assign alone. A diagnosis aid for the
forward/assign target of bench_quantizer.py; it prints tables, it judges nothing.

    python benchmarks/profile_forward.py [--device cuda|cpu] [--n N] [--k K] [--precision exact|tf32]
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import kohonen_vq as kvq
from kohonen_vq import ops

STEPS = 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=262144)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--precision", choices=ops.ASSIGN_PRECISIONS, default="exact")
    args = p.parse_args()
    device = torch.device(args.device)
    vq = kvq.KohonenVQ(args.k, args.d, neighbourhood="hard", precision=args.precision).to(device).train()
    z = torch.randn(args.n, args.d, device=device, requires_grad=True)
    calls = {"assign": lambda: ops.assign(z.detach(), vq.codebook, precision=args.precision), "forward": lambda: vq(z)}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, call in calls.items():
        for _ in range(3):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        with profile(activities=activities) as prof:
            for _ in range(STEPS):
                call()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        print(f"\n== {name}: {STEPS} calls, N={args.n} K={args.k} D={args.d} precision={args.precision} "
              f"on {device}")
        print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
