"""Plain PyTorch statement of the KSOM / EMA-VQ maths, written for reading and for testing the native ops.

Everything is dense (N x K distances, N x K one-hot, K x K neighbourhood matrix), so it is only meant for
small sizes. Equation numbers refer to Irie, Csordás & Schmidhuber (2023), "Topological Neural Discrete
Representation Learning à la Kohonen"; conventions and defaults are those of METHOD.md §1-3. This module
deliberately does not import the native ops.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

NEIGHBOURHOODS = ("none", "hard", "gaussian", "exponential")


def assign(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: ``k*_i = argmin_k ||x_i - w_k||^2`` for x (N, D) and codebook (K, D).

    Squared distances are formed in float32 as a full N x K matrix; ``argmin`` returns the first minimum,
    so ties go to the lowest index. Returns (indices int64 (N,), squared distances float32 (N,)).
    """
    dist = ((x.float()[:, None] - codebook.float()[None]) ** 2).sum(-1)
    indices = dist.argmin(dim=1)
    return indices, dist.gather(1, indices[:, None]).squeeze(1)


def cluster_stats(x: torch.Tensor, indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch terms of Eqs. 6-7: ``S_k = sum_{i in C_k} x_i`` (K, D) and ``c_k = |C_k|`` (K,).

    Computed as a one-hot (N, K) matrix product in float64, returned as float32.
    """
    one_hot = torch.nn.functional.one_hot(indices.long(), num_codes).double()
    return (one_hot.T @ x.double()).float(), one_hot.sum(0).float()


def grid_coordinates(grid: Sequence[int]) -> torch.Tensor:
    """G(k) of Appendix A.1 as a (K, dims) int64 tensor: code k sits at (k mod s0, (k div s0) mod s1, ...)."""
    k = torch.arange(math.prod(grid))
    coords, stride = [], 1
    for size in grid:
        coords.append(k // stride % size)
        stride *= size
    return torch.stack(coords, dim=1)


def neighbourhood_matrix(
    grid: Sequence[int],
    kind: str,
    step: int,
    shrink: float = 0.1,
    sigma: float = 1.0,
    base: float = 10.0,
) -> torch.Tensor:
    """Dense float32 K x K neighbourhood matrix A^(t) at t = ``step`` (symmetric).

    - ``none``: the identity (Remark A.1), which turns KSOM into EMA-VQ (Remark 2.1).
    - ``hard`` (Eq. 15): 1 on the diagonal, 1/(1 + shrink t) for nodes within Chebyshev distance 1, else 0.
      In 1D and 2D this is ``||G(i) - G(j)|| <= d(G)`` with d = 1 and sqrt(2); it generalises as sqrt(dims).
    - ``gaussian`` (Eq. 16): exp(-||G(i) - G(j)||^2 / sigma(t)^2) with sigma(t)^2 = sigma^2 / (1 + shrink t).
    - ``exponential`` (the authors' code): exp(-||G(i) - G(j)|| (1 + shrink t) / base).

    Weights are evaluated in float64 and rounded to float32, so those below float32's range are exactly 0.
    """
    coords = grid_coordinates(grid).double()
    diff = coords[:, None] - coords[None]
    sq_dist = (diff**2).sum(-1)
    growth = 1.0 + shrink * step
    if kind == "none":
        a = torch.eye(len(coords), dtype=torch.float64)
    elif kind == "hard":
        near = diff.abs().amax(-1) <= 1
        a = near.double() / growth
        a.fill_diagonal_(1.0)
    elif kind == "gaussian":
        a = torch.exp(-sq_dist * growth / sigma**2)
    elif kind == "exponential":
        a = torch.exp(-sq_dist.sqrt() * growth / base)
    else:
        raise ValueError(f"unknown neighbourhood {kind!r}; expected one of {NEIGHBOURHOODS}")
    a.fill_diagonal_(1.0)  # A_ii = 1 by definition, also where the exponent is 0 * inf
    return a.float()


def laplace_smooth(counts: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Additive smoothing of Sec. 2.3: ``(N_k + eps) / (sum_j N_j + K eps) * sum_j N_j`` (total preserved)."""
    total = counts.sum()
    if total == 0:  # nothing counted yet: 0, not 0/0
        return torch.zeros_like(counts)
    return (counts + eps) / (total + counts.numel() * eps) * total


def som_update(
    codebook: torch.Tensor,
    ema_sums: torch.Tensor,
    ema_counts: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    *,
    grid: Sequence[int],
    neighbourhood: str = "hard",
    step: int = 0,
    shrink: float = 0.1,
    sigma: float = 1.0,
    base: float = 10.0,
    decay: float = 0.99,
    eps: float = 1e-5,
    update_empty: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One KSOM update (Eqs. 9-11; Eqs. 6-8 when ``neighbourhood="none"``); returns new (w, m, N) in float32.

    The batch statistics (``sums`` S, ``counts`` c, from :func:`cluster_stats`) are first mixed through
    A = A^(t): ``c'_k = sum_j A_jk c_j``, ``S'_k = sum_j A_jk S_j``. Then (METHOD.md §2), with gamma = decay:

    - ``update_empty=True``: every code ``N <- gamma N + (1-gamma) c'``, ``m <- gamma m + (1-gamma) S'``;
      N is Laplace-smoothed and stored back; ``w = m / N`` where N > 0 (elsewhere w is kept).
    - ``update_empty=False``: only codes with ``c'_k != 0`` update N and m, and get ``w = m / N`` without
      smoothing; the others keep N, m and w.

    Arithmetic is float64. Skipping non-finite batches and advancing ``t`` are the caller's business.
    """
    a = neighbourhood_matrix(grid, neighbourhood, step, shrink, sigma, base).double()
    mixed_counts = a.T @ counts.double()
    mixed_sums = a.T @ sums.double()
    w, m, n = codebook.double(), ema_sums.double(), ema_counts.double()
    if update_empty:
        n = laplace_smooth(decay * n + (1 - decay) * mixed_counts, eps)
        m = decay * m + (1 - decay) * mixed_sums
        written = n > 0
    else:
        written = mixed_counts != 0
        n = torch.where(written, decay * n + (1 - decay) * mixed_counts, n)
        m = torch.where(written[:, None], decay * m + (1 - decay) * mixed_sums, m)
        written &= n != 0
    w = torch.where(written[:, None], m / n[:, None], w)
    return w.float(), m.float(), n.float()
