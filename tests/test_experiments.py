"""kohonen_vq.experiments: the studies' configurations, the runner's decisions on a run folder, aggregation with
the paper's definitions on synthetic metrics, and a --quick sweep end to end (resumable, report written)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kohonen_vq.cli import main as kohonen_vq_main
from kohonen_vq.experiments.aggregate import (Stat, aggregate, aggregate_records, csv_rows, load_record,
                                              markdown_table, write_csv)
from kohonen_vq.experiments.cli import main
from kohonen_vq.experiments.runner import Run, action, plan, to_flags
from kohonen_vq.experiments.studies import EMA_TUNED, KSOM_HARD, STUDIES, Config, select
from kohonen_vq.train.config import FIELDS, add_arguments

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = {"preset": "samples-vqvae", "max_steps": 4, "eval_every": 2}


# --- studies ---------------------------------------------------------------------------------------------

def _settings(study: str) -> list[dict]:
    return [c.settings() for c in STUDIES[study].configs]


def test_table1_is_ema_n0_by_update_empty() -> None:
    got = {(s["quantizer"], s["init_count"], s["update_empty"]) for s in _settings("table1")}
    assert got == {("ema", n0, upd) for n0 in (0.0, 1.0) for upd in (False, True)}
    assert all("neighbourhood" not in s and "shrink" not in s for s in _settings("table1"))  # EMA takes neither


def test_table2_and_table3_configurations() -> None:
    assert [(s["quantizer"], s.get("neighbourhood")) for s in _settings("table2")] == \
        [("ema", None), ("ksom", "hard"), ("ksom", "gaussian")]
    assert all("grid" not in s for s in _settings("table2"))  # the squarest 2D grid: 32x16 for K = 512
    pairs = _settings("table3")
    assert [s["quantizer"] for s in pairs] == ["ema", "ksom"] * 3
    for ema, ksom in zip(pairs[::2], pairs[1::2]):  # each pair shares N0 and update-0, neither is the tuned one
        assert (ema["init_count"], ema["update_empty"]) == (ksom["init_count"], ksom["update_empty"]) != (1.0, True)


def test_table4_table5_ksize_configurations() -> None:
    table4 = _settings("table4")
    assert {s["shrink"] for s in table4} == {1.0, 0.1, 0.01}
    assert {s["neighbourhood"] for s in table4} == {"hard", "gaussian", "exponential"}
    assert sorted(s["neighbourhood"] for s in table4 if s.get("grid") == (512,)) == ["gaussian", "hard"]  # 1D
    assert [s["quantizer"] for s in _settings("table5")] == ["gradient", "gradient-som", "ema", "ksom"]
    ksize = {(s["quantizer"], s["num_codes"]) for s in _settings("ksize")}
    assert ksize == {(q, k) for q in ("ema", "ksom") for k in (128, 256, 512, 1024, 2048, 4096)}


def test_names_identify_configurations() -> None:
    configs = {c for s in STUDIES.values() for c in s.configs}
    by_name: dict[str, dict] = {}
    for c in configs:
        assert by_name.setdefault(c.name, c.settings()) == c.settings()  # one name, one set of settings
    assert len({json.dumps(s, sort_keys=True, default=str) for s in by_name.values()}) == len(by_name)
    assert EMA_TUNED.name == "ema-n0_1-upd-K512" and KSOM_HARD.name == "ksom-hard-2d-tau0.1-n0_1-upd-K512"


def test_select() -> None:
    assert [s.name for s in select("all")] == ["table1", "table2", "table3", "table4", "table5", "ksize"]
    with pytest.raises(ValueError, match="unknown study 'table9'"):
        select("table9")
    with pytest.raises(ValueError, match="grid_dims must be 1 or 2"):
        Config("x", "ksom", grid_dims=3)


# --- runner ----------------------------------------------------------------------------------------------

def test_plan_shares_runs_between_studies(tmp_path: Path) -> None:
    runs = plan(select("all"), 2, BASE, tmp_path)
    configs = {c.name for s in select("all") for c in s.configs}
    assert len(runs) == 2 * len(configs) and len({r.folder for r in runs}) == len(runs)
    run = next(r for r in runs if r.config == EMA_TUNED and r.seed == 1)
    assert run.folder == tmp_path / "runs" / EMA_TUNED.name / "seed1"
    assert run.settings == {**BASE, **EMA_TUNED.settings(), "seed": 1, "out": str(run.folder)}
    with pytest.raises(ValueError, match="--quantizer is set by the sweep"):
        plan(select("smoke"), 1, {**BASE, "quantizer": "ema"}, tmp_path)
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        plan(select("smoke"), 0, BASE, tmp_path)


def test_to_flags_round_trips_through_the_train_parser() -> None:
    import argparse

    settings = {"quantizer": "ksom", "grid": (512,), "update_empty": False, "init_count": 0.0, "shrink": 0.01,
                "progress": False, "seed": 3}
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert vars(parser.parse_args(to_flags(settings))) == settings
    assert set(settings) <= set(FIELDS)


def _fake_run(tmp_path: Path, max_steps: int = 4, **saved: object) -> Run:
    """A run whose folder holds a checkpoint file and config.json (as a partial run's does)."""
    run = plan(select("smoke"), 1, {**BASE, "max_steps": max_steps}, tmp_path)[0]
    (run.folder / "checkpoints").mkdir(parents=True)
    (run.folder / "checkpoints" / "last.pt").write_bytes(b"")
    from kohonen_vq.train import resolve

    (run.folder / "config.json").write_text(json.dumps({**resolve({**run.settings, "max_steps": 4}).to_dict(),
                                                        **saved}))
    return run


def test_action_from_folder_state(tmp_path: Path) -> None:
    fresh = plan(select("smoke"), 1, BASE, tmp_path / "fresh")[0]
    assert action(fresh) == "start"
    run = _fake_run(tmp_path / "a")
    assert action(run) == "resume"  # a checkpoint, no final summary
    (run.folder / "summary.json").write_text(json.dumps({"steps": 4, "session_wall_s": 1.0}))
    assert action(run) == "skip"
    longer = plan(select("smoke"), 1, {**BASE, "max_steps": 8}, tmp_path / "a")[0]
    assert action(longer) == "resume"  # more steps asked for: continue the finished run
    with pytest.raises(ValueError, match="holds a run of 4 steps, more than --steps 2"):
        action(plan(select("smoke"), 1, {**BASE, "max_steps": 2}, tmp_path / "a")[0])
    other = _fake_run(tmp_path / "b", hidden=64)
    with pytest.raises(ValueError, match="holds a run with other settings \\(--hidden 64 there, 128 here\\)"):
        action(other)


# --- aggregation -----------------------------------------------------------------------------------------

def _write_run(run: Run, losses: list[float]) -> None:
    """A finished run's files with validation losses at steps 100, 200, ..."""
    run.folder.mkdir(parents=True, exist_ok=True)
    columns = ["step", "train_loss", "train_recon_loss", "val_loss", "train_perplexity_latent",
               "val_perplexity_latent", "usage_latent", "topographic_error_latent", "skipped_batches"]
    lines = [",".join(columns)] + [f"{100 * (i + 1)},1.0,1.0,{loss!r},5.0,{10.0 + i},0.5,0.25,0"
                                   for i, loss in enumerate(losses)]
    (run.folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run.folder / "config.json").write_text(json.dumps({"max_steps": 100 * len(losses)}))
    (run.folder / "summary.json").write_text(json.dumps({"steps": 100 * len(losses), "session_wall_s": 1.0}))


def test_aggregation_on_synthetic_runs(tmp_path: Path) -> None:
    runs = plan(select("smoke"), 2, {**BASE, "max_steps": 400}, tmp_path)
    ema = [r for r in runs if r.config == EMA_TUNED]
    # seed 0: best 0.30; +10 % (<= 0.33) first at step 200, +20 % (<= 0.36) at 200.
    # seed 1: best 0.40 (after a NaN); +10 % (<= 0.44) first at step 400, +20 % (<= 0.48) at 300.
    _write_run(ema[0], [1.0, 0.32, 0.30, 0.31])
    _write_run(ema[1], [math.nan, 0.5, 0.45, 0.40])
    records = {r.folder: rec for r in runs if (rec := load_record(r)) is not None}
    assert set(records) == {r.folder for r in ema}  # the KSOM runs have not finished
    stats = aggregate_records(list(records.values()))
    loss, steps10, steps20 = (stats[name][0] for name in ("best_val_loss", "steps_to_10pct", "steps_to_20pct"))
    assert loss.values == pytest.approx((300.0, 400.0)) and loss.std == pytest.approx(math.sqrt(5000))
    assert (steps10.values, steps10.mean, steps10.std) == ((200.0, 400.0), 300.0, pytest.approx(math.sqrt(20000)))
    assert (steps20.values, steps20.mean) == ((200.0, 300.0), 250.0)
    assert stats["val_perplexity"][0].values == (13.0, 13.0)  # the last row's
    assert stats["topographic_error"][0].n == 0  # no topography.json

    results = aggregate(select("smoke")[0], runs, records)
    table = markdown_table(results, tmp_path)
    assert "| EMA-VQ, N0=1, update-0 | 2/2 | 0 | 350.0 ± 70.7 | 300 ± 141 | 250 ± 71 |" in table
    assert f"[s0](runs/{EMA_TUNED.name}/seed0) [s1](runs/{EMA_TUNED.name}/seed1)" in table
    assert "| KSOM hard 2D, tau=0.1 | 0/2 | 0 | – |" in table
    rows = csv_rows(select("smoke")[0], results, tmp_path)
    write_csv(tmp_path / "t.csv", rows)
    assert rows[0]["best_val_loss_mean"] == pytest.approx(350.0) and rows[0]["steps_to_10pct_n"] == 2
    assert rows[0]["run_folders"] == f"runs/{EMA_TUNED.name}/seed0;runs/{EMA_TUNED.name}/seed1"
    assert "run_folders" in (tmp_path / "t.csv").read_text().splitlines()[0]

    record = records[ema[0].folder]
    assert not record.collapsed  # usage 0.5 of 512 codes
    record.summary["final_usage"]["latent"] = 1 / 512  # every validation latent on one code
    assert record.collapsed


def test_stat_format() -> None:
    assert Stat.of([1.0, None, math.inf, 3.0]).format(1) == "2.0 ± 1.4"
    assert Stat.of([2.0]).format(2) == "2.00" and Stat.of([]).format(1) == "–"


def test_claim_verdicts() -> None:
    from kohonen_vq.experiments.report import Claim, verdict

    def check(kind: str, a: list[float], b: list[float], higher: bool = False) -> str:
        return verdict(Claim("", "", EMA_TUNED, KSOM_HARD, "best_val_loss", kind, higher), Stat.of(a), Stat.of(b))

    assert check("better", [1.0, 1.2], [2.0, 2.2]) == "reproduced"  # lower loss, gap 1 > std 0.14
    assert check("better", [2.0, 2.2], [1.0, 1.2]) == "not reproduced (b better)"
    assert check("better", [1.0, 2.0], [1.2, 2.2]) == "within noise"  # gap 0.2 < std 0.71
    assert check("better", [5.0], [4.0], higher=True) == "reproduced"  # e.g. perplexity; one seed: no std
    assert check("no worse", [1.0, 1.2], [1.0, 1.2]) == "reproduced"  # equal is at least as good
    assert check("no worse", [1.1, 1.2], [1.0, 1.2]) == "within noise"  # worse by 0.05 < std 0.14
    assert check("no worse", [3.0, 3.0], [1.0, 1.0]) == "not reproduced (b better)"
    assert check("similar", [100.0], [104.0]) == "reproduced"  # within 5 %
    assert check("similar", [100.0, 160.0], [150.0, 160.0]) == "within noise"  # gap 25 < std 42
    assert check("similar", [100.0], [120.0]) == "not reproduced (a better)"


# --- end to end ------------------------------------------------------------------------------------------

def test_quick_sweep_end_to_end_and_resumable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "sweep", tmp_path / "report"
    argv = ["smoke", "--quick", "--seeds", "1", "--jobs", "2", "--out", str(out), "--report", str(report)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("start ") == 2 and "2 trained" in first
    folders = [out / "runs" / c.name / "seed0" for c in (EMA_TUNED, KSOM_HARD)]
    for folder in folders:
        assert (folder / "metrics.csv").read_text().count("\n") == 3  # header, steps 2 and 4
        topography = json.loads((folder / "topography.json").read_text())
        assert topography["step"] == 4 and set(topography["levels"]["latent"]) == \
            {"grid", "topographic_error", "decoded_neighbour_ratio"}
    stamps = [(f / "checkpoints" / "last.pt").stat().st_mtime_ns for f in folders]

    assert kohonen_vq_main(["sweep", *argv]) == 0  # the same sweep through kohonen-vq: nothing to train
    second = capsys.readouterr().out
    assert second.count("skipped ") == 2 and "start " not in second and "2 skipped" in second
    assert [(f / "checkpoints" / "last.pt").stat().st_mtime_ns for f in folders] == stamps

    (folders[1] / "summary.json").unlink()  # as if the run had died after its last checkpoint
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert f"resume {KSOM_HARD.name}/seed0" in third and "1 resumed, 1 skipped" in third

    results = (report / "RESULTS.md").read_text()
    assert "| EMA-VQ, N0=1, update-0 | 1/1 |" in results and "| KSOM hard 2D, tau=0.1 | 1/1 |" in results
    assert results.count(" min** wall") == 2  # the invocations that trained something
    assert "1 invocation(s) that only reused finished runs" in results
    for name in ("fig2_codebooks_latent.png", "fig3_perturbation.png", "fig6_perplexity_latent.png", "u_matrix.png"):
        assert f"(figures/{name})" in results and 1000 < (report / "figures" / name).stat().st_size < 300_000
    assert (report / "tables" / "smoke.md").exists() and "run_folders" in (report / "tables" / "smoke.csv").read_text()
    assert "seed" in (report / "tables" / "runs.csv").read_text().splitlines()[0]


def test_cli_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["smoke", "--out", str(tmp_path), "--", "--seed", "3"]) == 1
    assert "--seed after -- is set by the sweep: use its --seeds flag" in capsys.readouterr().err
    assert main(["smoke", "--jobs", "0", "--out", str(tmp_path)]) == 1
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table9"])
    assert "invalid choice: 'table9'" in capsys.readouterr().err
    # A file-system error (any OSError) is one line too, as in the train CLI.
    too_long = tmp_path / ("x" * 300)
    assert main(["smoke", "--quick", "--seeds", "1", "--out", str(too_long)]) == 1
    assert "File name too long" in capsys.readouterr().err
