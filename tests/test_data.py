"""Dataset loaders on small fixtures written in the real on-disk formats, and the built-in samples."""
from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kohonen_vq.data import (CIFAR10_NORMALIZATION, IMAGENET_NORMALIZATION, DATASETS, build_dataset, cifar10,
                             denormalize, faces, imagefolder, samples)
from kohonen_vq.data.cifar10 import split_indices
from kohonen_vq.data.samples import IMAGES, load_images

CIFAR_PER_BATCH = 20  # 5 batches -> 100 "training" images


# --- CIFAR-10 fixture -------------------------------------------------------------------------------
def py2_pickle(obj: object, py2_strings: set[str]) -> bytes:
    """Protocol-2 pickle in which ``py2_strings`` are Python 2 byte strings, as in the real CIFAR files: they
    load as ``str`` with encoding="latin1" (torchvision) and as ``bytes`` with encoding="bytes"."""
    data = pickle.dumps(obj, protocol=2)
    out, last = bytearray(), 0
    for op, arg, pos in pickletools.genops(data):
        if op.name == "BINUNICODE" and arg in py2_strings:
            raw = arg.encode("latin1")
            out += data[last:pos] + b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
            last = pos + 1 + 4 + len(arg.encode("utf-8"))
    return bytes(out + data[last:])


