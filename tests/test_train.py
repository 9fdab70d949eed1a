"""kohonen-vq train: settings and CLI errors, run folder, summary definitions, bit-for-bit resume, atomic and
safe checkpoints, validation without side effects, batch order, SIGTERM, and a 2-process gloo run."""
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
from kohonen_vq.train import (CheckpointError, load_checkpoint, resolve, resume_config, save_checkpoint,
                              steps_to_within, summarize)
from kohonen_vq.train import checkpoint as checkpoint_module
from kohonen_vq.train.batches import StepBatches, build_datasets, val_loader
from kohonen_vq.train.config import FIELDS, flag
from kohonen_vq.train.evaluate import evaluate
from kohonen_vq.train.runtime import StopSignals
from kohonen_vq.train.trainer import build

TINY = ["--hidden", "16", "--res-channels", "8", "--embedding-dim", "8", "--num-codes", "16", "--batch-size", "8",
        "--no-progress"]
TIMEOUT_S = 120


pytestmark = pytest.mark.usefixtures("one_thread")


def train(out: Path, *args: str) -> int:
    return main(["train", *TINY, "--out", str(out), *args])


def start(argv: list[str], **kwargs) -> subprocess.Popen:
    """Starts argv on one thread in its own process group (so it can be signalled or killed as a whole)."""
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True, **kwargs)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Waits until ``path`` exists while ``proc`` runs (a process that ends first fails the test)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"


def run_subprocess(argv: list[str], timeout: float = TIMEOUT_S, **kwargs) -> subprocess.CompletedProcess:
    """Runs argv in its own process group, killed as a whole if it outlives ``timeout`` (a hang fails fast)."""
    proc = start(argv, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{argv} did not finish within {timeout} s\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# --- settings and command line -------------------------------------------------------------------------

def test_help_documents_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in FIELDS:
        assert flag(name) in text
    for extra in ("--config", "--resume", "--no-update-empty", "cifar10-vqvae", "imagenet-vqvae2", "faces-vqvae2"):
        assert extra in text


def test_presets_carry_the_paper_settings() -> None:
    cifar = resolve({"preset": "cifar10-vqvae", "data_root": "/data"})
    assert (cifar.lr, cifar.batch_size, cifar.grad_clip, cifar.max_steps, cifar.eval_every) == (1e-3, 256, 1.0, 30000, 1000)
    imagenet = resolve({"preset": "imagenet-vqvae2", "data_root": "/data"})
    assert (imagenet.arch, imagenet.lr, imagenet.batch_size, imagenet.image_size) == ("vqvae2", 3e-4, 128, 256)
    assert resolve({}).preset == "samples-vqvae" and resolve({}).run_dir == os.path.join("runs", "samples-vqvae")


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"preset": "samples-vqvae2", "num-codes": 64, "grid": [8, 8], "update_empty": false, "lr": 1}'),
    (".toml", 'preset = "samples-vqvae2"\nnum_codes = 64\ngrid = "8x8"\nupdate-empty = false\nlr = 1'),
])
def test_config_file_then_command_line(tmp_path: Path, suffix: str, text: str) -> None:
    from kohonen_vq.train.config import load_config_file

    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    values = load_config_file(path)
    cfg = resolve({**values, "num_codes": 16, "grid": (4, 4)})  # flags given on the command line win
    assert (cfg.arch, cfg.num_codes, cfg.grid, cfg.update_empty, cfg.lr) == ("vqvae2", 16, (4, 4), False, 1.0)


@pytest.mark.parametrize("text, message", [('{"num_kodes": 3}', "unknown setting 'num_kodes'"),
                                           ('{"max_steps": "10"}', "must be of type int"),
                                           ('{"update_empty": 1}', "must be of type bool"),
                                           ('{"quantizer": "kmeans"}', "must be one of"),
                                           ('{"grid": "3y3"}', "grid must look like"),
                                           ('{"max_steps": ', "cannot parse")])
def test_config_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--preset", "cifar-10"], "invalid choice: 'cifar-10'"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--max-steps", "ten"], "invalid int value"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--grid", "3x3"], "holds 9 nodes but num_codes is 512"),
    (["--grid", "3y3"], "grid must look like"),
    (["--quantizer", "kmeans"], "invalid choice: 'kmeans'"),
    (["--preset", "cifar10-vqvae"], "pass --data-root DIR"),
    (["--data-root", "/data"], "samples dataset is built in"),
    (["--image-size", "30"], "multiple of 4"),
])
def test_bad_settings_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_dataset_root_exits_1_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--preset", "cifar10-vqvae", "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "CIFAR-10 root not found" in err and "cifar-10-python.tar.gz" in err


