"""kohonen-vq train under faults (issue 7, "Faults" and "Untrusted files"): kill -9 then --resume, truncated and
corrupted checkpoints, a run folder that cannot be written, a rank that raises in a 2-process gloo job, and
config files carrying unknown keys or strings that look like code."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kohonen_vq.cli import main
from kohonen_vq.train import load_checkpoint

from test_train import TIMEOUT_S, TINY, run_subprocess, train

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--val-limit", "16", "--no-figures", "--device", "cpu", "--seed", "5"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kohonen_vq", *args]


# --- kill -9, then --resume ---------------------------------------------------------------------------------

def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    steps = ["--max-steps", "60", "--eval-every", "2"]
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli("train", *TINY, *FAST, *steps, "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out / "checkpoints" / "last.pt")["step"]  # the last checkpoint is whole
    assert 2 <= killed_at < 60

    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert train(tmp_path / "whole", *FAST, *steps) == 0
    assert (out / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
    resumed, whole = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (out, tmp_path / "whole"))
    assert resumed["step"] == whole["step"] == 60
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


# --- truncated and corrupted checkpoints ---------------------------------------------------------------------

def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _scramble(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle - 256] + os.urandom(512) + data[middle + 256:]


def _scramble_header(data: bytes) -> bytes:  # the zip directory at the end, where torch looks first
    return data[:-200] + os.urandom(200)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    with torch.random.fork_rng():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert train(out, *FAST, "--max-steps", "2", "--eval-every", "2") == 0
        finally:
            torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("damage", [_truncate, _scramble_header])
def test_damaged_checkpoint_is_refused_and_kept(tmp_path: Path, finished_run: Path, damage) -> None:
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


def test_checkpoint_with_random_bytes_in_the_middle(tmp_path: Path, finished_run: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Random bytes in the middle of the file mostly land in tensor data, which torch.load does not check:
    the checkpoint's SHA-256 of its contents catches them (before it, such a file resumed with garbage weights)."""
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


# --- a run folder that cannot be written -----------------------------------------------------------------------

def test_out_under_a_regular_file_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    result = run_subprocess(_cli("train", *TINY, *FAST, "--max-steps", "2", "--out", str(blocker / "run")))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr and str(blocker) in result.stderr
    assert "step" not in result.stdout  # no training output
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_read_only_parent_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert train(parent / "run", *FAST, "--max-steps", "2") != 0
        assert "error:" in capsys.readouterr().err
        assert list(parent.iterdir()) == []
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


def test_a_rank_that_raises_fails_the_whole_job_quickly(tmp_path: Path) -> None:
    start = time.monotonic()
    result = run_subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "--no-python", sys.executable, "-c", FAULTY_RANK, *TINY, *FAST, "--max-steps", "200",
                             "--eval-every", "2", "--out", str(tmp_path / "ddp")], timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "injected fault on rank 1" in result.stderr, result.stderr[-3000:]
    assert elapsed < 60
    assert "best val loss" not in result.stdout  # rank 0 did not go on alone
    last = tmp_path / "ddp" / "checkpoints" / "last.pt"
    if last.exists():  # a checkpoint written before the fault is whole
        assert load_checkpoint(last)["step"] == 2


# --- config files are data -------------------------------------------------------------------------------------

CODE = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize("suffix, template, message", [
    (".json", '{{"num_codes": 16, "exec": "{code}"}}', "unknown setting 'exec'"),
    (".toml", 'num_codes = 16\n__class__ = "{code}"\n', "unknown setting '__class__'"),
    (".json", '{{"lr": "{code}"}}', "must be of type float"),
    (".toml", 'grid = "{code}"\n', "grid must look like"),
    (".toml", 'max_steps = "{code}"\n', "must be of type int"),
    (".json", '{{"quantizer": "{code}"}}', "must be one of"),
    (".json", '{{"preset": "{code}"}}', "unknown preset"),
])
def test_config_file_is_data_only(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, template: str,
                                  message: str) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / f"settings{suffix}"
    path.write_text(template.format(code=CODE.format(marker=marker)))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_code_in_a_string_setting_stays_a_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A code-like value of a free-text setting (the run folder) is used as a name, never evaluated."""
    from kohonen_vq.train import resolve
    from kohonen_vq.train.config import load_config_file

    marker = tmp_path / "executed"
    text = CODE.format(marker=marker)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"out": text}))
    monkeypatch.chdir(tmp_path)
    cfg = resolve(load_config_file(path))
    assert cfg.out == text and cfg.run_dir == text
    assert not marker.exists()
