"""The built-in dataset: patches of real colour photographs shipped inside scikit-image (no download).

Images (scikit-image's ``skimage/data`` folder; sources and terms as stated in the docstrings of
``skimage.data``, shipped within scikit-image's BSD-3-Clause distribution):

- ``astronaut.png`` (512x512): Eileen Collins, NASA Great Images database; no known copyright
  restrictions, public domain.
- ``chelsea.png`` (300x451): Chelsea the cat, by Stefan van der Walt; CC0.
- ``coffee.png`` (400x600): coffee cup, by Rachel Michetti, courtesy of Pikolo Espresso Bar; CC0.
- ``hubble_deep_field.jpg`` (872x1000): Hubble eXtreme Deep Field, NASA via HubbleSite; public domain.
- ``ihc.png`` (512x512): immunohistochemistry of colonic glands, Center for Microscopy And Molecular
  Imaging (CMMI); no known copyright restrictions.
- ``motorcycle_left.png`` (500x741): left view of the Middlebury 2014 stereo benchmark "Motorcycle"
  (Scharstein et al., GCPR 2014), downsampled x4; scikit-image states no licence, Middlebury asks that
  the paper be cited.
- ``retina.jpg`` (1411x1411): fundus photograph of a normal left eye, Mikael Häggström via Wikimedia
  Commons; CC0 1.0.
- ``rocket.jpg`` (427x640): launch of DSCOVR on Falcon 9, SpaceX; public domain.

``motorcycle_right.png`` is left out on purpose: it is the stereo twin of ``motorcycle_left.png``, so the
validation band of one would reappear, shifted by the disparity, in the training region of the other.

Split: the right-most band of each image (``val_fraction`` of its width, at least one patch wide) is
validation, tiled by non-overlapping patches; training patches come from the rest of the image with
``stride`` (overlapping, which acts as augmentation). No training patch overlaps a validation patch.
"""
from __future__ import annotations

import functools
import math
import os

import torch

from .common import ImageDataset, Normalization, check_split

IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
          "retina.jpg", "rocket.jpg")


@functools.lru_cache(maxsize=1)
def load_images() -> tuple[torch.Tensor, ...]:
    """The source images as uint8 (3, H, W) tensors, read from the installed package (never fetched)."""
    try:  # imported here so that the other datasets work without scikit-image
        import skimage
        import skimage.io
    except ImportError as e:
        raise ImportError("the 'samples' dataset reads its images from scikit-image: pip install scikit-image") from e
    data_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    images = []
    for name in IMAGES:
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} is missing: the installed scikit-image should ship it in skimage/data")
        pixels = skimage.io.imread(path)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"{path!r} is not an RGB image (shape {pixels.shape})")
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
    return tuple(images)


def patch_origins(height: int, width: int, patch: int, stride: int, val_fraction: float
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
    """(y, x) origins of the (train, val) patches of one image, or None if it is too small for both."""
    band = max(patch, math.ceil(val_fraction * width))
    if height < patch or width - band < patch:
        return None
    train = [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - band - patch + 1, stride)]
    val = [(y, width - band + x) for y in range(0, height - patch + 1, patch)
           for x in range(0, band - patch + 1, patch)]
    return train, val


def _coverage(length: int, starts: torch.Tensor, patch: int) -> torch.Tensor:
    """How many of the intervals [s, s + patch) cover each position of range(length)."""
    hits = torch.zeros(length + 1)
    hits.index_add_(0, starts, torch.ones(len(starts)))
    hits.index_add_(0, starts + patch, -torch.ones(len(starts)))
    return hits.cumsum(0)[:length]


def patch_statistics(images: tuple[torch.Tensor, ...], origins: torch.Tensor, patch: int) -> Normalization:
    """Exact per-channel mean and std (in [0, 1] units) of all pixels of the patches at ``origins`` (rows
    image, y, x on a per-image grid, as ``patch_origins`` makes them), overlaps counted as often as they occur."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0.0
    for i, image in enumerate(images):
        mine = origins[origins[:, 0] == i]
        if len(mine) == 0:
            continue
        # The origins form a ys x xs grid, so each pixel's patch count is separable: wy[y] * wx[x].
        wy = _coverage(image.shape[1], mine[:, 1].unique(), patch)
        wx = _coverage(image.shape[2], mine[:, 2].unique(), patch)
        pixels = image.float() / 255
        total += ((pixels @ wx) @ wy).double()
        squares += (((pixels * pixels) @ wx) @ wy).double()
        count += float(wy.sum()) * float(wx.sum())
    mean = total / count
    std = (squares / count - mean ** 2).clamp_min(0).sqrt()
    return Normalization(tuple(mean.tolist()), tuple(std.tolist()))


class PatchDataset(ImageDataset):
    """Square patches of in-memory uint8 images, normalised on access.

    ``origins`` (N, 3) int64 holds (image index, y, x) of each patch's top-left corner; ``names`` the
    image file of each index.
    """

    def __init__(self, images: tuple[torch.Tensor, ...], names: tuple[str, ...], origins: torch.Tensor, patch: int,
                 normalization: Normalization):
        self.images, self.names, self.origins, self.patch = images, names, origins, patch
        self.normalization = normalization

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        i, y, x = self.origins[index].tolist()
        crop = self.images[i][:, y:y + self.patch, x:x + self.patch]
        return self.normalization.normalize(crop.float() / 255)


@functools.lru_cache(maxsize=8)
def _split(patch: int, stride: int, val_fraction: float) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...],
                                                                  torch.Tensor, torch.Tensor, Normalization]:
    """Images used, their names, train and val origins, and the training statistics (cached: the train and
    val datasets of one configuration share them)."""
    images, names, origins = [], [], {"train": [], "val": []}
    for image, name in zip(load_images(), IMAGES):
        found = patch_origins(image.shape[1], image.shape[2], patch, stride, val_fraction)
        if found is None:
            continue
        for part, part_origins in zip(("train", "val"), found):
            origins[part] += [(len(images), y, x) for y, x in part_origins]
        images.append(image)
        names.append(name)
    if not images:
        raise ValueError(f"patch={patch} is too large for every bundled image (the largest is 1411 x 1411)")
    train, val = (torch.tensor(origins[part], dtype=torch.long) for part in ("train", "val"))
    return tuple(images), tuple(names), train, val, patch_statistics(tuple(images), train, patch)


def samples(split: str = "train", patch: int = 32, stride: int | None = None, val_fraction: float = 0.2
            ) -> PatchDataset:
    """Patches of the bundled photographs (see the module docstring), z-scored per channel with the training
    patches' statistics (``dataset.normalization`` undoes it). ``stride`` defaults to ``patch // 4``.
    Images too small for one training and one validation patch are left out (see ``dataset.names``)."""
    check_split(split, ("train", "val"))
    stride = max(1, patch // 4) if stride is None else stride
    if patch < 1 or stride < 1 or not 0 < val_fraction < 1:
        raise ValueError(f"need patch >= 1, stride >= 1 and 0 < val_fraction < 1, got patch={patch}, "
                         f"stride={stride}, val_fraction={val_fraction}")
    images, names, train, val, normalization = _split(patch, stride, val_fraction)
    return PatchDataset(images, names, train if split == "train" else val, patch, normalization)
