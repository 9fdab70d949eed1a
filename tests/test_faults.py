"""kohonen-vq train under faults (issue 7, "Faults" and "Untrusted files"): kill -9 then --resume, SIGINT / SIGTERM,
a disk that fills up and a kill while a checkpoint is being written, truncated, corrupted and crafted checkpoints,
a run folder that cannot be written, a rank that raises in a 2-process gloo job, and config files carrying
unknown keys or strings that look like code. Every fault that interrupts a run ends with the run resumed and
compared with an uninterrupted one: same metrics rows, bit-identical weights, so nothing was lost or corrupted."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from kohonen_vq.cli import build_parser, main
from kohonen_vq.train import TrainConfig, load_checkpoint, resolve, save_checkpoint
from kohonen_vq.train import train as train_api
from kohonen_vq.train.checkpoint import FORMAT, CheckpointWriteError
from kohonen_vq.train.config import FIELDS, load_config_file

from test_cli_errors import Calls, assert_line, run_cli
from test_train import TIMEOUT_S, TINY, run_subprocess, start, train, wait_for

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--val-limit", "16", "--no-figures", "--device", "cpu", "--seed", "5"]
STEPS = ["--max-steps", "60", "--eval-every", "2"]  # long enough to be interrupted, checkpoints every 2 steps


class Fault:
    """What a test injects and what it showed, as pytest user properties that scripts/reliability_report.py counts:
    ``injected`` at the start, ``nothing_lost`` once the test has asserted that no data was lost or corrupted."""

    def __init__(self, record: Callable[[str, object], None]):
        self._record = record

    def injected(self, kind: str, count: int = 1) -> None:
        self._record("fault", kind)
        self._record("faults_injected", count)

    def nothing_lost(self) -> None:
        self._record("intact", True)


@pytest.fixture
def fault(record_property: Callable[[str, object], None]) -> Fault:
    return Fault(record_property)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kohonen_vq", *args]


def _finished_run(out: Path, *flags: str) -> Path:
    """A run trained to its end on one thread, leaving the caller's RNG and thread count as they were."""
    with torch.random.fork_rng():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert train(out, *FAST, *flags) == 0
        finally:
            torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference every interrupted-then-resumed run must end equal to."""
    return _finished_run(tmp_path_factory.mktemp("uninterrupted") / "run", *STEPS)


def assert_same_run(out: Path, reference: Path) -> None:
    """``out`` ended as ``reference``: the same metrics rows (floats written with repr), bit-identical weights
    and codebooks, and no file left over in checkpoints/ (a temporary file of an interrupted save)."""
    assert (out / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    got, want = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (out, reference))
    assert got["step"] == want["step"]
    for key, value in want["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def _kill(proc: subprocess.Popen, sig: int) -> str:
    """Sends ``sig`` to ``proc``'s process group; returns its stderr."""
    try:
        os.killpg(proc.pid, sig)
        return proc.communicate(timeout=TIMEOUT_S)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _resume(out: Path) -> None:
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0


# --- kill -9, SIGINT, SIGTERM, then --resume ---------------------------------------------------------------------

def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, uninterrupted: Path, fault: Fault) -> None:
    fault.injected("kill -9 during training")
    out = tmp_path / "killed"
    proc = start(_cli("train", *TINY, *FAST, *STEPS, "--out", str(out)))
    wait_for(out / "checkpoints" / "last.pt", proc)
    _kill(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out / "checkpoints" / "last.pt")["step"]  # the last checkpoint is whole
    assert 2 <= killed_at < 60
    _resume(out)
    assert_same_run(out, uninterrupted)
    fault.nothing_lost()


@pytest.mark.parametrize("sig", [
    pytest.param(signal.SIGINT, id="SIGINT"),
    pytest.param(signal.SIGTERM, id="SIGTERM"),
])
def test_stop_signal_saves_exits_cleanly_and_resumes(tmp_path: Path, uninterrupted: Path, sig: int,
                                                     fault: Fault) -> None:
    fault.injected(f"{signal.Signals(sig).name} to the process group during training")
    # To the process group, as Ctrl-C or a batch scheduler sends it: a DataLoader worker process receives it too.
    out = tmp_path / "stopped"
    proc = start(_cli("train", *TINY, *FAST, *STEPS, "--workers", "1", "--out", str(out)))
    wait_for(out / "checkpoints" / "last.pt", proc)
    err = _kill(proc, sig)
    stopped_at = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    _resume(out)
    assert_same_run(out, uninterrupted)  # nothing lost, however the run ended ...
    fault.nothing_lost()
    assert proc.returncode == 128 + sig, err  # ... and it ended cleanly, saving where it stopped
    assert f"stopped by {signal.Signals(sig).name} at step {stopped_at};" in err and "Traceback" not in err, err
    assert 2 <= stopped_at < 60


