"""Subprocess body of test_quantizer_distributed.py (importable by name, as torch.multiprocessing's
spawn requires): one gloo rank that trains quantisers on its own share of the data and saves the result."""
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
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
