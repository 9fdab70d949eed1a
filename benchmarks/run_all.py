"""Runs every kohonen_vq benchmark, each in a child process: ops, quantizer, and train where
benchmarks/bench_train.py exists. Each writes its JSON (and Markdown); this writes the combined summary
SUMMARY-<device>-<machine tag>.md with every target's PASS/FAIL, the machine, the torch version and
kohonen_vq.build_info(). Exits non-zero if a benchmark failed (not if a target failed: figures are not tests).

    .venv/bin/python benchmarks/run_all.py [--quick] [--device cpu|cuda|all] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report as rp  # noqa: E402
import _timing as tm  # noqa: E402

import kohonen_vq  # noqa: E402

# bench_train's --quick still trains the full preset at batch 256: one quantiser at a small batch keeps the
# quick suite within a CI minute.
TRAIN_QUICK = ["--quantizers", "ksom", "--batch-size", "8"]


@dataclass(frozen=True)
class Job:
    bench: str
    device: str  # the device kind in the result's name
    argv: list[str]
    out: Path


def plan(args: argparse.Namespace, run_devices: list[str], kind: str) -> list[Job]:
    quick = ["--quick"] if args.quick else []
    jobs = []
    for bench in ("ops", "quantizer"):  # both run every requested device in one process
        out = args.out / f"{rp.stem(bench, kind, args.quick)}.json"
        jobs.append(Job(bench, kind, [str(HERE / f"bench_{bench}.py"), "--device", args.device, "--out", str(out),
                                      *quick], out))
    if (HERE / "bench_train.py").exists():  # one device per call
        for dev in run_devices:
            out = args.out / f"{rp.stem('train', dev, args.quick)}.json"
            extra = TRAIN_QUICK if args.quick else []
            jobs.append(Job("train", dev, [str(HERE / "bench_train.py"), "--device", dev, "--out", str(out),
                                           *quick, *extra], out))
    return jobs


def run(job: Job) -> dict[str, Any]:
    """Runs one benchmark (its progress goes to our stderr; its stdout repeats the JSON file, so it is dropped)."""
    print(f"== {job.bench} ({job.device}): {' '.join(job.argv)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *job.argv], stdout=subprocess.DEVNULL)
    status: dict[str, Any] = {"bench": job.bench, "device": job.device, "file": job.out.name,
                              "seconds": time.perf_counter() - t0, "returncode": proc.returncode}
    try:
        status["doc"] = json.loads(job.out.read_text())
    except (OSError, json.JSONDecodeError) as err:
        status["error"] = f"no result: {err}"
    if proc.returncode:
        status["error"] = f"exit {proc.returncode}"
    return status


def train_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """bench_train's own verdicts (it is maintained separately) as target rows."""
    return [rp.target_row(doc["device"], "train_quantizer_share",
                          f"{doc.get('preset')} {c['quantizer']} batch {c['batch_size']}", c.get("quantizer_share"),
                          None, "<=", f"bench_train: {c.get('target')}", passed=bool(c.get("pass")))
            for c in doc.get("cases", [])]


def all_targets(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in statuses:
        doc = s.get("doc", {})
        rows += train_targets(doc) if s["bench"] == "train" else doc.get("targets", [])
    return rows


def _load_lines(statuses: list[dict[str, Any]]) -> list[str]:
    """What other processes did to the timings, as each benchmark recorded it."""
    lines = []
    for s in statuses:
        doc = s.get("doc", {})
        for dev, res in doc.get("devices", {}).items():
            if "other_load_cores" in res:
                lines.append(f"- {s['bench']} ({dev}): other processes kept {res['other_load_cores']:.2f} cores "
                             f"busy on average")
        if "load_average_1m" in doc:
            load = doc["load_average_1m"]
            lines.append(f"- {s['bench']} ({s['device']}): 1-minute load average {load['before']:.2f} before, "
                         f"{load['after']:.2f} after (includes this benchmark)")
    return lines


def _reference_rows(statuses: list[dict[str, Any]]) -> list[list[Any]]:
    ops = next((s["doc"] for s in statuses if s["bench"] == "ops" and "doc" in s), {})
    return [[dev, r["reference"]["gemm_fp32"]["n"], f"{r['reference']['gemm_fp32']['gflops']:.0f}",
             f"{r['reference']['copy']['gbps']:.1f}"] for dev, r in ops.get("devices", {}).items() if "reference" in r]


def summary(args: argparse.Namespace, kind: str, statuses: list[dict[str, Any]], elapsed_s: float) -> str:
    m, info, targets = tm.machine_info(), kohonen_vq.build_info(), all_targets(statuses)
    took = ", ".join(f"{s['bench']} {s['device']} {s['seconds']:.0f} s" for s in statuses)
    counts = {r: sum(t["result"] == r for t in targets) for r in ("PASS", "FAIL")}
    gpu = f", {m['gpu_name']} (CUDA {m['cuda_runtime']})" if m.get("gpu_name") else ""
    lines = [f"# kohonen_vq benchmarks: {kind}, {tm.machine_tag(kind)}"
             f"{' (QUICK: smoke-test sizes, figures not meaningful)' if args.quick else ''}", "",
             f"{rp.now_utc()}; `run_all.py --device {args.device}{' --quick' if args.quick else ''}` took "
             f"{elapsed_s:.0f} s ({took}).",
             f"Machine: {m['cpu_model']}, {m['cores_available']} cores, {m['torch_threads']} torch threads{gpu}; "
             f"{m['platform']}; Python {m['python']}; torch {m['torch']}.",
             f"Targets: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {len(targets) - sum(counts.values())} without "
             f"a verdict (not run on this machine, not measured, not implemented, or reported only)."]
    lines += [f"**Benchmark {s['bench']} ({s['device']}) failed: {s['error']}.**" for s in statuses if "error" in s]
    lines += ["", "Other load during the timings (figures are skewed where it is well above 0):",
              *_load_lines(statuses)]
    lines += rp.targets_table(targets)
    lines += rp.table("Reference rates (same run, ops benchmark)", ["device", "GEMM n", "fp32 GFLOP/s", "copy GB/s"],
                      _reference_rows(statuses))
    lines += ["", "## Results (details and every figure)", "", *(f"- {s['bench']} ({s['device']}): `{s['file']}`"
                                                                 for s in statuses)]
    lines += ["", "## kohonen_vq.build_info()", "", "```json", json.dumps(info, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, under a minute in total (CI smoke test)")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="all = CPU, plus CUDA when available and built")
    p.add_argument("--out", type=Path, default=rp.RESULTS, help="folder of the results (default benchmarks/results)")
    args = p.parse_args()
    t0 = time.perf_counter()
    run_devices = [d for d, reason in tm.devices_to_run(args.device, kohonen_vq.build_info()["cuda"]).items()
                   if reason is None]
    kind = "cuda" if "cuda" in run_devices else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    statuses = [run(job) for job in plan(args, run_devices, kind)]
    path = args.out / f"{rp.stem('SUMMARY', kind, args.quick)}.md"
    path.write_text(summary(args, kind, statuses, time.perf_counter() - t0))
    print(f"run_all: wrote {path}", file=sys.stderr)
    sys.exit(1 if any("error" in s for s in statuses) else 0)


if __name__ == "__main__":
    main()
