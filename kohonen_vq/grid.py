"""Grids of codebook indices (METHOD.md §3): code k sits at (k mod s0, (k div s0) mod s1, ...)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

Grid = tuple[int, ...]


def auto_grid(num_codes: int) -> Grid:
    """A 2D grid for ``num_codes`` codes, as square as possible, first axis the longer (512 -> (32, 16))."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    short = max(d for d in range(1, math.isqrt(num_codes) + 1) if num_codes % d == 0)
    return (num_codes // short, short)


def resolve_grid(grid: Sequence[int] | None, num_codes: int) -> Grid:
    """Validates ``grid`` against ``num_codes`` (``None`` picks :func:`auto_grid`)."""
    if grid is None:
        return auto_grid(num_codes)
    sizes = tuple(int(s) for s in grid)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"grid must be a non-empty sequence of sizes >= 1, got {tuple(grid)}")
    if math.prod(sizes) != num_codes:
        raise ValueError(f"grid {sizes} holds {math.prod(sizes)} nodes but num_codes is {num_codes}")
    return sizes


def indices_to_coords(indices: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Grid coordinates of code indices: shape ``indices.shape + (len(grid),)``, int64."""
    coords, rest = [], indices.long()
    for size in grid:
        coords.append(rest % size)
        rest = torch.div(rest, size, rounding_mode="floor")
    return torch.stack(coords, dim=-1)


def coords_to_indices(coords: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Code indices of grid coordinates (last dim = axes); the inverse of :func:`indices_to_coords`."""
    if coords.shape[-1] != len(grid):
        raise ValueError(f"coords must end in {len(grid)} axes for grid {tuple(grid)}, got shape {tuple(coords.shape)}")
    index, stride = torch.zeros(coords.shape[:-1], dtype=torch.long, device=coords.device), 1
    for axis, size in enumerate(grid):
        index = index + coords[..., axis].long() * stride
        stride *= size
    return index


def shift_indices(indices: torch.Tensor, offset: int | Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Moves every code by ``offset`` grid cells (one int for all axes, or one per axis), clamped to the grid.

    This is the latent perturbation of the paper's Fig. 3.
    """
    offsets = [int(offset)] * len(grid) if isinstance(offset, int) else [int(o) for o in offset]
    if len(offsets) != len(grid):
        raise ValueError(f"offset needs one value per grid axis ({len(grid)}), got {offsets}")
    coords = indices_to_coords(indices, grid)
    shift = torch.tensor(offsets, dtype=torch.long, device=indices.device)
    upper = torch.tensor(grid, dtype=torch.long, device=indices.device) - 1
    return coords_to_indices(torch.minimum(torch.clamp(coords + shift, min=0), upper), grid)


def are_grid_neighbours(a: torch.Tensor, b: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Whether codes ``a`` and ``b`` are distinct and within Chebyshev distance 1 on the grid (Eq. 14's d(G))."""
    gap = (indices_to_coords(a, grid) - indices_to_coords(b, grid)).abs().amax(dim=-1)
    return gap == 1
