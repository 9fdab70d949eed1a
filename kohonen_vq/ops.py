"""Python entry points of the native ops (namespace ``torch.ops.kohonen_vq``).

The same ops are visible to ``torch.compile`` (through their meta kernels) and to C++ (LibTorch) through
the dispatcher. Equations and defaults follow METHOD.md §1-3; ``kohonen_vq.reference`` is the plain
PyTorch statement of the same maths.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._native import load_library

load_library()

NEIGHBOURHOODS = ("none", "hard", "gaussian", "exponential")


ASSIGN_PRECISIONS = ("exact", "tf32")


def assign(x: torch.Tensor, codebook: torch.Tensor, *,
           precision: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code of each row of ``x`` (N, D) in ``codebook`` (K, D) by squared Euclidean distance.

    Returns ``(indices, sqdist)``: int64 (N,) with ties resolved to the lowest index, and float32 (N,)
    squared distances to the chosen code. Inputs may be float32, float16 or bfloat16; arithmetic is
    float32. Extra memory is O(N + K): no N x K matrix is formed. Rows containing NaN map to code 0.

    ``precision="tf32"`` searches with TF32 tensor-core products on CUDA (compute capability >= 8.0): a
    code whose distance is within TF32 rounding (~1e-3 relative) of the nearest one may win, and
    ``sqdist`` is still the float32 distance to the code chosen. The CPU has no TF32 unit and runs the
    exact search for both settings.
    """
    return torch.ops.kohonen_vq.assign(x, codebook, precision=precision)


def lookup(codebook: torch.Tensor, indices: torch.Tensor, *, check_range: bool = True) -> torch.Tensor:
    """``codebook[indices]``: the (N, D) codes of ``indices`` (N,), int64 or int32, as a new tensor in the
    codebook's dtype.

    An op boundary, so ``torch.compile`` cannot move this read after an in-place update of the codebook.
    Indices outside ``[0, K)`` raise; ``check_range=False`` skips that check on CUDA, where it costs a
    device synchronisation (for indices that come from :func:`assign`), and such rows are then NaN.
    """
    return torch.ops.kohonen_vq.lookup(codebook, indices, check_range=check_range)


def cluster_stats(x: torch.Tensor, indices: torch.Tensor, num_codes: int, *,
                  check_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code sums (K, D) and member counts (K,) of the rows of ``x`` assigned by ``indices``.

    Both float32. On CPU the result is bit-identical for any thread count. Indices outside
    ``[0, num_codes)`` raise; ``check_range=False`` skips that check on CUDA, where it costs a device
    synchronisation (for indices that come from :func:`assign`), and out-of-range rows are then left out.
    The CPU always checks (it costs nothing there).
    """
    return torch.ops.kohonen_vq.cluster_stats(x, indices, num_codes, check_range=check_range)


def som_update_(
    codebook: torch.Tensor,
    ema_sums: torch.Tensor,
    ema_counts: torch.Tensor,
    step: torch.Tensor,
    skipped: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    *,
    grid: Sequence[int],
    neighbourhood: str = "hard",
    shrink: float = 0.1,
    sigma: float = 1.0,
    base: float = 10.0,
    decay: float = 0.99,
    eps: float = 1e-5,
    update_empty: bool = True,
) -> None:
    """In-place KSOM update of (codebook w, EMA sums m, EMA counts N) from one batch's ``sums``/``counts``.

    ``t = step`` (an int64 one-element tensor on the codebook's device) selects the neighbourhood
    A^(t): ``none`` (EMA-VQ), ``hard`` (Eq. 15, weight 1/(1+shrink*t) within Chebyshev distance 1),
    ``gaussian`` (Eq. 16, sigma(t)^2 = sigma^2/(1+shrink*t)) or ``exponential``
    (exp(-||d|| (1+shrink*t)/base), the authors' code). With ``update_empty`` every code's EMAs decay
    and the counts are Laplace-smoothed (eps); without it, codes with zero mixed count keep their state.
    On success ``step`` is incremented; if ``sums`` or ``counts`` hold NaN/Inf, or mixing them through the
    neighbourhood overflows float32, nothing changes but ``skipped`` is incremented (detected on the device,
    no host synchronisation).
    """
    torch.ops.kohonen_vq.som_update_(
        codebook, ema_sums, ema_counts, step, skipped, sums, counts, list(grid), neighbourhood,
        float(shrink), float(sigma), float(base), float(decay), float(eps), bool(update_empty),
    )


def set_cpu_isa(name: str) -> str:
    """Selects the CPU assignment kernel ("auto", "generic", "avx2", "avx512"); returns the previous one."""
    return torch.ops.kohonen_vq.set_cpu_isa(name)
