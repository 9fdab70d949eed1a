"""The data of a run: its datasets, and a batch order that is a pure function of (seed, step).

Epoch e is a permutation drawn from a generator seeded with (seed, e); step s takes the s-th slice of
``batch_size`` images of that order (incomplete slices are dropped). So a resumed run sees exactly the batches
the uninterrupted run would have, with no sampler state to save, and the ranks of a torchrun job split each
global batch between them (rank r takes positions r, r + world_size, ...).
"""
from __future__ import annotations

import signal
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..data import ImageDataset, build_dataset
from .config import TrainConfig


class StepBatches(Sampler[list[int]]):
    """Dataset indices of steps ``start`` .. ``stop - 1``, this rank's share of each global batch."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world_size: int = 1):
        if num_items < batch_size:
            raise ValueError(f"the training set holds {num_items} images, fewer than one batch of {batch_size}: "
                             f"lower --batch-size")
        if batch_size % world_size:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the number of ranks ({world_size})")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.steps_per_epoch = num_items // batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch``."""
        if epoch != self._epoch:
            seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0])
            self._order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(seed))
            self._epoch = epoch
        return self._order

    def batch(self, step: int) -> list[int]:
        """This rank's indices of step ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        chunk = self.order(epoch)[position * self.batch_size:(position + 1) * self.batch_size]
        return chunk[self.rank::self.world_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batch(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def build_datasets(cfg: TrainConfig) -> tuple[ImageDataset, dict[str, ImageDataset]]:
    """The training set and the named validation sets of ``cfg.dataset`` (faces has two)."""
    if cfg.dataset == "samples":
        return (build_dataset("samples", "train", patch=cfg.image_size),
                {"val": build_dataset("samples", "val", patch=cfg.image_size)})
    kwargs = {} if cfg.dataset == "cifar10" else {"size": cfg.image_size}
    train = build_dataset(cfg.dataset, "train", root=cfg.data_root, **kwargs)
    val = build_dataset(cfg.dataset, "val", root=cfg.data_root, **kwargs)
    return train, val if isinstance(val, dict) else {"val": val}


def _ignore_stop_signals(worker_id: int) -> None:
    # Ctrl-C, and a batch scheduler's SIGTERM, reach the whole process group: workers must survive them so the
    # main process can finish the step, save and exit cleanly (it stops them itself).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def train_loader(dataset: Dataset, cfg: TrainConfig, start: int, rank: int, world_size: int,
                 pin_memory: bool) -> DataLoader:
    """Batches of steps ``start`` .. ``cfg.max_steps - 1`` (this rank's share)."""
    sampler = StepBatches(len(dataset), cfg.batch_size, cfg.seed, start, cfg.max_steps, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=pin_memory,
                      worker_init_fn=_ignore_stop_signals)


def val_loader(dataset: Dataset, cfg: TrainConfig, rank: int, world_size: int, pin_memory: bool) -> DataLoader:
    """This rank's share (every world_size-th image) of the first ``cfg.val_limit`` validation images."""
    count = len(dataset) if cfg.val_limit is None else min(cfg.val_limit, len(dataset))
    return DataLoader(Subset(dataset, range(rank, count, world_size)), batch_size=cfg.val_batch_size or cfg.batch_size,
                      num_workers=cfg.workers, pin_memory=pin_memory, worker_init_fn=_ignore_stop_signals)
