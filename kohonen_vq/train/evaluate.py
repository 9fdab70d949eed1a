"""Validation (METHOD.md §5): eval mode, so no codebook update, no step counted and no commitment term;
plain per-element MSE in the normalised space over the whole validation split, plus codebook statistics."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..metrics import perplexity_from_counts, topographic_error

TOPOGRAPHIC_ROWS = 65536  # latent vectors per level and rank used for the topographic error (a cdist per row)


@torch.no_grad()
def evaluate(model: nn.Module, loaders: dict[str, DataLoader], device: torch.device,
             distributed: bool = False) -> dict[str, float]:
    """Validation metrics of ``model`` (a VQVAE / VQVAE2, not a DDP wrapper) over ``loaders``.

    Returns ``val_loss`` (MSE pooled over all sets), ``val_loss_<set>`` when there are several sets, and per
    level ``val_perplexity_<level>`` and ``usage_<level>`` (over every validation vector) and
    ``topographic_error_<level>`` (over the first ``TOPOGRAPHIC_ROWS`` vectors of each rank). Under
    torch.distributed each rank passes its share of the data; the sums are all-reduced once.
    """
    quantizers = model.quantizers
    levels = list(quantizers)
    # Every statistic is a sum, so ranks can add theirs: [sse, elements] per set; code counts per level;
    # [wrong, rows] of the topographic error per level.
    sse = torch.zeros(len(loaders), 2, dtype=torch.float64, device=device)
    counts = {level: torch.zeros(q.num_codes, dtype=torch.float64, device=device) for level, q in quantizers.items()}
    topo = torch.zeros(len(levels), 2, dtype=torch.float64, device=device)

    def record(level: str, i: int, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        counts[level] += torch.bincount(out.indices.flatten(), minlength=module.num_codes)
        room = TOPOGRAPHIC_ROWS - int(topo[i, 1])
        if room > 0:
            rows = args[0].detach().movedim(1, -1).reshape(-1, module.dim)[:room]
            topo[i] += torch.stack([topographic_error(rows, module.codebook, module.grid) * len(rows),
                                    torch.tensor(float(len(rows)), device=device)]).double()

    hooks = [q.register_forward_hook(lambda m, a, o, level=level, i=i: record(level, i, m, a, o))
             for i, (level, q) in enumerate(quantizers.items())]
    was_training = model.training
    model.eval()
    try:
        for j, loader in enumerate(loaders.values()):
            for x in loader:
                x = x.to(device, non_blocking=True)
                recon = model(x).recon
                sse[j] += torch.stack([F.mse_loss(recon, x, reduction="sum").double(),
                                       torch.tensor(float(x.numel()), device=device, dtype=torch.float64)])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if distributed:
        flat = torch.cat([sse.flatten(), *counts.values(), topo.flatten()])
        dist.all_reduce(flat)
        sse = flat[:sse.numel()].view_as(sse)
        offset = sse.numel()
        for level in levels:
            counts[level] = flat[offset:offset + counts[level].numel()]
            offset += counts[level].numel()
        topo = flat[offset:].view_as(topo)

    result = {"val_loss": (sse[:, 0].sum() / sse[:, 1].sum()).item()}
    if len(loaders) > 1:
        result.update({f"val_loss_{name}": (sse[j, 0] / sse[j, 1]).item() for j, name in enumerate(loaders)})
    for i, level in enumerate(levels):
        result[f"val_perplexity_{level}"] = perplexity_from_counts(counts[level]).item()
        result[f"usage_{level}"] = (counts[level] > 0).double().mean().item()
        result[f"topographic_error_{level}"] = (topo[i, 0] / topo[i, 1].clamp_min(1)).item()
    return result
