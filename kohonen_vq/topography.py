"""How ordered a learned codebook is on its grid: the U-matrix, the decoded-neighbour distance ratio and the
latent perturbation of the paper's Fig. 3. (Topographic error lives in :mod:`kohonen_vq.metrics`.)"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .grid import indices_to_coords, shift_indices


def grid_neighbour_pairs(grid: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Every pair (a, b), a < b, of codes one step apart along one grid axis: (P, 2) int64."""
    codes = torch.arange(math.prod(grid), device=device)
    coords = indices_to_coords(codes, grid)
    pairs, stride = [], 1
    for axis, size in enumerate(grid):
        ahead = codes[coords[:, axis] < size - 1]
        pairs.append(torch.stack([ahead, ahead + stride], dim=1))  # one step along axis: index + stride
        stride *= size
    return torch.cat(pairs)


def u_matrix(codebook: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Mean Euclidean distance of each code to its axis-adjacent grid neighbours, shaped like ``grid``
    (entry ``[c0, c1, ...]`` belongs to the code at those grid coordinates).

    Low values mark smooth regions of the map, ridges the borders between clusters. Codes without a
    neighbour (a 1-cell grid) get 0.
    """
    num_codes = codebook.shape[0]
    if math.prod(grid) != num_codes:
        raise ValueError(f"grid {tuple(grid)} holds {math.prod(grid)} codes, codebook has {num_codes}")
    pairs = grid_neighbour_pairs(grid, codebook.device)
    w = codebook.detach().float()
    dist = (w[pairs[:, 0]] - w[pairs[:, 1]]).norm(dim=1)
    total = torch.zeros(num_codes, device=w.device).index_add_(0, pairs[:, 0], dist).index_add_(0, pairs[:, 1], dist)
    count = torch.bincount(pairs.flatten(), minlength=num_codes).clamp_min(1)
    # Code indices run fastest along axis 0 (kohonen_vq.grid), so the flat vector is the grid in reverse order.
    return (total / count).view(*reversed(grid)).permute(*reversed(range(len(grid))))


def decoded_neighbour_ratio(images: torch.Tensor, grid: Sequence[int], num_random: int = 4096,
                            generator: torch.Generator | None = None) -> float:
    """Mean pixel distance between the decoded images of grid-adjacent codes over that of random code pairs.

    ``images`` holds one decoded image per code (K, ...), e.g. from
    :func:`kohonen_vq.models.decode_constant_codes`. Below 1 the decoder maps grid neighbours to similar
    images (an ordered map); about 1 for a codebook whose grid positions mean nothing.
    """
    flat = images.detach().float().flatten(1)
    num_codes = flat.shape[0]
    if num_codes < 2:
        raise ValueError(f"need at least 2 decoded images, got {num_codes}")
    if math.prod(grid) != num_codes:
        raise ValueError(f"grid {tuple(grid)} holds {math.prod(grid)} codes, but there are {num_codes} images")
    pairs = grid_neighbour_pairs(grid, flat.device)  # not empty: some axis of a grid of >= 2 codes has size >= 2
    near = (flat[pairs[:, 0]] - flat[pairs[:, 1]]).norm(dim=1).mean()
    a = torch.randint(num_codes, (num_random,), generator=generator).to(flat.device)
    b = (a + torch.randint(1, num_codes, (num_random,), generator=generator).to(flat.device)) % num_codes
    return float(near / (flat[a] - flat[b]).norm(dim=1).mean())


def perturbed_indices(indices: torch.Tensor, grid: Sequence[int], offsets: Sequence[int] = range(-3, 4),
                      axis: int | None = None) -> torch.Tensor:
    """The latent indices moved by each offset on the grid (the paper's Fig. 3): (len(offsets), *indices.shape).

    ``axis=None`` moves along every axis at once (a diagonal step on a 2D grid); an int moves along that axis.
    """
    rows = []
    for offset in offsets:
        step: int | list[int] = int(offset)
        if axis is not None:
            step = [0] * len(grid)
            step[axis] = int(offset)
        rows.append(shift_indices(indices, step, grid))
    return torch.stack(rows)