def write_cifar(root: Path, seed: int = 0) -> np.ndarray:
    """root/cifar-10-batches-py with 5 training batches, a test batch and batches.meta; returns the
    training images as uint8 (N, 3, 32, 32) in file order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    keys = {"batch_label", "labels", "data", "filenames", "label_names", "num_cases_per_batch", "num_vis"}
    train = []
    for name, n in [(f"data_batch_{i}", CIFAR_PER_BATCH) for i in range(1, 6)] + [("test_batch", 10)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch = {"batch_label": f"fixture {name}", "labels": rng.integers(0, 10, n).tolist(), "data": data,
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(py2_pickle(batch, keys | set(batch["filenames"])))
        if name != "test_batch":
            train.append(data)
    meta = {"num_cases_per_batch": CIFAR_PER_BATCH, "label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta, keys | set(names)))
    return np.concatenate(train).reshape(-1, 3, 32, 32)


@pytest.fixture
def cifar_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    return tmp_path, write_cifar(tmp_path)


def test_fixture_pickles_have_the_real_key_types(cifar_root: tuple[Path, np.ndarray]) -> None:
    path = cifar_root[0] / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        assert {b"data", b"labels"} <= set(pickle.load(f, encoding="bytes"))
    with open(path, "rb") as f:
        assert {"data", "labels"} <= set(pickle.load(f, encoding="latin1"))


def test_cifar_md5_check_rejects_non_official_files(cifar_root: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="md5.*verify_checksums=False"):
        cifar10(cifar_root[0], "train")


def test_cifar_split_sizes_and_disjointness(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, images = cifar_root
    train = cifar10(root, "train", verify_checksums=False)
    val = cifar10(root, "val", verify_checksums=False)
    assert (len(train), len(val)) == (80, 20)
    rows = lambda ds: {bytes(ds.images[i].numpy()) for i in range(len(ds))}  # noqa: E731
    assert rows(train).isdisjoint(rows(val)) and len(rows(train) | rows(val)) == len(images)
    assert len(cifar10(root, "test", verify_checksums=False)) == 10


def test_cifar_split_is_deterministic_and_seeded(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, _ = cifar_root
    a, b = (cifar10(root, "val", verify_checksums=False) for _ in range(2))
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, cifar10(root, "val", split_seed=1, verify_checksums=False).images)
    train, val = split_indices(50_000)
    assert (len(train), len(val)) == (40_000, 10_000)
    assert torch.equal(val, split_indices(50_000)[1]) and len(set(train.tolist()) & set(val.tolist())) == 0


def test_cifar_normalisation(cifar_root: tuple[Path, np.ndarray]) -> None:
    root, images = cifar_root
    val = cifar10(root, "val", verify_checksums=False)
    _, val_idx = split_indices(len(images))
    pixels = torch.from_numpy(images[val_idx[3].item()]).double()
    mean = torch.tensor([125.3, 123.0, 113.9], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([63.0, 62.1, 66.7], dtype=torch.float64).view(3, 1, 1)
    item = val[3]
    assert item.shape == (3, 32, 32) and item.dtype == torch.float32
    torch.testing.assert_close(item.double(), (pixels - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(denormalize(item, val.normalization) * 255, pixels.float(), atol=1e-3, rtol=0)
    assert val.normalization == CIFAR10_NORMALIZATION


def test_cifar_accepts_the_batches_folder_itself(cifar_root: tuple[Path, np.ndarray]) -> None:
    assert len(cifar10(cifar_root[0] / "cifar-10-batches-py", "val", verify_checksums=False)) == 20


def test_cifar_missing_or_malformed_root(tmp_path: Path, cifar_root: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*cs.toronto.edu"):
        cifar10(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        cifar10(tmp_path / "empty")
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing.*data_batch_3"):
        cifar10(root, verify_checksums=False)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="malformed"):
        cifar10(root, verify_checksums=False)
    with pytest.raises(ValueError, match="split must be one of"):
        cifar10(root, "validation", verify_checksums=False)


# --- ImageFolder trees ----------------------------------------------------------------------------------
def write_tree(root: Path, classes: dict[str, int], colour: tuple[int, int, int] = (200, 100, 50)) -> None:
    """root/<class>/ with ``n`` small images each, alternating PNG and JPEG, of one colour."""
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            image = Image.new("RGB", (40 + 8 * i, 30), colour)
            image.save(root / name / (f"{i}.png" if i % 2 == 0 else f"{i}.JPEG"))


def test_imagefolder(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", {"n01": 3, "n02": 2})
    write_tree(tmp_path / "val", {"n01": 1, "n02": 1})
    train = imagefolder(tmp_path, "train", size=16)
    assert len(train) == 5 and len(imagefolder(tmp_path, "val", size=16)) == 2
    item = train[0]  # a PNG: exact colours
    assert item.shape == (3, 16, 16) and item.dtype == torch.float32
    norm = IMAGENET_NORMALIZATION
    expected = [(c / 255 - m) / s for c, m, s in zip((200, 100, 50), norm.mean, norm.std)]
    torch.testing.assert_close(item.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5, rtol=0)
    assert train[1].shape == (3, 16, 16)  # a JPEG, wider than tall: resized then centre-cropped
    assert len(build_dataset("imagenet", "val", root=tmp_path, size=16)) == 2


def test_imagefolder_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        imagefolder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="'val' split folder.*train/<class>"):
        imagefolder(tmp_path, "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        imagefolder(tmp_path, "val")
    (tmp_path / "val" / "n01").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        imagefolder(tmp_path, "val")


def test_faces(tmp_path: Path) -> None:
    for split, n in (("train", 2), ("val", 1)):
        write_tree(tmp_path / "celeba_hq" / split, {"female": n, "male": n}, colour=(255, 0, 128))
        write_tree(tmp_path / "afhq" / split, {"cat": n, "dog": n, "wild": n}, colour=(255, 0, 128))
    train = faces(tmp_path / "celeba_hq", tmp_path / "afhq", "train", size=16)
    assert len(train) == 4 + 6
    item = train[0]
    assert item.shape == (3, 16, 16)
    torch.testing.assert_close(item[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-5, rtol=0)
    val = build_dataset("faces", "val", root=tmp_path, size=16)
    assert set(val) == {"celeba_hq", "afhq"} and (len(val["celeba_hq"]), len(val["afhq"])) == (2, 3)
    with pytest.raises(FileNotFoundError, match="afhq 'train' folder.*stargan-v2"):
        faces(tmp_path / "celeba_hq", tmp_path / "nowhere", "train")


# --- built-in samples -------------------------------------------------------------------------------
def test_samples_images_are_bundled_rgb_photographs() -> None:
    images = load_images()
    assert len(images) == len(IMAGES) >= 8
    assert all(im.dtype == torch.uint8 and im.dim() == 3 and im.shape[0] == 3 for im in images)


def overlaps(a: torch.Tensor, b: torch.Tensor, patch: int) -> torch.Tensor:
    """(len(a), len(b)): whether the patch at origin a[i] (image, y, x) overlaps the one at b[j]."""
    a, b = a[:, None, :], b[None, :, :]
    same = a[..., 0] == b[..., 0]
    return same & ((a[..., 1] - b[..., 1]).abs() < patch) & ((a[..., 2] - b[..., 2]).abs() < patch)


@pytest.mark.parametrize("patch", [32, 128])
def test_samples_train_and_val_do_not_overlap(patch: int) -> None:
    train, val = samples("train", patch=patch), samples("val", patch=patch)
    assert len(train.names) >= 8 and train.names == val.names
    assert len(val) > 0 and len(train) > 10 * len(val)
    assert torch.equal(overlaps(val.origins, val.origins, patch), torch.eye(len(val), dtype=torch.bool))  # tiles
    for i in range(len(train.names)):  # per image keeps the pairwise check small
        mine_t, mine_v = train.origins[train.origins[:, 0] == i], val.origins[val.origins[:, 0] == i]
        assert len(mine_t) and len(mine_v) and not overlaps(mine_t, mine_v, patch).any()
        height, width = load_images()[IMAGES.index(train.names[i])].shape[1:]
        for origins in (mine_t, mine_v):
            assert origins[:, 1].min() >= 0 and (origins[:, 1] + patch).max() <= height
            assert origins[:, 2].min() >= 0 and (origins[:, 2] + patch).max() <= width
    assert train[0].shape == (3, patch, patch) and train[0].dtype == torch.float32


def test_samples_are_deterministic_and_normalised_by_training_statistics() -> None:
    from kohonen_vq.data.samples import _split

    first = samples("train", patch=64, stride=32)
    _split.cache_clear()
    again = samples("train", patch=64, stride=32)
    assert torch.equal(first.origins, again.origins) and first.normalization == again.normalization
    assert torch.equal(first[17], again[17])
    items = torch.stack([first[i] for i in range(len(first))]).double()
    torch.testing.assert_close(items.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(items.std(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)
    val = samples("val", patch=64, stride=32)
    assert val.normalization == first.normalization
    i, y, x = val.origins[0].tolist()
    crop = load_images()[IMAGES.index(val.names[i])][:, y:y + 64, x:x + 64].float() / 255
    torch.testing.assert_close(denormalize(val[0], val.normalization), crop, atol=1e-5, rtol=0)


def test_samples_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        samples("test")
    with pytest.raises(ValueError, match="too large"):
        samples(patch=2048)


def test_build_dataset_dispatch(tmp_path: Path) -> None:
    assert DATASETS == ("cifar10", "imagenet", "faces", "samples")
    assert len(build_dataset("samples", "val", patch=128)) == len(samples("val", patch=128))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*cifar10"):
        build_dataset("mnist", "train")
    with pytest.raises(ValueError, match="needs root"):
        build_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="takes no root"):
        build_dataset("samples", "train", root=tmp_path)
    with pytest.raises(ValueError, match="celeba_root"):
        build_dataset("faces", "train")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_dataset("cifar10", "train", root=os.fspath(tmp_path))
