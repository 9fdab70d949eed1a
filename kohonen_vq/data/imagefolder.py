"""ImageNet-style folder trees (root/<split>/<class>/<image>), resized and centre-cropped (METHOD.md §5)."""
from __future__ import annotations

import os
from typing import Any

from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .common import IMAGENET_NORMALIZATION, Normalization, Unlabelled, check_split, require_dir

IMAGENET_HINT = ("Expected an ImageNet-style tree: root/train/<class>/*.JPEG and root/val/<class>/*.JPEG "
                 "(the ILSVRC-2012 images from https://image-net.org/download.php, with the validation images "
                 "moved into one folder per class).")


def image_transform(size: int, normalization: Normalization) -> transforms.Compose:
    """Shorter side to ``size``, centre crop to size x size, [0, 1] tensor, then ``normalization``."""
    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                               transforms.Normalize(normalization.mean, normalization.std)])


def _load_rgb(path: str) -> Image.Image:
    """An image file as RGB; a file PIL cannot decode (damaged, truncated, not an image) raises a ValueError
    naming it, rather than PIL's error without the path halfway through a training run."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as e:  # UnidentifiedImageError, "image file is truncated"
        raise ValueError(f"cannot read image {path!r}: {e}") from None


def folder(path: str | os.PathLike[Any], size: int, normalization: Normalization, what: str,
           hint: str) -> Unlabelled:
    """The images of one ImageFolder tree (labels dropped), with clear errors for a missing or empty tree."""
    path = require_dir(path, what, hint)
    try:
        images = ImageFolder(path, transform=image_transform(size, normalization), loader=_load_rgb)
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise FileNotFoundError(f"{what} {path!r} holds no images in class folders ({e}). {hint}") from e
    return Unlabelled(images, normalization)


def imagefolder(root: str | os.PathLike[Any], split: str = "train", size: int = 256) -> Unlabelled:
    """ImageNet (or any tree laid out like it) at ``size`` x ``size``, ImageNet mean/std normalisation.
    ``split`` is ``"train"`` or ``"val"``, the sub-folder of ``root`` that is read."""
    check_split(split, ("train", "val"))
    require_dir(root, "image folder root", IMAGENET_HINT)
    return folder(os.path.join(root, split), size, IMAGENET_NORMALIZATION, f"{split!r} split folder", IMAGENET_HINT)
