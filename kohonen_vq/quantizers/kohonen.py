"""KSOM and EMA-VQ quantisers: the codebook is learned by the native fused update, not by gradients."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import ops
from ..distributed import all_reduce_sum_, broadcast_from_rank0_, is_distributed
from ..metrics import perplexity_from_counts
from .base import QuantizerBase, VQOutput, op_input, straight_through

_STATE_BUFFERS = ("codebook", "ema_sums", "ema_counts")


class KohonenVQ(QuantizerBase):
    """Vector quantiser whose codebook is a Kohonen self-organising map (Eqs. 9-11, METHOD.md §2-3).

    Training mode: each batch is assigned to the current codebook (Eq. 2), the output codes are looked up
    before the update, then (w, m, N, t) are updated in place by the native op. Under torch.distributed the
    batch statistics are summed over ranks first, so all ranks keep the same codebook (rank 0's initial
    one). Eval mode never changes a buffer. A batch with NaN/Inf leaves the codebook as it was and is
    counted in ``skipped_batches`` (``strict=True`` raises instead).
    """

    def __init__(self, num_codes: int, dim: int, grid: Sequence[int] | None = None, neighbourhood: str = "hard",
                 shrink: float = 0.1, sigma: float = 1.0, base: float = 10.0, decay: float = 0.99,
                 eps: float = 1e-5, init_count: float = 1.0, update_empty: bool = True, commitment: float = 0.25,
                 channel_dim: int = -1, strict: bool = False, precision: str = "exact"):
        super().__init__(num_codes, dim, grid, commitment, channel_dim, precision)
        if neighbourhood not in ops.NEIGHBOURHOODS:
            raise ValueError(f"{type(self).__name__}: neighbourhood must be one of {ops.NEIGHBOURHOODS}, "
                             f"got {neighbourhood!r}")
        # Finite as well: an infinite shrink, eps or init_count makes the update evaluate inf * 0 or inf / inf
        # and write NaN into the EMA state (NaN fails every comparison, so it is rejected too).
        for name, value, ok, bound in (("shrink", shrink, shrink >= 0, ">= 0"), ("sigma", sigma, sigma > 0, "> 0"),
                                       ("base", base, base > 0, "> 0"), ("decay", decay, 0 <= decay < 1, "in [0, 1)"),
                                       ("eps", eps, eps >= 0, ">= 0"), ("init_count", init_count, init_count >= 0, ">= 0")):
            if not (ok and math.isfinite(value)):
                raise ValueError(f"{type(self).__name__}: {name} must be finite and {bound}, got {value}")
        self.neighbourhood, self.shrink, self.sigma, self.base = neighbourhood, float(shrink), float(sigma), float(base)
        self.decay, self.eps, self.init_count = float(decay), float(eps), float(init_count)
        self.update_empty, self.strict = bool(update_empty), bool(strict)
        self.register_buffer("codebook", torch.empty(self.num_codes, self.dim))
        self.register_buffer("ema_sums", torch.empty(self.num_codes, self.dim))
        self.register_buffer("ema_counts", torch.empty(self.num_codes))
        self.register_buffer("_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.long))
        self._needs_broadcast = True
        self.init_codebook(torch.randn(self.num_codes, self.dim))  # w(0) ~ N(0, I), METHOD.md §2

    @torch.no_grad()
    def init_codebook(self, w0: torch.Tensor) -> None:
        """Sets w = m = w0, N = init_count, t = 0 (rank 0's values win at the next distributed update)."""
        self._check_initial_codebook(w0)
        self.codebook.copy_(w0)
        self.ema_sums.copy_(w0)
        self.ema_counts.fill_(self.init_count)
        self._step.zero_()
        self._needs_broadcast = True

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        # A checkpoint may be loaded on some ranks only: rank 0's state is shared again at the next update.
        self._needs_broadcast = True

    def _apply(self, fn, recurse=True):
        # .half() / .to(bfloat16) must not lower the codebook state: it is float32 by contract. Convert from
        # the buffers as they were, not back from fn's result, which would round them through fp16/bf16.
        before = {name: getattr(self, name) for name in _STATE_BUFFERS}
        super()._apply(fn, recurse)
        for name, old in before.items():
            buf = getattr(self, name)
            if buf.dtype != torch.float32:
                setattr(self, name, old.to(device=buf.device, dtype=torch.float32))
        return self

    def _update(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # The indices come from assign, always in range: no range check, so no device synchronisation.
        sums, counts = ops.cluster_stats(x, indices, self.num_codes, check_range=False)
        if is_distributed():
            all_reduce_sum_(sums, counts)
        skipped_before = self.skipped_batches.clone() if self.strict else None
        ops.som_update_(self.codebook, self.ema_sums, self.ema_counts, self._step, self.skipped_batches, sums,
                        counts, grid=self.grid, neighbourhood=self.neighbourhood, shrink=self.shrink,
                        sigma=self.sigma, base=self.base, decay=self.decay, eps=self.eps,
                        update_empty=self.update_empty)
        if skipped_before is not None and bool(self.skipped_batches != skipped_before):
            self.skipped_batches.copy_(skipped_before)  # strict: raise instead of counting; no state changes
            raise FloatingPointError(f"{type(self).__name__}: the batch holds NaN or Inf; the codebook was left "
                                     f"unchanged (strict=True)")
        return counts

    def forward(self, z: torch.Tensor) -> VQOutput:
        rows, restore, index_shape = self._flatten(z)
        x = op_input(rows)
        if self.training and self._needs_broadcast and is_distributed():
            # Before the assignment: every rank must assign its first batch to rank 0's codebook too.
            broadcast_from_rank0_(self.codebook, self.ema_sums, self.ema_counts, self._step)
            self._needs_broadcast = False
        indices, sqdist = ops.assign(x, self.codebook, precision=self.precision)
        # Looked up before this step's update, by an op: when z requires grad, inductor (torch 2.14) inlines an
        # embedding read into its consumers and can run them after som_update_ has mutated the codebook in
        # place (silently returning the updated codes). Indices from assign need no range check.
        codes = ops.lookup(self.codebook, indices, check_range=False)
        if self.training:
            counts = self._update(x, indices)
        else:
            ones = torch.ones_like(indices, dtype=torch.float32)
            counts = torch.zeros(self.num_codes, device=x.device).index_add_(0, indices, ones)
        # Straight-through estimator whose value is exactly w (in z's dtype), and the commitment loss.
        quantized, loss = straight_through(rows, codes, sqdist, self.commitment)
        return VQOutput(restore(quantized), indices.view(index_shape), loss, perplexity_from_counts(counts))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, neighbourhood={self.neighbourhood!r}, shrink={self.shrink}, "
                f"sigma={self.sigma}, base={self.base}, decay={self.decay}, eps={self.eps}, "
                f"init_count={self.init_count}, update_empty={self.update_empty}")


class EMAVQ(KohonenVQ):
    """EMA-VQ (Eqs. 6-8): KSOM with no neighbours (Remark 2.1). ``grid`` only lays codes out for
    visualisation and the grid helpers; it does not affect learning."""

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, eps: float = 1e-5, init_count: float = 1.0,
                 update_empty: bool = True, commitment: float = 0.25, channel_dim: int = -1,
                 grid: Sequence[int] | None = None, strict: bool = False, precision: str = "exact"):
        super().__init__(num_codes, dim, grid=grid, neighbourhood="none", decay=decay, eps=eps, init_count=init_count,
                         update_empty=update_empty, commitment=commitment, channel_dim=channel_dim, strict=strict,
                         precision=precision)
