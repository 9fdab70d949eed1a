"""CIFAR-10 with the paper's protocol (METHOD.md §5): validation is a fixed, seeded 20 % of the 50 000
training images, training the other 80 %; pixels are z-scored per channel."""
from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from .common import CIFAR10_NORMALIZATION, TensorImages, check_split, require_dir

FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
FILES = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
HINT = (f"Expected the python version of CIFAR-10: root/{FOLDER}/ holding {', '.join(FILES)}. Get it from "
        f"{CIFAR10.url} (https://www.cs.toronto.edu/~kriz/cifar.html) and extract it into root.")


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for bytes, limited to latin-1."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode({encoding!r}) in a CIFAR-10 batch file")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array unpickling helper
# What the CIFAR-10 batch files pickle (dicts of numpy arrays, lists, numbers, strings), and nothing else.
_SAFE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
                 ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
                 ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch file without calling anything but numpy's array constructors: ``pickle.load``
    (torchvision's reader) would call whatever a crafted file names, e.g. ``os.system``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a CIFAR-10 batch file holds only "
                                         f"numpy arrays, lists, numbers and strings") from None


def _read_batch(path: str) -> np.ndarray:
    """The uint8 (n, 3072) ``data`` array of one batch file."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as e:  # whatever a damaged file makes the unpickler raise (it runs none of the file's code)
        raise ValueError(f"malformed CIFAR-10 batch file {path!r}: {type(e).__name__}: {e}. {HINT}") from e
    data = entry.get("data") if isinstance(entry, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ValueError(f"malformed CIFAR-10 batch file {path!r}: it holds no uint8 'data' array of shape "
                         f"(n, 3072). {HINT}")
    return data


def _read(root: str, train: bool, verify_checksums: bool) -> torch.Tensor:
    """The uint8 (N, 3, 32, 32) images of the training (or test) batches."""
    files = CIFAR10.train_list if train else CIFAR10.test_list
    paths = [(os.path.join(root, FOLDER, name), md5) for name, md5 in files]
    if verify_checksums:
        wrong = [os.path.basename(path) for path, md5 in paths if not check_integrity(path, md5)]
        if wrong:
            raise ValueError(f"the files in {os.path.join(root, FOLDER)!r} do not match the md5 checksums of the "
                             f"official CIFAR-10 release ({', '.join(wrong)}). For a deliberately re-packed copy "
                             f"(e.g. a subset) pass verify_checksums=False. {HINT}")
    data = np.concatenate([_read_batch(path) for path, _ in paths])
    return torch.from_numpy(data.reshape(-1, 3, 32, 32))


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
    (the test batch, which the paper does not use). ``verify_checksums=False`` skips the md5 checks,
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