# --- the disk fills up, or the process is killed, while a checkpoint is being written -------------------------

def _settings(*flags: str) -> TrainConfig:
    """The TrainConfig the command line ``kohonen-vq train FLAGS`` would run."""
    args = build_parser().parse_args(["train", *flags])
    return resolve({k: v for k, v in vars(args).items() if k in FIELDS})


def test_disk_full_at_a_save_keeps_the_previous_checkpoint(tmp_path: Path, uninterrupted: Path,
                                                            monkeypatch: pytest.MonkeyPatch, fault: Fault) -> None:
    fault.injected("disk full while a checkpoint is written")
    out = tmp_path / "full"
    last = out / "checkpoints" / "last.pt"
    real_save, before = torch.save, []

    def fills_the_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if not last.exists():  # the first checkpoint (step 2) is written whole
            return real_save(obj, f, *args, **kwargs)
        before.append(last.read_bytes())  # the second (step 4): half of it fits, then the disk is full
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:buffer.tell() // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(CheckpointWriteError) as info:
        train_api(_settings(*TINY, *FAST, *STEPS, "--out", str(out)))
    monkeypatch.undo()
    assert str(info.value) == (f"cannot write checkpoint '{last}': No space left on device; the previous file at "
                               f"that path, if any, is unchanged")
    assert info.value.__cause__.errno == errno.ENOSPC
    assert len(before) == 1 and last.read_bytes() == before[0]  # untouched by the failed save ...
    assert load_checkpoint(last)["step"] == 2  # ... and whole (its checksum holds)
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left
    _resume(out)
    assert_same_run(out, uninterrupted)
    fault.nothing_lost()


