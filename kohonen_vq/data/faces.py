"""The CelebA-HQ + AFHQ mixture of the paper (28 K + 15 K images at 256 x 256), scaled to [-1, 1]."""
from __future__ import annotations

import os
from typing import Any

from torch.utils.data import ConcatDataset

from .common import SYMMETRIC_NORMALIZATION, Unlabelled, check_split
from .imagefolder import folder

HINT = ("Expected the StarGAN v2 releases (https://github.com/clovaai/stargan-v2, download.sh celeba-hq-dataset "
        "/ afhq-dataset): celeba_hq/{train,val}/{female,male}/*.jpg and afhq/{train,val}/{cat,dog,wild}/*.jpg; "
        "pass the celeba_hq and afhq folders.")


def faces(celeba_root: str | os.PathLike[Any], afhq_root: str | os.PathLike[Any], split: str = "train",
          size: int = 256) -> Unlabelled | dict[str, Unlabelled]:
    """``split="train"``: one dataset, CelebA-HQ's training images followed by AFHQ's. ``split="val"``:
    ``{"celeba_hq": ..., "afhq": ...}``, the two validation sets kept apart so each can be reported."""
    check_split(split, ("train", "val"))
    parts = {name: folder(os.path.join(root, split), size, SYMMETRIC_NORMALIZATION,
                          f"{name} {split!r} folder", HINT)
             for name, root in (("celeba_hq", celeba_root), ("afhq", afhq_root))}
    if split == "val":
        return parts
    return Unlabelled(ConcatDataset([part.base for part in parts.values()]), SYMMETRIC_NORMALIZATION)