# --- a run and its folder --------------------------------------------------------------------------------

def test_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train(out, "--max-steps", "6", "--eval-every", "3", "--quantizer", "ema") == 0
    assert "best val loss" in capsys.readouterr().out  # the one-line summary
    config = json.loads((out / "config.json").read_text())
    assert config["quantizer"] == "ema" and config["max_steps"] == 6 and config["lr"] == 1e-3
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == ["step", "train_loss", "train_recon_loss", "val_loss", "train_perplexity_latent",
                                   "val_perplexity_latent", "usage_latent", "topographic_error_latent",
                                   "skipped_batches"]
    assert [line.split(",")[0] for line in lines[1:]] == ["3", "6"]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("best_val_loss", "steps_to_10pct", "steps_to_20pct", "final_val_perplexity", "final_usage",
                "final_topographic_error"):
        assert key in summary
    assert 0 < summary["final_usage"]["latent"] <= 1
    for name in ("loss.png", "perplexity.png", "codebook_latent.png"):
        assert (out / name).stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["step"] == summary["best_step"] and load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 6
    assert train(out, "--max-steps", "6") == 1  # the folder holds a run: --resume or --overwrite
    assert "already holds a run" in capsys.readouterr().err


def test_vqvae2_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(out, "--preset", "samples-vqvae2", "--image-size", "16", "--max-steps", "2", "--eval-every", "2",
                 "--val-limit", "16", "--quantizer", "gradient-som") == 0
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "train_perplexity_top" in header and "usage_bottom" in header
    assert (out / "codebook_top.png").exists() and (out / "codebook_bottom.png").exists()


def test_steps_to_within_and_summary() -> None:
    steps, losses = [1000, 2000, 3000, 4000, 5000], [0.30, 0.23, 0.215, 0.20, 0.21]
    assert steps_to_within(steps, losses, 0.1) == 3000  # first loss <= 0.22
    assert steps_to_within(steps, losses, 0.2) == 2000  # first loss <= 0.24
    assert steps_to_within(steps, [float("nan"), 0.5], 0.1) == 2000
    assert steps_to_within(steps[:2], [float("nan")] * 2, 0.1) is None
    rows = [{"step": s, "val_loss": v, "train_perplexity_latent": 1.0, "val_perplexity_latent": 2.0,
             "usage_latent": 0.5, "topographic_error_latent": 0.1, "skipped_batches": 0}
            for s, v in zip(steps, losses)]
    summary = summarize(rows, ["latent"])
    assert (summary["best_val_loss"], summary["best_step"]) == (0.20, 4000)
    assert (summary["steps_to_10pct"], summary["steps_to_20pct"], summary["final_usage"]) == (3000, 2000, {"latent": 0.5})


# --- resume -----------------------------------------------------------------------------------------------

def _stop_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """Makes the loop see a SIGTERM after ``steps`` steps (as if it had arrived during that step)."""
    calls = {"n": 0}

    def requested(self: StopSignals, runtime) -> bool:
        calls["n"] += 1
        if calls["n"] >= steps:
            self.received = signal.SIGTERM
        return self.received is not None

    monkeypatch.setattr(StopSignals, "requested", requested)


@pytest.mark.parametrize("stop", ["end_of_run", "signal"])
def test_resume_is_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str) -> None:
    # CPU: the claim is bit-for-bit CPU resume (CUDA atomics and cuDNN need not add in the same order twice)
    common = ["--eval-every", "3", "--no-figures", "--quantizer", "ksom", "--seed", "3", "--device", "cpu"]
    assert train(tmp_path / "whole", "--max-steps", "6", *common) == 0
    part = tmp_path / "part"
    if stop == "end_of_run":  # a finished 3-step run extended to 6
        assert train(part, "--max-steps", "3", *common) == 0
    else:  # stopped by SIGTERM at step 4, between two validations
        with monkeypatch.context() as m:
            _stop_after(m, 4)
            assert train(part, "--max-steps", "6", *common) == 128 + signal.SIGTERM
        assert load_checkpoint(part / "checkpoints" / "last.pt")["step"] == 4
    assert main(["train", "--out", str(part), "--resume", "--max-steps", "6", "--no-progress"]) == 0
    assert (part / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
    whole, resumed = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (tmp_path / "whole", part))
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_resume_refuses_changed_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path / "run", "--max-steps", "2", "--eval-every", "2", "--no-figures") == 0
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "run"), "--resume", "--lr", "0.5"])
    assert "cannot change --lr when resuming" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["config"]
    assert resume_config(saved, {"max_steps": 9, "device": "cpu"}).max_steps == 9


# --- checkpoints ------------------------------------------------------------------------------------------

