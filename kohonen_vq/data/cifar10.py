"""CIFAR-10 with the paper's protocol (METHOD.md §5): validation is a fixed, seeded 20 % of the 50 000
training images, training the other 80 %; pixels are z-scored per channel."""
from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from torchvision.datasets import CIFAR10

from .common import CIFAR10_NORMALIZATION, TensorImages, check_split, require_dir

FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
FILES = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
HINT = (f"Expected the python version of CIFAR-10: root/{FOLDER}/ holding {', '.join(FILES)}. Get it from "
        f"{CIFAR10.url} (https://www.cs.toronto.edu/~kriz/cifar.html) and extract it into root.")


class _UncheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 reader without the md5 checks, for copies that are not the official files."""

    def _check_integrity(self) -> bool:
        return True  # presence of every file is checked by ``cifar10`` before this class is used

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _read(root: str, train: bool, verify_checksums: bool) -> torch.Tensor:
    """The uint8 (N, 3, 32, 32) images of the training (or test) batches."""
    if verify_checksums:
        try:
            reader = CIFAR10(root, train=train, download=False)
        except RuntimeError as e:  # torchvision's "not found or corrupted", raised on an md5 mismatch
            raise ValueError(f"the files in {os.path.join(root, FOLDER)!r} do not match the md5 checksums of the "
                             f"official CIFAR-10 release ({e}). For a deliberately re-packed copy (e.g. a subset) "
                             f"pass verify_checksums=False. {HINT}") from e
    else:
        try:
            reader = _UncheckedCIFAR10(root, train=train, download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise ValueError(f"malformed CIFAR-10 batch files in {os.path.join(root, FOLDER)!r}: "
                             f"{type(e).__name__}: {e}. {HINT}") from e
    return torch.from_numpy(reader.data).permute(0, 3, 1, 2).contiguous()


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, val) indices of a seeded random split of ``range(n)``; val has round(n * val_fraction)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def cifar10(root: str | os.PathLike[Any], split: str = "train", val_fraction: float = 0.2, split_seed: int = 0,
            verify_checksums: bool = True) -> TensorImages:
    """CIFAR-10 images, z-scored per channel with mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255.

    ``root`` holds ``cifar-10-batches-py`` (torchvision's layout; nothing is downloaded). ``split``:
    ``"train"`` / ``"val"`` (the seeded ``val_fraction`` split of the training batches) or ``"test"``
    (the test batch, which the paper does not use). ``verify_checksums=False`` skips torchvision's md5 checks,
    for copies that are not byte-identical to the official release (subsets, re-pickled files).
    """
    check_split(split, ("train", "val", "test"))
    root = require_dir(root, "CIFAR-10 root", HINT)
    if os.path.basename(os.path.normpath(root)) == FOLDER:  # accept the batches folder itself, too
        root = os.path.dirname(os.path.normpath(root))
    folder = require_dir(os.path.join(root, FOLDER), "CIFAR-10 batches folder", HINT)
    missing = [name for name in FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 files missing from {folder!r}: {', '.join(missing)}. {HINT}")
    images = _read(root, split != "test", verify_checksums)
    if split != "test":
        train, val = split_indices(images.shape[0], val_fraction, split_seed)
        images = images[train if split == "train" else val]
    return TensorImages(images, CIFAR10_NORMALIZATION)
