"""Bad input to ``kohonen-vq train`` / ``demo``, to config files and to the dataset loaders (issue 7): each case
is cited by a row of docs/errors.md ("Training CLI and datasets") and checks the row's exact message, the exit
status, and that nothing was written (the run folder is never created) and nothing of a bad file was run."""
from __future__ import annotations

import codecs
import errno
import importlib
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from kohonen_vq.cli import main
from kohonen_vq.data import build_dataset, cifar10, imagefolder, samples
from kohonen_vq.data.cifar10 import HINT as CIFAR_HINT
from kohonen_vq.data.cifar10 import split_indices
from kohonen_vq.data.faces import HINT as FACES_HINT
from kohonen_vq.data.imagefolder import IMAGENET_HINT
from kohonen_vq.train import resolve, runtime
from kohonen_vq.train.batches import StepBatches
from kohonen_vq.train.config import FIELDS

from test_data import write_cifar, write_tree
from test_train import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

samples_module = importlib.import_module("kohonen_vq.data.samples")  # the package rebinds the name to the function
config_module = importlib.import_module("kohonen_vq.train.config")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Runs the command line; returns its exit status and the last line it wrote to stderr (never a traceback)."""
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, err.strip().splitlines()[-1]


def assert_line(line: str, expected: str) -> None:
    """``line`` is ``expected``, or starts with it if ``expected`` ends in "..." (a message whose tail comes from
    a parser that words it differently from one version to the next)."""
    assert line.startswith(expected[:-3]) if expected.endswith("...") else line == expected, line


class Calls:
    """Unpickling this calls ``function(*args)``: pickle.load would run it, a safe reader must refuse it."""

    def __init__(self, function: Callable[..., Any], *args: Any):
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.args


def fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def case(name: str, *values: Any) -> Any:
    return pytest.param(*values, id=name)


# --- settings: checked before anything runs, exit status 2 with the usage line -----------------------------------

SETTINGS = [
    case("max_steps_zero", ["--max-steps", "0"], "--max-steps must be >= 1, got 0"),
    case("max_steps_negative", ["--max-steps", "-5"], "--max-steps must be >= 1, got -5"),
    case("batch_size_zero", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    case("eval_every_zero", ["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    case("num_codes_zero", ["--num-codes", "0"], "--num-codes must be >= 1, got 0"),
    case("embedding_dim_zero", ["--embedding-dim", "0"], "--embedding-dim must be >= 1, got 0"),
    case("val_limit_zero", ["--val-limit", "0"], "--val-limit must be >= 1, got 0"),
    case("threads_zero", ["--threads", "0"], "--threads must be >= 1, got 0"),
    case("workers_negative", ["--workers", "-1"], "--workers must be >= 0, got -1"),
    case("seed_negative", ["--seed", "-1"], "--seed must be >= 0, got -1"),
    case("lr_zero", ["--lr", "0"], "--lr must be a positive number, got 0.0"),
    case("lr_negative", ["--lr", "-1"], "--lr must be a positive number, got -1.0"),
    case("lr_nan", ["--lr", "nan"], "--lr must be a positive number, got nan"),
    case("lr_inf", ["--lr", "inf"], "--lr must be a positive number, got inf"),
    case("grad_clip_negative", ["--grad-clip", "-1"], "--grad-clip must be >= 0, got -1.0"),
    case("grad_clip_nan", ["--grad-clip", "nan"], "--grad-clip must be >= 0, got nan"),
    case("shrink_negative", ["--shrink", "-0.1"], "--shrink must be finite and >= 0, got -0.1"),
    case("shrink_inf", ["--shrink", "inf"], "--shrink must be finite and >= 0, got inf"),
    case("sigma_zero", ["--sigma", "0"], "--sigma must be finite and > 0, got 0.0"),
    case("base_negative", ["--base", "-10"], "--base must be finite and > 0, got -10.0"),
    case("decay_one", ["--decay", "1"], "--decay must be finite and in [0, 1), got 1.0"),
    case("decay_nan", ["--decay", "nan"], "--decay must be finite and in [0, 1), got nan"),
    case("init_count_negative", ["--init-count", "-1"], "--init-count must be finite and >= 0, got -1.0"),
    case("commitment_inf", ["--commitment", "inf"], "--commitment must be finite and >= 0, got inf"),
    case("neighbour_weight_negative", ["--quantizer", "gradient-som", "--neighbour-weight", "-1"],
         "--neighbour-weight must be finite and >= 0, got -1.0"),
    case("grid_not_num_codes", ["--grid", "3x3"], "--grid: grid (3, 3) holds 9 nodes but num_codes is 512"),
    case("grid_not_given_num_codes", ["--num-codes", "16", "--grid", "8x4"],
         "--grid: grid (8, 4) holds 32 nodes but num_codes is 16"),
    case("grid_zero_axis", ["--grid", "4x0"], "--grid: grid must be a non-empty sequence of sizes >= 1, got (4, 0)"),
    case("grid_malformed", ["--grid", "3y3"], "argument --grid: grid must look like 32x16, 512 or auto, got '3y3'"),
    case("grid_empty", ["--grid", ""], "argument --grid: grid must look like 32x16, 512 or auto, got ''"),
    case("image_size_vqvae", ["--image-size", "30"], "--image-size must be a multiple of 4 for vqvae, got 30"),
    case("image_size_vqvae2", ["--arch", "vqvae2", "--image-size", "36"],
         "--image-size must be a multiple of 8 for vqvae2, got 36"),
    case("image_size_cifar10", ["--preset", "cifar10-vqvae", "--data-root", "{tmp}", "--image-size", "64"],
         "cifar10 images are 32x32; --image-size 64 is not possible"),
    case("samples_with_root", ["--data-root", "{tmp}"],
         "the samples dataset is built in: drop --data-root (or pick another --dataset)"),
    case("cifar10_without_root", ["--preset", "cifar10-vqvae"],
         "the cifar10 dataset is read from disk, never downloaded: pass --data-root DIR, the folder holding "
         "cifar-10-batches-py"),
    case("imagenet_without_root", ["--dataset", "imagenet"],
         "the imagenet dataset is read from disk, never downloaded: pass --data-root DIR, the folder holding train/ "
         "and val/"),
    case("resume_without_checkpoint", ["--resume"], "no checkpoint at '{tmp}/run/checkpoints/last.pt'"),
]


@pytest.mark.parametrize("flags, message", SETTINGS)
def test_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    argv = ["train", *[fill(f, tmp_path) for f in flags], "--out", str(tmp_path / "run")]
    assert run_cli(capsys, *argv) == (2, f"kohonen-vq train: error: {fill(message, tmp_path)}")
    assert not (tmp_path / "run").exists()


# argparse's own messages: their wording (e.g. how choices are listed) varies with the Python version, so the
# line is checked up to the value that was refused.
ARGPARSE = [
    case("unknown_preset", ["--preset", "cifar-10"], "argument --preset: invalid choice: 'cifar-10'"),
    case("unknown_quantizer", ["--quantizer", "kmeans"], "argument --quantizer: invalid choice: 'kmeans'"),
    case("unknown_neighbourhood", ["--neighbourhood", "box"], "argument --neighbourhood: invalid choice: 'box'"),
    case("unknown_dataset", ["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
    case("unknown_arch", ["--arch", "vqvae3"], "argument --arch: invalid choice: 'vqvae3'"),
    case("not_an_int", ["--max-steps", "ten"], "argument --max-steps: invalid int value: 'ten'"),
    case("float_for_an_int", ["--batch-size", "2.5"], "argument --batch-size: invalid int value: '2.5'"),
    case("not_a_float", ["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    case("missing_value", ["--max-steps"], "argument --max-steps: expected one argument"),
    # the top-level parser's: it owns the arguments that no subcommand took
    case("unknown_flag", ["--num-kodes", "3"], "kohonen-vq: error: unrecognized arguments: --num-kodes 3"),
    case("value_for_a_switch", ["--update-empty", "yes"], "kohonen-vq: error: unrecognized arguments: yes"),
]


@pytest.mark.parametrize("flags, message", ARGPARSE)
def test_argparse_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    status, line = run_cli(capsys, "train", *flags, "--out", str(tmp_path / "run"))
    expected = message if message.startswith("kohonen-vq:") else f"kohonen-vq train: error: {message}"
    assert status == 2 and line.startswith(expected), line
    assert not (tmp_path / "run").exists()


def test_python_api_checks_the_choices() -> None:
    # argparse and config files check the choices themselves; resolve() must not let a typo through either
    with pytest.raises(ValueError) as info:
        resolve({"quantizer": "kmeans"})
    assert str(info.value) == "--quantizer must be one of ksom, ema, gradient, gradient-som, got 'kmeans'"


# --- config files: parsed as data, exit status 2 ------------------------------------------------------------------

VALID = ", ".join(FIELDS)
CONFIG_FILES = [  # file name (None: no file; "": the folder itself), content, message ("..." at the end: a prefix)
    case("missing", None, b"", "config file not found: '{path}'"),
    case("a_folder", "", b"", "config file '{path}' is not a regular file"),
    case("bad_toml", "bad.toml", b"num_codes 16\n", "cannot parse config file '{path}': TOMLDecodeError: ..."),
    case("bad_json", "bad.json", b'{"max_steps": ',
         "cannot parse config file '{path}': JSONDecodeError: Expecting value: line 1 column 15 (char 14)"),
    case("not_utf8", "bad.toml", b"num_codes = 16 # \xff\n",
         "cannot parse config file '{path}': UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 17: "
         "invalid start byte"),
    case("deep_nesting", "deep.json", b"[" * 100_000 + b"]" * 100_000,
         "cannot parse config file '{path}': RecursionError: ..."),
    case("not_a_table", "list.json", b"[1, 2]", "config file '{path}' must hold a table of settings, got list"),
    case("unknown_key", "k.toml", b"num_kodes = 16\n",
         f"config file '{{path}}': unknown setting 'num_kodes'; valid settings: {VALID}"),
    case("wrong_type", "t.json", b'{"max_steps": "10"}',
         "config file '{path}': setting 'max_steps' must be of type int, got '10'"),
    case("bool_for_an_int", "t.json", b'{"max_steps": true}',
         "config file '{path}': setting 'max_steps' must be of type int, got True"),
    case("null", "n.json", b'{"max_steps": null}', "config file '{path}': setting 'max_steps' cannot be null"),
    case("grid_of_floats", "g.json", b'{"grid": [4.0, 4.0]}',
         "config file '{path}': setting 'grid' must be a list of ints or a string like '32x16', got [4.0, 4.0]"),
    case("grid_malformed", "g.toml", b'grid = "3y3"\n',
         "config file '{path}': grid must look like 32x16, 512 or auto, got '3y3'"),
    case("unknown_choice", "q.toml", b'quantizer = "kmeans"\n',
         "config file '{path}': setting 'quantizer' must be one of ksom, ema, gradient, gradient-som, got 'kmeans'"),
    case("unknown_preset", "p.toml", b'preset = "cifar-10"\n',
         "unknown preset 'cifar-10'; choose one of samples-vqvae, samples-vqvae2, cifar10-vqvae, imagenet-vqvae2, "
         "faces-vqvae2"),
    case("value_out_of_range", "v.toml", b"max_steps = 0\n", "--max-steps must be >= 1, got 0"),
]


@pytest.mark.parametrize("name, content, message", CONFIG_FILES)
def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str | None, content: bytes,
                         message: str) -> None:
    folder = tmp_path / "settings"
    folder.mkdir()
    path = folder / (name or "missing.toml")
    if name:
        path.write_bytes(content)
    elif name == "":
        path = folder
    status, line = run_cli(capsys, "train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert status == 2
    assert_line(line, f"kohonen-vq train: error: {message.replace('{path}', str(path))}")
    assert not (tmp_path / "run").exists()


def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root (these tests may run as root), so open() itself is made to fail as it would
    path = tmp_path / "settings.toml"
    path.write_text("num_codes = 16\n")

    def denied(file: Any, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(config_module, "open", denied, raising=False)
    assert run_cli(capsys, "train", "--config", str(path), "--out", str(tmp_path / "run")) == (
        2, f"kohonen-vq train: error: cannot read config file '{path}': Permission denied")


# --- found when training starts: exit status 1, one line ---------------------------------------------------------

def _cifar_without(name: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        write_cifar(root)
        (root / "cifar-10-batches-py" / name).unlink()
        return root
    return make


def _tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        (root / split).mkdir(parents=True)
        write_tree(root / split, classes)
    return root


def _class_without_images(root: Path) -> Path:
    (root / "train" / "n01").mkdir(parents=True)
    (root / "train" / "n01" / "notes.txt").write_text("not an image\n")
    return root


START = [  # flags, message, what to put in the data folder ({tmp}) first
    case("device_unknown", [*TINY, "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N, got 'tpu'",
         None),
    case("device_malformed", [*TINY, "--device", "cuda:x"],
         "--device must be auto, cpu, cuda or cuda:N, got 'cuda:x'", None),
    case("device_meta", [*TINY, "--device", "meta"], "--device must be auto, cpu, cuda or cuda:N, got 'meta'",
         None),
    case("cifar10_root_missing", ["--preset", "cifar10-vqvae", "--data-root", "{tmp}/nowhere"],
         f"CIFAR-10 root not found: '{{tmp}}/nowhere' is not a directory. {CIFAR_HINT}", None),
    case("cifar10_batches_folder_missing", ["--preset", "cifar10-vqvae", "--data-root", "{tmp}"],
         f"CIFAR-10 batches folder not found: '{{tmp}}/cifar-10-batches-py' is not a directory. {CIFAR_HINT}",
         None),
    case("cifar10_file_missing", ["--preset", "cifar10-vqvae", "--data-root", "{tmp}"],
         f"CIFAR-10 files missing from '{{tmp}}/cifar-10-batches-py': data_batch_3. {CIFAR_HINT}",
         _cifar_without("data_batch_3")),
    case("cifar10_not_the_official_files", ["--preset", "cifar10-vqvae", "--data-root", "{tmp}"],
         "the files in '{tmp}/cifar-10-batches-py' do not match the md5 checksums of the official CIFAR-10 release "
         "(data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5). For a deliberately re-packed copy "
         f"(e.g. a subset) pass verify_checksums=False. {CIFAR_HINT}", write_cifar),
    case("imagenet_root_missing", ["--preset", "imagenet-vqvae2", "--data-root", "{tmp}/nowhere"],
         f"image folder root not found: '{{tmp}}/nowhere' is not a directory. {IMAGENET_HINT}", None),
    case("imagenet_split_missing", ["--preset", "imagenet-vqvae2", "--data-root", "{tmp}"],
         f"'train' split folder not found: '{{tmp}}/train' is not a directory. {IMAGENET_HINT}",
         lambda root: _tree(root, {"val": {"n01": 1}})),
    case("imagenet_no_class_folders", ["--preset", "imagenet-vqvae2", "--data-root", "{tmp}"],
         "'train' split folder '{tmp}/train' holds no images in class folders (Couldn't find any class folder in "
         f"{{tmp}}/train.). {IMAGENET_HINT}", lambda root: (root / "train").mkdir()),
    case("imagenet_class_without_images", ["--preset", "imagenet-vqvae2", "--data-root", "{tmp}"],
         "'train' split folder '{tmp}/train' holds no images in class folders (Found no valid file for the classes "
         "n01. Supported extensions are: .jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp). "
         f"{IMAGENET_HINT}", _class_without_images),
    case("faces_folder_missing", ["--preset", "faces-vqvae2", "--data-root", "{tmp}"],
         f"celeba_hq 'train' folder not found: '{{tmp}}/celeba_hq/train' is not a directory. {FACES_HINT}",
         lambda root: _tree(root / "afhq", {"train": {"cat": 1}})),
    case("batch_larger_than_the_data", [*TINY, "--batch-size", "1000000"],
         "the training set holds {samples} images, fewer than one batch of 1000000: lower --batch-size", None),
    case("strict_nan", [*TINY, "--quantizer", "gradient", "--lr", "1e30", "--strict-nan", "--max-steps", "5",
                        "--device", "cpu"],
         "non-finite loss or gradient at step 2 (loss nan); stopped because of --strict-nan", None),
]


@pytest.mark.parametrize("flags, message, make_root", START)
def test_error_at_the_start_of_training(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                        message: str, make_root: Callable[[Path], Any] | None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if make_root is not None:
        make_root(data)
    before = sorted(data.rglob("*"))
    message = fill(message, data).replace("{samples}", str(len(samples("train"))))
    out = tmp_path / "run"
    status, line = run_cli(capsys, "train", *[fill(f, data) for f in flags], "--out", str(out))
    assert (status, line) == (1, f"kohonen-vq train: error: {message}")
    assert sorted(data.rglob("*")) == before  # the data is only read
    assert not (out / "checkpoints" / "last.pt").exists()
    if "--strict-nan" not in flags:  # refused before training starts: no run folder is left behind
        assert not out.exists()


def test_demo_refuses_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "demo", "--steps", "0", "--out", str(tmp_path / "demo")) == (
        1, "kohonen-vq demo: error: --steps must be >= 1, got 0")
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("available, built, message", [
    case("no_cuda_device", False, True, "--device cuda: torch.cuda.is_available() is False"),
    case("no_cuda_kernels", True, False,
         "--device cuda: kohonen_vq was built without CUDA kernels (rebuild with nvcc present)")])
def test_cuda_device_unavailable(monkeypatch: pytest.MonkeyPatch, available: bool, built: bool, message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(runtime, "build_info", lambda: {"cuda": built})
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError) as info:
        runtime.init_runtime("cuda")
    assert str(info.value) == message


def test_batch_size_not_divisible_by_the_ranks() -> None:
    with pytest.raises(ValueError) as info:
        StepBatches(100, 3, seed=0, start=0, stop=1, rank=0, world_size=2)
    assert str(info.value) == "--batch-size 3 must be divisible by the number of ranks (2)"


# --- the dataset loaders (Python API) ---------------------------------------------------------------------------

DATASET_CALLS = [
    case("unknown_dataset", lambda root: build_dataset("mnist"),
         "unknown dataset 'mnist'; choose one of ('cifar10', 'imagenet', 'faces', 'samples')"),
    case("root_missing", lambda root: build_dataset("imagenet", "val"),
         "the 'imagenet' dataset needs root= (its data is never downloaded)"),
    case("samples_with_root", lambda root: build_dataset("samples", root=root),
         "the 'samples' dataset is built in and takes no root"),
    case("faces_without_roots", lambda root: build_dataset("faces", afhq_root=root),
         "the 'faces' dataset needs root= (holding celeba_hq/ and afhq/) or both celeba_root= and afhq_root="),
    case("unknown_split", lambda root: imagefolder(root, "test"), "split must be one of ('train', 'val'), got 'test'"),
    case("val_fraction", lambda root: split_indices(10, 1.0), "val_fraction must be in (0, 1), got 1.0"),
    case("samples_patch_too_large", lambda root: samples(patch=1500),
         "patch=1500 is too large for every bundled image (the largest is 1411 x 1411)"),
    case("samples_patch_zero", lambda root: samples(patch=0),
         "need patch >= 1, stride >= 1 and 0 < val_fraction < 1, got patch=0, stride=1, val_fraction=0.2"),
]


@pytest.mark.parametrize("call, message", DATASET_CALLS)
def test_dataset_api_refuses(tmp_path: Path, call: Callable[[Path], Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        call(tmp_path)
    assert str(info.value) == message


@pytest.mark.parametrize("damage, detail", [
    case("truncated", lambda good, marker: good[:len(good) // 2], "UnpicklingError: pickle data was truncated"),
    case("not_a_pickle", lambda good, marker: b"not a pickle", "UnpicklingError: invalid load key, 'n'."),
    case("no_data_array", lambda good, marker: pickle.dumps({"labels": [1]}, protocol=2),
         "it holds no uint8 'data' array of shape (n, 3072)"),
    case("crafted_pickle", lambda good, marker: pickle.dumps({"data": Calls(os.system, f"touch {marker}")}),
         "UnpicklingError: refusing to unpickle posix.system: a CIFAR-10 batch file holds only numpy arrays, lists, "
         "numbers and strings"),
    case("codec_other_than_latin1", lambda good, marker: pickle.dumps({"data": Calls(codecs.encode, "x", "rot13")}),
         "UnpicklingError: refusing _codecs.encode('rot13') in a CIFAR-10 batch file"),
])
def test_malformed_cifar10_batch_file(tmp_path: Path, damage: Callable[[bytes, Path], bytes], detail: str) -> None:
    # verify_checksums=False (re-packed copies) reads files that no md5 vouches for: they are untrusted
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    marker = tmp_path / "executed"
    path.write_bytes(damage(path.read_bytes(), marker))
    with pytest.raises(ValueError) as info:
        cifar10(tmp_path, "train", verify_checksums=False)
    assert str(info.value) == f"malformed CIFAR-10 batch file '{path}': {detail}. {CIFAR_HINT}"
    assert not marker.exists()


@pytest.mark.parametrize("damage, detail", [
    case("not_an_image", lambda data: b"not an image", "cannot identify image file '{path}'"),
    case("truncated", lambda data: data[:len(data) // 2], "Truncated File Read"),
])
def test_damaged_image_in_an_image_folder(tmp_path: Path, damage: Callable[[bytes], bytes], detail: str) -> None:
    """PIL's error would name no file, and come halfway through a run: the loader's names it."""
    _tree(tmp_path, {"train": {"n01": 2}})
    damaged = sorted((tmp_path / "train" / "n01").iterdir())[1]  # a JPEG
    damaged.write_bytes(damage(damaged.read_bytes()))
    dataset = imagefolder(tmp_path, "train", size=16)
    assert dataset[0].shape == (3, 16, 16)
    with pytest.raises(ValueError) as info:
        dataset[1]
    assert str(info.value) == f"cannot read image '{damaged}': {detail.replace('{path}', str(damaged))}"


@pytest.fixture
def uncached_images():
    """``load_images`` reads the photographs once per process: start and leave it with an empty cache."""
    samples_module.load_images.cache_clear()
    samples_module._split.cache_clear()
    yield
    samples_module.load_images.cache_clear()
    samples_module._split.cache_clear()


def test_samples_without_scikit_image(monkeypatch: pytest.MonkeyPatch, uncached_images: None) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    with pytest.raises(ImportError) as info:
        samples("val")
    assert str(info.value) == "the 'samples' dataset reads its images from scikit-image: pip install scikit-image"


@pytest.mark.parametrize("image, error, message", [
    case("missing", "no_such_photo.png", FileNotFoundError,
         "'{dir}/no_such_photo.png' is missing: the installed scikit-image should ship it in skimage/data"),
    case("grey", "camera.png", ValueError, "'{dir}/camera.png' is not an RGB image (shape (512, 512))"),
])
def test_samples_with_a_broken_scikit_image(monkeypatch: pytest.MonkeyPatch, uncached_images: None, image: str,
                                            error: type, message: str) -> None:
    import skimage

    monkeypatch.setattr(samples_module, "IMAGES", (image,))
    with pytest.raises(error) as info:
        samples("val")
    assert str(info.value) == message.replace("{dir}", os.path.join(os.path.dirname(skimage.__file__), "data"))


def test_failed_checkpoint_write_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    out = tmp_path / "run"
    status, line = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--eval-every", "2", "--no-figures",
                           "--out", str(out))
    assert status == 1
    assert line.startswith(f"kohonen-vq train: error: cannot write checkpoint '{out}"), line
    assert line.endswith("No space left on device; the previous file at that path, if any, is unchanged"), line