def test_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(10)
        f.truncate()  # half a file written ...
        raise OSError("disk full")  # ... then the write fails

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


class Payload:
    """Stands for any pickled object: unpickling one can run arbitrary code."""


def test_loading_refuses_pickled_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint_module.FORMAT, "step": 1, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(path)])
    assert "refusing to load" in capsys.readouterr().err
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_rng_states_round_trip() -> None:
    import random

    import numpy as np

    state = checkpoint_module.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint_module.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


# --- validation and data order ----------------------------------------------------------------------------

@pytest.mark.parametrize("quantizer", ["ksom", "gradient"])
def test_validation_changes_nothing(quantizer: str) -> None:
    cfg = resolve({"hidden": 16, "res_channels": 8, "embedding_dim": 8, "num_codes": 16, "batch_size": 8,
                   "val_limit": 40, "quantizer": quantizer})
    model = build(cfg).train()
    _, val_sets = build_datasets(cfg)
    model(torch.stack([val_sets["val"][i] for i in range(4)]))  # one training step: t = 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = evaluate(model, {"val": val_loader(val_sets["val"], cfg, 0, 1, False)}, torch.device("cpu"))
    assert model.training and model.quantizer.step == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert set(metrics) == {"val_loss", "val_perplexity_latent", "usage_latent", "topographic_error_latent"}
    x = torch.stack([val_sets["val"][i] for i in range(40)])
    model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(model(x).recon, x).item()  # plain MSE, no commitment term
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_batch_order_is_a_function_of_seed_and_step() -> None:
    full = StepBatches(50, 8, seed=1, start=0, stop=12)
    batches = list(full)
    assert full.steps_per_epoch == 6 and all(len(b) == 8 for b in batches)
    epoch0 = sum(batches[:6], [])
    assert len(set(epoch0)) == 48  # no image twice within an epoch
    assert batches[6:] != batches[:6]  # a new permutation each epoch
    assert list(StepBatches(50, 8, seed=1, start=5, stop=12)) == batches[5:]  # resuming at step 5
    ranks = [list(StepBatches(50, 8, seed=1, start=0, stop=12, rank=r, world_size=2)) for r in range(2)]
    for step, batch in enumerate(batches):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
    assert list(StepBatches(50, 8, seed=2, start=0, stop=1)) != batches[:1]
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepBatches(5, 8, seed=0, start=0, stop=1)


# --- processes --------------------------------------------------------------------------------------------

def test_sigterm_saves_and_exits(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "kohonen_vq", "train", *TINY, "--max-steps", "100000", "--eval-every", "2",
            "--out", str(out), "--device", "cpu"]
    proc = start(argv)
    try:
        wait_for(out / "checkpoints" / "last.pt", proc)  # training is under way
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] >= 2


def test_two_process_gloo_run_matches_one_process(tmp_path: Path) -> None:
    common = [*TINY, "--max-steps", "4", "--eval-every", "2", "--device", "cpu", "--no-figures", "--val-limit", "64"]
    result = run_subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "kohonen_vq.train", *common, "--out", str(tmp_path / "ddp")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best val loss") == 1  # only rank 0 prints and writes
    assert main(["train", *common, "--out", str(tmp_path / "single")]) == 0
    rows = {name: (tmp_path / name / "metrics.csv").read_text().splitlines() for name in ("ddp", "single")}
    assert len(rows["ddp"]) == len(rows["single"]) == 3
    for ddp_line, single_line in zip(rows["ddp"][1:], rows["single"][1:]):
        ddp_values, single_values = (list(map(float, line.split(","))) for line in (ddp_line, single_line))
        # the same global batches, so the same run up to float summation order
        assert ddp_values == pytest.approx(single_values, rel=1e-3, abs=1e-5)
    ddp, single = (load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"] for name in ("ddp", "single"))
    assert ddp["quantizer._step"] == single["quantizer._step"] == 4
    torch.testing.assert_close(ddp["quantizer.codebook"], single["quantizer.codebook"], rtol=1e-3, atol=1e-4)


def test_non_finite_batch_is_skipped() -> None:
    from kohonen_vq.train import train_step

    cfg = resolve({"hidden": 16, "res_channels": 8, "embedding_dim": 8, "num_codes": 16})
    model = build(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")
    _, finite = train_step(model, optimizer, x, grad_clip=1.0)
    assert not finite and int(model.quantizer.skipped_batches) == 1
    for key, value in model.state_dict().items():
        if key not in ("quantizer._step", "quantizer.skipped_batches"):
            assert torch.equal(value, before[key]), key  # neither the weights nor the codebook moved


def test_info_prints_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    assert "version" in json.loads(capsys.readouterr().out)
