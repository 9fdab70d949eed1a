"""What every dataset of kohonen_vq.data shares: per-channel normalisation and the image-only interface."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` of images in [0, 1] pixel units (channel dim -3)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        view = lambda v: torch.tensor(v, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # noqa: E731
        return view(self.mean), view(self.std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the model's input space."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input space -> [0, 1] images (not clamped: clamp before display)."""
        mean, std = self._stats(x)
        return x * std + mean


# CIFAR-10 statistics in 0-255 space (METHOD.md §5), here in [0, 1] units.
CIFAR10_NORMALIZATION = Normalization(tuple(v / 255 for v in (125.3, 123.0, 113.9)),
                                      tuple(v / 255 for v in (63.0, 62.1, 66.7)))
IMAGENET_NORMALIZATION = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SYMMETRIC_NORMALIZATION = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [0, 1] -> [-1, 1]


def denormalize(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """Maps normalised images (a dataset's items, or a model's reconstructions) back to [0, 1] units."""
    return normalization.denormalize(x)


class ImageDataset(Dataset):
    """A dataset of normalised float images (C, H, W), without labels; ``normalization`` undoes them."""

    normalization: Normalization


class Unlabelled(ImageDataset):
    """Drops the labels of a dataset of ``(image, label)`` pairs (torchvision's ImageFolder and friends)."""

    def __init__(self, base: Dataset, normalization: Normalization):
        self.base, self.normalization = base, normalization

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[index][0]


class TensorImages(ImageDataset):
    """Images held in memory as uint8 (N, C, H, W), normalised on access (4x less memory than floats)."""

    def __init__(self, images: torch.Tensor, normalization: Normalization):
        self.images, self.normalization = images, normalization

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.normalization.normalize(self.images[index].float() / 255)


def check_split(split: str, choices: Sequence[str]) -> None:
    """Raises a clear ValueError for a split name the dataset does not have."""
    if split not in choices:
        raise ValueError(f"split must be one of {tuple(choices)}, got {split!r}")


def require_dir(path: str | os.PathLike[Any], what: str, hint: str) -> str:
    """``path`` as a string if it is a directory; otherwise FileNotFoundError saying what was expected."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {os.fspath(path)!r} is not a directory. {hint}")
    return os.fspath(path)
