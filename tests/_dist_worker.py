"""Subprocess body of test_quantizer_distributed.py (importable by name, as torch.multiprocessing's
spawn requires): one gloo rank that trains quantisers on its own share of the data and saves the result, then
runs a long training (``LONG_STEPS`` updates, with a rank-local empty batch and a rank-local NaN batch) and saves
its state at every ``CHECK_EVERY`` steps."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

import kohonen_vq

STEPS = 20
NUM_CODES, DIM = 16, 3
WORLD_SIZE = 2


def make(kind: str, seed: int) -> torch.nn.Module:
    """The quantiser under test, with an initial codebook drawn from ``seed``."""
    torch.manual_seed(seed)
    if kind == "kohonen":
        return kohonen_vq.KohonenVQ(NUM_CODES, DIM, grid=(4, 4), neighbourhood="hard", decay=0.9, channel_dim=1)
    if kind == "ema":
        return kohonen_vq.EMAVQ(NUM_CODES, DIM, decay=0.9, channel_dim=1)
    if kind == "gradient":
        return kohonen_vq.GradientVQ(NUM_CODES, DIM, channel_dim=1)
    raise ValueError(kind)


KINDS = ("kohonen", "ema", "gradient")

LONG_STEPS, CHECK_EVERY = 400, 50
LONG_CODES, LONG_GRID = 64, (8, 8)
EMPTY_STEP, NAN_STEP = 120, 250  # rank 0 gets no rows at EMPTY_STEP, rank 1 a NaN at NAN_STEP


def make_long(kind: str, seed: int) -> torch.nn.Module:
    """The long run's quantisers: a 2D Gaussian KSOM whose neighbourhood shrinks over the run, and EMA-VQ."""
    torch.manual_seed(seed)
    if kind == "kohonen":
        return kohonen_vq.KohonenVQ(LONG_CODES, DIM, grid=LONG_GRID, neighbourhood="gaussian", sigma=2.0, shrink=0.05,
                                    decay=0.95, channel_dim=1)
    return kohonen_vq.EMAVQ(LONG_CODES, DIM, decay=0.95, channel_dim=1)


def long_batch(rank: int, step: int) -> torch.Tensor:
    """Rank ``rank``'s batch at ``step`` of the long run: its own data, drifting slowly over the run."""
    if rank == 0 and step == EMPTY_STEP:
        return torch.zeros(0, DIM, 4, 4)
    g = torch.Generator().manual_seed(10_000 * rank + step)
    z = torch.randn(2, DIM, 4, 4, generator=g) * (1 + rank) + rank + step / LONG_STEPS
    if rank == 1 and step == NAN_STEP:
        z[0, 0, 0, 0] = float("nan")
    return z


def long_run(kind: str, rank: int) -> list[dict[str, torch.Tensor]]:
    """The quantiser's full state after every ``CHECK_EVERY`` steps of the long run."""
    vq = make_long(kind, seed=rank)
    states = []
    for step in range(LONG_STEPS):
        vq(long_batch(rank, step))
        if (step + 1) % CHECK_EVERY == 0:
            states.append({k: v.clone() for k, v in vq.state_dict().items()})
    return states


def batches(rank: int) -> list[torch.Tensor]:
    """Rank ``rank``'s training batches (B, DIM, H, W); the two ranks see different data."""
    g = torch.Generator().manual_seed(1000 + rank)
    return [torch.randn(2, DIM, 3, 4, generator=g) * (1 + rank) + rank for _ in range(STEPS)]


def run(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        result = {}
        for kind in KINDS:
            vq = make(kind, seed=rank)  # different initial codebooks: rank 0's must win
            initial = vq.codebook.clone()
            outs = [vq(z) for z in batches(rank)]
            result[kind] = dict(initial=initial, state={k: v.clone() for k, v in vq.state_dict().items()},
                                indices=[o.indices for o in outs],
                                perplexity=torch.stack([o.perplexity for o in outs]))
        result["long"] = {kind: long_run(kind, rank) for kind in ("kohonen", "ema")}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
