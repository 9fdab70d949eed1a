"""Command line entry point: ``python -m kohonen_vq demo``.

The demo fits a 16x16 Kohonen map (KSOM, hard neighbourhood) and an EMA-VQ codebook of the same size to
random RGB colours with the native ops, and prints quantisation error, codebook usage and how ordered
each codebook is on the grid.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from . import build_info, ops


def _grid_neighbour_ratio(codebook: torch.Tensor, grid: tuple[int, int]) -> float:
    """Mean distance between grid-adjacent codes over that of all code pairs (< 1: an ordered map)."""
    w = codebook.view(grid[1], grid[0], -1)
    adjacent = torch.cat([(w[:, 1:] - w[:, :-1]).norm(dim=-1).flatten(), (w[1:] - w[:-1]).norm(dim=-1).flatten()])
    return (adjacent.mean() / torch.cdist(codebook, codebook).mean()).item()


def _fit(neighbourhood: str, steps: int, batch: int, grid: tuple[int, int], seed: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    num_codes = grid[0] * grid[1]
    codebook = torch.randn(num_codes, 3, generator=gen)
    ema_sums, ema_counts = codebook.clone(), torch.ones(num_codes)
    step, skipped = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    for _ in range(steps):
        x = torch.rand(batch, 3, generator=gen)
        indices, _ = ops.assign(x, codebook)
        sums, counts = ops.cluster_stats(x, indices, num_codes)
        ops.som_update_(codebook, ema_sums, ema_counts, step, skipped, sums, counts, grid=grid,
                        neighbourhood=neighbourhood, shrink=0.1)
    x = torch.rand(8192, 3, generator=gen)
    indices, sqdist = ops.assign(x, codebook)
    return {
        "quantisation_error": sqdist.mean().item(),
        "codebook_usage": indices.unique().numel() / num_codes,
        "grid_neighbour_ratio": _grid_neighbour_ratio(codebook, grid),
    }


def demo(steps: int, batch: int, seed: int) -> None:
    info = build_info()
    print(f"kohonen_vq {info['version']}: CUDA kernels {'built' if info['cuda'] else 'not built'}, "
          f"CPU kernel {info['cpu_isa']}, torch {info['torch_runtime']}")
    grid = (16, 16)
    print(f"Fitting {grid[0]}x{grid[1]} codebooks to random RGB colours ({steps} steps of {batch})")
    print(f"{'method':<14}{'quant. error':>14}{'usage':>8}{'neighbour/all':>15}{'seconds':>9}")
    for name, neighbourhood in (("EMA-VQ", "none"), ("KSOM (hard)", "hard")):
        start = time.perf_counter()
        r = _fit(neighbourhood, steps, batch, grid, seed)
        print(f"{name:<14}{r['quantisation_error']:>14.5f}{r['codebook_usage']:>8.2f}"
              f"{r['grid_neighbour_ratio']:>15.3f}{time.perf_counter() - start:>9.2f}")
    print("neighbour/all < 1 means grid neighbours hold similar colours: a topologically ordered codebook.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kohonen_vq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="fit KSOM and EMA-VQ codebooks to colours with the native ops")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--batch", type=int, default=1024)
    d.add_argument("--seed", type=int, default=0)
    sub.add_parser("info", help="print what the native library was built with (JSON)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.steps, args.batch, args.seed)
    else:
        print(json.dumps(build_info(), indent=2))


if __name__ == "__main__":
    main()
