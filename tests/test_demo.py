"""kohonen-vq demo with a handful of steps: three runs, REPORT.md with the Table-3-like table, and the figures."""
from __future__ import annotations

from pathlib import Path

import pytest

import torch

from kohonen_vq.cli import main
from kohonen_vq.train.demo import RUNS


pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "2", "--eval-every", "1", "--batch-size", "16", "--out", str(out),
                 "--no-progress"]) == 0
    report = (out / "REPORT.md").read_text()
    for label, _ in RUNS.values():
        assert f"| {label} |" in report
    for column in ("best val. loss", "steps to +10 %", "final perplexity", "codebook usage", "topographic error"):
        assert column in report
    for figure in ("val_loss.png", "perplexity.png", "codebooks.png"):
        assert f"({figure})" in report and (out / figure).stat().st_size > 1000
    for name in RUNS:
        assert (out / name / "metrics.csv").read_text().count("\n") == 3  # header + steps 1 and 2
    assert "report in" in capsys.readouterr().out


def test_demo_rejects_bad_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "0"]) == 1
    assert "--steps must be >= 1" in capsys.readouterr().err
