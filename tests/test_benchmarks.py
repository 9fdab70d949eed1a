"""Smoke test of the benchmark suite: `benchmarks/run_all.py --quick` runs, and every result carries its target
entries. Timings are not unit tests, so no target is asserted to PASS."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = {"PASS", "FAIL"}
NO_VERDICT_PREFIXES = ("not run: ", "not measured: ", "no target on ")


def _one(out: Path, pattern: str) -> dict:
    (path,) = out.glob(pattern)
    return json.loads(path.read_text())


def _check_rows(rows: list[dict]) -> None:
    for row in rows:
        assert {"device", "target", "case", "value", "threshold", "compare", "what", "result", "pass"} <= row.keys()
        assert row["result"] in VERDICTS or row["result"].startswith(NO_VERDICT_PREFIXES), row
        assert (row["pass"] is None) == (row["result"] not in VERDICTS), row


def test_run_all_quick(tmp_path: Path) -> None:
    argv = [sys.executable, "benchmarks/run_all.py", "--quick", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ops = _one(tmp_path, "ops-cpu-*-quick.json")
    _check_rows(ops["targets"])
    by_device = {(t["device"], t["target"]) for t in ops["targets"]}
    for name in ("assign_vs_mm", "assign_vs_faiss", "assign_memory_vs_nk", "cluster_stats_memory_vs_nk",
                 "som_update_memory_vs_kk"):
        assert ("cpu", name) in by_device, name
    for name in ("assign_vs_mm", "assign_vs_torch", "assign_fast_mode", "assign_small_n_vs_mm_shape",
                 "cluster_stats_vs_copy_floor", "som_update_ms"):  # listed even where CUDA cannot run
        assert ("cuda", name) in by_device, name
    fast = [t for t in ops["targets"] if t["target"] == "assign_fast_mode"]
    assert fast and all(t["result"].startswith("not run: ") for t in fast)  # no CUDA here: listed, not judged
    cpu = ops["devices"]["cpu"]
    assert {"expand", "addmm", "cdist", "vqp", "faiss"} <= cpu["assign"][0]["baselines"].keys()
    assert all(r["native"]["peak_extra_bytes"] is not None for r in cpu["assign"])
    if not torch.cuda.is_available():
        assert ops["devices"]["cuda"] == {"skipped": "no CUDA device"}

    quantizer = _one(tmp_path, "quantizer-cpu-*-quick.json")
    _check_rows(quantizer["targets"])
    ratio = [t for t in quantizer["targets"] if t["target"] == "forward_over_assign"]
    assert {t["device"] for t in ratio} == {"cpu", "cuda"}
    assert next(t for t in ratio if t["device"] == "cpu")["value"] > 0

    if (ROOT / "benchmarks" / "bench_train.py").exists():
        assert _one(tmp_path, "train-cpu-*-quick.json")["cases"]

    (summary,) = tmp_path.glob("SUMMARY-cpu-*-quick.md")
    text = summary.read_text()
    for needle in ("## Targets", "assign_vs_faiss", "forward_over_assign", "kohonen_vq.build_info()", "torch "):
        assert needle in text, needle
