"""Codebook metrics: perplexity (Appendix C.1), usage, quantisation error, SOM topographic error."""
from __future__ import annotations

from typing import Sequence

import torch

from .grid import are_grid_neighbours


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(-sum_k p_k log p_k) with p_k = counts_k / sum(counts); 0 for an empty batch."""
    counts = counts.float()
    p = counts / counts.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()) * (counts.sum() > 0)


def perplexity(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Batch perplexity of code indices (any shape)."""
    return perplexity_from_counts(torch.bincount(indices.flatten(), minlength=num_codes))


def codebook_usage(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Fraction of the ``num_codes`` codes hit at least once by ``indices``."""
    return (torch.bincount(indices.flatten(), minlength=num_codes) > 0).float().mean()


def quantisation_error(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Mean squared distance from each row of ``x`` (N, D) to its nearest code."""
    from . import ops

    return ops.assign(x, codebook)[1].mean()


def two_nearest(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Indices (N, 2) of the nearest and second-nearest codes, in chunks so memory stays chunk x K."""
    parts = [torch.cdist(x[i:i + chunk].float(), codebook.float()).topk(2, largest=False).indices
             for i in range(0, x.shape[0], chunk)]
    return torch.cat(parts) if parts else torch.empty(0, 2, dtype=torch.long, device=x.device)


def topographic_error(x: torch.Tensor, codebook: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Share of rows of ``x`` whose two nearest codes are not grid neighbours (0 = perfectly ordered map)."""
    if codebook.shape[0] < 2 or x.shape[0] == 0:
        return torch.zeros((), device=x.device)
    pair = two_nearest(x, codebook)
    return (~are_grid_neighbours(pair[:, 0], pair[:, 1], grid)).float().mean()
