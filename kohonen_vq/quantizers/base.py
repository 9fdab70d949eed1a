"""Shared plumbing of the quantisers: channel handling, output tuple, grid helpers, state checks."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import grid as grids
from .. import ops


def op_input(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, as the native ops take it: they compute in float32 and accept fp32/fp16/bf16, so
    float64 (a ``model.double()``, gradcheck) is lowered to float32."""
    return t.detach().float() if t.dtype == torch.float64 else t.detach()


def mse_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F.mse_loss(a, b)`` in the promoted dtype of the two (torch before 2.14 fails in the backward pass of
    a float32/float64 mix), except that an empty batch gives 0 (connected to the graph) instead of the NaN
    and warning of a mean over no elements."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    return F.mse_loss(a, b) if a.numel() else (a - b).square().sum()


class _StraightThrough(torch.autograd.Function):
    """The quantised output and commitment loss from assign's results, without a pass over the data.

    Forward: ``w`` in ``z``'s dtype (the value of z + sg(w - z)) and ``commitment * mean ||z - w||^2`` summed
    from assign's squared distances. Backward: the identity to ``z``, plus ``2 commitment (z - w) / (N D)``.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, codes: torch.Tensor, sqdist: torch.Tensor,
                commitment: float) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(rows, codes)
        ctx.commitment = commitment
        loss = sqdist.sum() * (commitment / rows.numel()) if rows.numel() else sqdist.new_zeros(())
        return codes.to(rows.dtype), loss

    @staticmethod
    def backward(ctx, grad_quantized: torch.Tensor, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, codes = ctx.saved_tensors
        scale = (grad_loss * (2 * ctx.commitment / max(rows.numel(), 1))).to(rows.dtype)
        return grad_quantized + (rows - codes.to(rows.dtype)) * scale, None, None, None


def straight_through(rows: torch.Tensor, codes: torch.Tensor, sqdist: torch.Tensor,
                     commitment: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z + sg(w - z), commitment * mse(z, sg(w)))`` for rows z (N, D), their codes w (no gradient flows to
    them) and assign's squared distances ``||z - w||^2`` (N,): one lookup's worth of work instead of three
    passes over the batch."""
    return _StraightThrough.apply(rows, codes.detach(), sqdist, commitment)


class VQOutput(NamedTuple):
    """What every quantiser returns; unpacks as ``quantized, indices, loss = vq(z)[:3]``."""

    quantized: torch.Tensor  # z's shape and dtype, straight-through estimator applied
    indices: torch.Tensor  # int64, z's shape without the channel dim
    loss: torch.Tensor  # the quantiser's loss term (commitment, plus codebook terms for gradient VQ)
    perplexity: torch.Tensor  # batch perplexity of the codes (global over ranks in distributed training)


class QuantizerBase(nn.Module):
    """Base of all quantisers: ``num_codes`` codes of size ``dim`` on ``grid``; ``channel_dim`` says
    which dim of the input holds the vector (``-1`` for (..., dim), ``1`` for (B, dim, H, W)); ``precision``
    is the assignment's arithmetic (:func:`kohonen_vq.ops.assign`): ``"exact"`` fp32, or ``"tf32"`` tensor
    cores on CUDA."""

    def __init__(self, num_codes: int, dim: int, grid: Sequence[int] | None, commitment: float, channel_dim: int,
                 precision: str = "exact"):
        super().__init__()
        if precision not in ops.ASSIGN_PRECISIONS:
            raise ValueError(f"{type(self).__name__}: precision must be one of {ops.ASSIGN_PRECISIONS}, "
                             f"got {precision!r}")
        if int(num_codes) < 1:
            raise ValueError(f"{type(self).__name__}: num_codes must be >= 1, got {num_codes}")
        if int(dim) < 1:
            raise ValueError(f"{type(self).__name__}: dim must be >= 1, got {dim}")
        if not (commitment >= 0 and math.isfinite(commitment)):
            raise ValueError(f"{type(self).__name__}: commitment must be finite and >= 0, got {commitment}")
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.grid = grids.resolve_grid(grid, self.num_codes)
        self.commitment = float(commitment)
        self.channel_dim = int(channel_dim)
        self.precision = precision

    # --- shapes -----------------------------------------------------------------------------------
    def _flatten(self, z: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], torch.Size]:
        """(N, dim) rows of z, a function restoring z's layout from rows, and the indices' shape."""
        if not torch.is_floating_point(z):
            raise TypeError(f"{type(self).__name__}: input must be a floating-point tensor, got dtype {z.dtype}")
        if z.dim() < 1 or not -z.dim() <= self.channel_dim < z.dim():
            raise ValueError(f"{type(self).__name__}: channel_dim={self.channel_dim} is invalid for input "
                             f"of shape {tuple(z.shape)}")
        if z.shape[self.channel_dim] != self.dim:
            raise ValueError(f"{type(self).__name__}: input has {z.shape[self.channel_dim]} channels in dim "
                             f"{self.channel_dim} (shape {tuple(z.shape)}), expected dim={self.dim}")
        moved = z.movedim(self.channel_dim, -1)
        rows_shape = moved.shape
        restore = lambda rows: rows.reshape(rows_shape).movedim(-1, self.channel_dim)  # noqa: E731
        return moved.reshape(-1, self.dim), restore, rows_shape[:-1]

    @property
    def step(self) -> int:
        """Number of codebook updates done so far (t): KSOM/EMA updates, or training passes of a gradient
        codebook."""
        return int(self._step)

    def _check_initial_codebook(self, w0: torch.Tensor) -> None:
        if tuple(w0.shape) != (self.num_codes, self.dim):
            raise ValueError(f"init_codebook: w0 must have shape ({self.num_codes}, {self.dim}), got {tuple(w0.shape)}")

    # --- codes and grid (subclasses provide ``codebook``, the (num_codes, dim) prototypes) ----------
    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors of ``indices``, laid out like the input (channel_dim respected)."""
        codes = F.embedding(indices.long(), self.codebook)
        return codes if self.channel_dim == -1 else codes.movedim(-1, self.channel_dim)

    def indices_to_coords(self, indices: torch.Tensor) -> torch.Tensor:
        """Grid coordinates of ``indices`` (one more trailing dim, one entry per grid axis)."""
        return grids.indices_to_coords(indices, self.grid)

    def coords_to_indices(self, coords: torch.Tensor) -> torch.Tensor:
        """Code indices of grid coordinates."""
        return grids.coords_to_indices(coords, self.grid)

    def shift_indices(self, indices: torch.Tensor, offset: int | Sequence[int]) -> torch.Tensor:
        """Moves codes by ``offset`` cells on the grid, clamped at its border (the paper's Fig. 3)."""
        return grids.shift_indices(indices, offset, self.grid)

    # --- state ------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + self._codebook_key
        if key in state_dict and tuple(state_dict[key].shape) != (self.num_codes, self.dim):
            got = tuple(state_dict[key].shape)
            error_msgs.append(f"{type(self).__name__}: the state dict holds a codebook of {got[0]} codes of "
                              f"dim {got[1] if len(got) > 1 else '?'} (shape {got}), but this quantiser has "
                              f"num_codes={self.num_codes}, dim={self.dim}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    _codebook_key = "codebook"

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, grid={self.grid}, commitment={self.commitment}, " \
               f"channel_dim={self.channel_dim}, precision={self.precision!r}"
