"""Gradient-trained baselines (the paper's Table 5): the codebook is an nn.Parameter learned by the
optimiser through van den Oord et al.'s codebook loss, optionally with a SOM-VAE style neighbour term."""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import grid as grids
from .. import ops
from ..distributed import all_reduce_sum_, is_distributed
from ..metrics import perplexity_from_counts
from .base import QuantizerBase, VQOutput, mse_loss, op_input, straight_through


class GradientVQ(QuantizerBase):
    """VQ with a gradient-trained codebook: loss = ||sg(z) - w_k*||^2 + commitment * ||z - sg(w_k*)||^2."""

    _codebook_key = "weight"

    def __init__(self, num_codes: int, dim: int, commitment: float = 0.25, channel_dim: int = -1,
                 grid: Sequence[int] | None = None, precision: str = "exact"):
        super().__init__(num_codes, dim, grid, commitment, channel_dim, precision)
        self.weight = nn.Parameter(torch.randn(self.num_codes, self.dim))
        self.register_buffer("_step", torch.zeros((), dtype=torch.long))

    @property
    def codebook(self) -> torch.Tensor:
        """The (num_codes, dim) prototypes (detached from the graph)."""
        return self.weight.detach()

    @torch.no_grad()
    def init_codebook(self, w0: torch.Tensor) -> None:
        """Sets the codebook to w0 and t = 0."""
        self._check_initial_codebook(w0)
        self.weight.copy_(w0)
        self._step.zero_()

    def _codebook_loss(self, rows: torch.Tensor, indices: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return mse_loss(codes, rows.detach().float())

    def forward(self, z: torch.Tensor) -> VQOutput:
        rows, restore, index_shape = self._flatten(z)
        indices, sqdist = ops.assign(op_input(rows), op_input(self.weight), precision=self.precision)
        codes = F.embedding(indices, self.weight)
        counts = torch.zeros(self.num_codes, device=rows.device).index_add_(
            0, indices, torch.ones_like(indices, dtype=torch.float32))
        if self.training:
            if is_distributed():
                all_reduce_sum_(counts)
            self._step += 1
        quantized, commitment_loss = straight_through(rows, codes, sqdist, self.commitment)
        loss = self._codebook_loss(rows, indices, codes) + commitment_loss
        return VQOutput(restore(quantized), indices.view(index_shape), loss, perplexity_from_counts(counts))


def _neighbour_table(grid: Sequence[int]) -> torch.Tensor:
    """(K, 3^dims - 1) indices of each code's grid neighbours (Chebyshev distance 1), -1 past the border."""
    num_codes = 1
    for s in grid:
        num_codes *= s
    coords = grids.indices_to_coords(torch.arange(num_codes), grid)
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=len(grid)) if any(o)]
    table = []
    for offset in offsets:
        moved = coords + torch.tensor(offset)
        inside = ((moved >= 0) & (moved < torch.tensor(grid))).all(dim=-1)
        table.append(torch.where(inside, grids.coords_to_indices(moved.clamp_min(0), grid), -1))
    return torch.stack(table, dim=1)


class GradientSOMVQ(GradientVQ):
    """SOM-VAE style baseline: the gradient codebook loss also pulls the winner's grid neighbours towards
    sg(z), weighted by ``neighbour_weight`` (averaged over the neighbours that exist)."""

    def __init__(self, num_codes: int, dim: int, grid: Sequence[int] | None = None, neighbour_weight: float = 1.0,
                 commitment: float = 0.25, channel_dim: int = -1, precision: str = "exact"):
        super().__init__(num_codes, dim, commitment=commitment, channel_dim=channel_dim, grid=grid,
                         precision=precision)
        if not (neighbour_weight >= 0 and math.isfinite(neighbour_weight)):
            raise ValueError(f"GradientSOMVQ: neighbour_weight must be finite and >= 0, got {neighbour_weight}")
        self.neighbour_weight = float(neighbour_weight)
        self.register_buffer("neighbours", _neighbour_table(self.grid), persistent=False)

    def _codebook_loss(self, rows: torch.Tensor, indices: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        own = super()._codebook_loss(rows, indices, codes)
        if self.neighbours.shape[1] == 0:
            return own
        nbr = self.neighbours[indices]  # (N, M)
        valid = (nbr >= 0).float()
        pulled = F.embedding(nbr.clamp_min(0), self.weight)  # (N, M, D)
        sq = ((pulled - rows.detach().float().unsqueeze(1)) ** 2).mean(dim=-1)
        neighbour_loss = (sq * valid).sum() / valid.sum().clamp_min(1.0)
        return own + self.neighbour_weight * neighbour_loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, neighbour_weight={self.neighbour_weight}"
