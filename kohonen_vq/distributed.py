"""The few torch.distributed calls the quantisers make. Every rank must make the same calls in the
same order (a collective skipped on one rank hangs the others), so none of them is conditional on data."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sums float32 tensors over all ranks in place, with a single collective."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_from_rank0_(*tensors: torch.Tensor) -> None:
    """Overwrites the tensors on every rank with rank 0's values."""
    for t in tensors:
        dist.broadcast(t, src=0)