def test_checkpoint_gets_the_permissions_of_an_ordinary_file(tmp_path: Path) -> None:
    # Through a temporary file, but not mkstemp's: its 0600 would hide checkpoints from the user's group.
    previous = os.umask(0o022)
    try:
        save_checkpoint({"step": 1}, tmp_path / "last.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o644


# The ordinary CLI, whose second checkpoint write stalls after half of the file: the test kills it there.
STALLING_SAVE = """
import io, sys, time, torch
real, calls = torch.save, []
def stalls(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) < 2:
        return real(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real(obj, buffer, *args, **kwargs)
    f.write(buffer.getvalue()[:buffer.tell() // 2])
    f.flush()
    open(sys.argv[1], "w").close()
    time.sleep(600)
torch.save = stalls
from kohonen_vq.cli import main
sys.exit(main(["train", *sys.argv[2:]]))
"""


def test_kill_while_a_checkpoint_is_written(tmp_path: Path, uninterrupted: Path, fault: Fault) -> None:
    fault.injected("kill -9 while a checkpoint is written")
    out, stalled = tmp_path / "run", tmp_path / "stalled"
    checkpoints = out / "checkpoints"
    proc = start([sys.executable, "-c", STALLING_SAVE, str(stalled), *TINY, *FAST, *STEPS, "--out", str(out)])
    wait_for(stalled, proc)
    before = (checkpoints / "last.pt").read_bytes()
    _kill(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert (checkpoints / "last.pt").read_bytes() == before and load_checkpoint(checkpoints / "last.pt")["step"] == 2
    leftover = [p.name for p in checkpoints.iterdir() if p.name not in ("last.pt", "best.pt")]
    assert len(leftover) == 1 and leftover[0].startswith(".last.pt.") and leftover[0].endswith(".tmp")  # hidden
    _resume(out)  # ignores the half-written temporary file, and removes it with its next save
    assert_same_run(out, uninterrupted)
    fault.nothing_lost()


# --- truncated, corrupted and crafted checkpoints ----------------------------------------------------------------

def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _scramble(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle - 256] + os.urandom(512) + data[middle + 256:]


def _scramble_header(data: bytes) -> bytes:  # the zip directory at the end, where torch looks first
    return data[:-200] + os.urandom(200)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _finished_run(tmp_path_factory.mktemp("finished") / "run", "--max-steps", "2", "--eval-every", "2")


@pytest.mark.parametrize("damage", [_truncate, _scramble_header])
def test_damaged_checkpoint_is_refused_and_kept(tmp_path: Path, finished_run: Path, damage, fault: Fault) -> None:
    fault.injected("damaged checkpoint given to --resume")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").mkdir()
    damaged = damage((finished_run / "checkpoints" / "last.pt").read_bytes())
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(damaged)
    result = run_subprocess(_cli("train", "--out", str(out), "--resume", "--no-progress", "--max-steps", "4"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and str(last) in error[0] and "not a readable checkpoint" in error[0], result.stderr
    assert last.read_bytes() == damaged  # the failed resume wrote nothing over it
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "last.pt"]
    fault.nothing_lost()


def test_checkpoint_with_random_bytes_in_the_middle(tmp_path: Path, finished_run: Path,
                                                    capsys: pytest.CaptureFixture[str], fault: Fault) -> None:
    """Random bytes in the middle of the file mostly land in tensor data, which torch.load does not check:
    the checkpoint's SHA-256 of its contents catches them (before it, such a file resumed with garbage weights)."""
    fault.injected("damaged checkpoint given to --resume", count=5)
    good = (finished_run / "checkpoints" / "last.pt").read_bytes()
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    for trial in range(5):
        damaged = _scramble(good)
        path.write_bytes(damaged)
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--out", str(tmp_path), "--resume", "--no-progress", "--max-steps", "4"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and str(path) in lines[0], err
        assert path.read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints", "last.pt"]
    fault.nothing_lost()


def _touches(marker: Path) -> Calls:
    """An object whose unpickling creates ``marker``: code a checkpoint must never get to run."""
    return Calls(os.system, f"touch {marker}")


def _torch_file(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _edit_weights(good: bytes) -> bytes:
    """A well-formed file whose weights changed after it was written (its checksum no longer matches)."""
    state = torch.load(io.BytesIO(good), weights_only=True)
    next(iter(state["model"].values())).view(-1)[0] += 1
    return _torch_file(state)


REFUSED = ("refusing to load '{path}': it holds a pickled Python object (posix.system), and unpickling one can run "
           "arbitrary code; kohonen-vq checkpoints hold only tensors, numbers, strings, lists and dicts (torch.load "
           "weights_only=True)")
UNTRUSTED = [  # how the file is made from a good checkpoint, the message ("..." at the end: a prefix)
    pytest.param(lambda good, marker: _torch_file({"format": FORMAT, "step": 2, "x": _touches(marker)}), REFUSED,
                 id="crafted_torch_file"),
    pytest.param(lambda good, marker: pickle.dumps({"format": FORMAT, "x": _touches(marker)}, protocol=2), REFUSED,
                 id="crafted_pickle"),
    pytest.param(lambda good, marker: b"not a checkpoint", "'{path}' is not a readable checkpoint: ...",
                 id="not_a_torch_file"),
    pytest.param(lambda good, marker: b"",
                 "'{path}' is not a readable checkpoint (truncated or not a torch file?): EOFError", id="empty"),
    pytest.param(lambda good, marker: _truncate(good), "'{path}' is not a readable checkpoint (truncated or not a "
                 "torch file?): PytorchStreamReader failed reading zip archive: failed finding central directory...",
                 id="truncated"),
    pytest.param(lambda good, marker: _torch_file({"step": 2, "model": {}}),
                 "'{path}' is not a kohonen-vq training checkpoint (format 'kohonen_vq.train/1')", id="other_format"),
    pytest.param(lambda good, marker: _edit_weights(good), "'{path}' is not a readable checkpoint: its contents do not "
                 "match their checksum (the file is corrupted)", id="edited_weights"),
]


@pytest.mark.parametrize("make, message", UNTRUSTED)
def test_untrusted_checkpoint_is_refused(tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture[str],
                                         make: Callable[[bytes, Path], bytes], message: str, fault: Fault) -> None:
    fault.injected("crafted checkpoint (pickled code)" if message == REFUSED else
                   "damaged checkpoint given to --resume")
    marker, path = tmp_path / "executed", tmp_path / "given.pt"
    data = make((finished_run / "checkpoints" / "last.pt").read_bytes(), marker)
    path.write_bytes(data)
    status, line = run_cli(capsys, "train", "--resume", str(path), "--out", str(tmp_path / "run"), "--no-progress")
    assert status == 2
    assert_line(line, f"kohonen-vq train: error: {message.replace('{path}', str(path))}")
    assert not marker.exists()  # nothing in the file ran
    assert path.read_bytes() == data and not (tmp_path / "run").exists()
    fault.nothing_lost()


# --- a run folder that cannot be written -----------------------------------------------------------------------

def test_out_under_a_regular_file_fails_before_training(tmp_path: Path, fault: Fault) -> None:
    fault.injected("run folder that cannot be created")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    result = run_subprocess(_cli("train", *TINY, *FAST, "--max-steps", "2", "--out", str(blocker / "run")))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr and str(blocker) in result.stderr
    assert "step" not in result.stdout  # no training output
    assert blocker.read_text() == "not a folder\n"
    fault.nothing_lost()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_read_only_parent_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                fault: Fault) -> None:
    fault.injected("run folder that cannot be created")
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert train(parent / "run", *FAST, "--max-steps", "2") != 0
        assert "error:" in capsys.readouterr().err
        assert list(parent.iterdir()) == []
        fault.nothing_lost()
    finally:
        parent.chmod(0o700)


# --- a rank that raises in a 2-process gloo job ------------------------------------------------------------------

# Rank 1 runs the ordinary CLI with train_step made to raise at its third call; rank 0 is the plain CLI, left
# waiting in a collective for a rank that is gone: torchrun must tear the job down rather than let it hang.
FAULTY_RANK = """
import os, sys
from kohonen_vq.train import trainer
if os.environ["RANK"] == "1":
    real, calls = trainer.train_step, []
    def faulty(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected fault on rank 1")
        return real(*args, **kwargs)
    trainer.train_step = faulty
from kohonen_vq.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_a_rank_that_raises_fails_the_whole_job_quickly(tmp_path: Path, fault: Fault) -> None:
    fault.injected("a rank raises in a 2-process gloo job")
    t0 = time.monotonic()
    result = run_subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--no-python", sys.executable, "-c", FAULTY_RANK, *TINY, *FAST, "--max-steps", "200",
                             "--eval-every", "2", "--out", str(tmp_path / "ddp")], timeout=60)
    elapsed = time.monotonic() - t0
    assert result.returncode != 0
    assert "injected fault on rank 1" in result.stderr, result.stderr[-3000:]
    assert elapsed < 60
    assert "best val loss" not in result.stdout  # rank 0 did not go on alone
    last = tmp_path / "ddp" / "checkpoints" / "last.pt"
    if last.exists():  # a checkpoint written before the fault is whole
        assert load_checkpoint(last)["step"] == 2
    fault.nothing_lost()


# --- config files are data -------------------------------------------------------------------------------------

CODE = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize("suffix, template, message", [
    pytest.param(".json", '{{"num_codes": 16, "exec": "{code}"}}', "unknown setting 'exec'", id="unknown_key_json"),
    pytest.param(".toml", 'num_codes = 16\n__class__ = "{code}"\n', "unknown setting '__class__'",
                 id="unknown_key_toml"),
    pytest.param(".json", '{{"lr": "{code}"}}', "must be of type float", id="float_json"),
    pytest.param(".toml", 'grid = "{code}"\n', "grid must look like", id="grid_toml"),
    pytest.param(".toml", 'max_steps = "{code}"\n', "must be of type int", id="int_toml"),
    pytest.param(".json", '{{"quantizer": "{code}"}}', "must be one of", id="choice_json"),
    pytest.param(".json", '{{"preset": "{code}"}}', "unknown preset", id="preset_json"),
])
def test_config_file_is_data_only(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, template: str,
                                  message: str, fault: Fault) -> None:
    fault.injected("config file carrying code")
    marker = tmp_path / "executed"
    path = tmp_path / f"settings{suffix}"
    path.write_text(template.format(code=CODE.format(marker=marker)))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "run").exists()
    fault.nothing_lost()


def test_code_in_a_string_setting_stays_a_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 fault: Fault) -> None:
    """A code-like value of a free-text setting (the run folder) is used as a name, never evaluated."""
    fault.injected("config file carrying code")
    marker = tmp_path / "executed"
    text = CODE.format(marker=marker)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"out": text}))
    monkeypatch.chdir(tmp_path)
    cfg = resolve(load_config_file(path))
    assert cfg.out == text and cfg.run_dir == text
    assert not marker.exists()
    fault.nothing_lost()
