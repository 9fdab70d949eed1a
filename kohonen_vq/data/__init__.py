"""Datasets of the paper's protocol (METHOD.md §5) and a built-in one; nothing is ever downloaded.

Every dataset yields normalised float images (C, H, W) without labels and carries ``normalization``
(``denormalize(x, dataset.normalization)`` maps items or reconstructions back to [0, 1]).

    train = build_dataset("cifar10", "train", root="/data")      # root/cifar-10-batches-py
    val = build_dataset("samples", "val")                         # needs nothing
"""
from __future__ import annotations

import os
from typing import Any

from .cifar10 import cifar10
from .common import (CIFAR10_NORMALIZATION, IMAGENET_NORMALIZATION, SYMMETRIC_NORMALIZATION, ImageDataset,
                     Normalization, denormalize)
from .faces import faces
from .imagefolder import imagefolder
from .samples import PatchDataset, samples

DATASETS = ("cifar10", "imagenet", "faces", "samples")


def build_dataset(name: str, split: str = "train", root: str | os.PathLike[Any] | None = None,
                  **kwargs: Any) -> ImageDataset | dict[str, ImageDataset]:
    """Dataset ``name`` (one of ``DATASETS``) for ``split``; ``kwargs`` go to its loader.

    ``root``: for ``cifar10`` the folder holding ``cifar-10-batches-py``; for ``imagenet`` the tree with
    ``train/`` and ``val/``; for ``faces`` the folder holding ``celeba_hq/`` and ``afhq/`` (or give
    ``celeba_root=`` and ``afhq_root=``); ``samples`` takes none. ``faces`` "val" returns a dict of two.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if name == "samples":
        if root is not None:
            raise ValueError("the 'samples' dataset is built in and takes no root")
        return samples(split, **kwargs)
    if name == "faces":
        if root is not None:
            kwargs.setdefault("celeba_root", os.path.join(root, "celeba_hq"))
            kwargs.setdefault("afhq_root", os.path.join(root, "afhq"))
        if "celeba_root" not in kwargs or "afhq_root" not in kwargs:
            raise ValueError("the 'faces' dataset needs root= (holding celeba_hq/ and afhq/) or both celeba_root= "
                             "and afhq_root=")
        return faces(split=split, **kwargs)
    if root is None:
        raise ValueError(f"the {name!r} dataset needs root= (its data is never downloaded)")
    return (cifar10 if name == "cifar10" else imagefolder)(root, split, **kwargs)


__all__ = ["CIFAR10_NORMALIZATION", "DATASETS", "IMAGENET_NORMALIZATION", "ImageDataset", "Normalization",
           "PatchDataset", "SYMMETRIC_NORMALIZATION", "build_dataset", "cifar10", "denormalize", "faces",
           "imagefolder", "samples"]
