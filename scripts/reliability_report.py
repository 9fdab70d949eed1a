"""Runs the reliability tests (issue 7) and writes docs/reliability.md: every count in it comes from that run.

    .venv/bin/python scripts/reliability_report.py [--out docs/reliability.md] [extra pytest arguments]

It runs, in one pytest session with a small plugin that records each test's outcome:

- bad inputs: every test cited by the check tables of docs/errors.md (the documented input checks), all of
  tests/test_cli_errors.py and tests/test_ops_errors.py, and the property tests that feed the ops non-finite
  values and out-of-range indices (their hypothesis examples are counted one by one);
- faults: tests/test_faults.py and the 2-rank gloo tests of tests/test_quantizer_distributed.py. A fault test
  declares what it injects (pytest user properties "fault" and "faults_injected", see ``Fault`` in
  tests/test_faults.py) and records "intact" only once its assertions that nothing was lost or corrupted have
  passed, so a fault counts as harmless only if its test showed it;
- the checks of tests/test_error_table.py that keep docs/errors.md in step with the code.

Exit status: 0 if no test failed (expected failures, marked xfail, are listed but do not fail the report).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_error_table import table_rows  # noqa: E402  (the parser of docs/errors.md's tables)

BAD_INPUT_FILES = ("tests/test_cli_errors.py", "tests/test_ops_errors.py")
FAULT_FILES = ("tests/test_faults.py", "tests/test_quantizer_distributed.py")
PROPERTY_TESTS = tuple(f"tests/test_ops_properties.py::{name}[cpu]" for name in (
    "test_assign_non_finite_inputs", "test_cluster_stats_rejects_any_out_of_range_index",
    "test_som_update_skips_any_non_finite_batch"))
SYNC_TESTS = tuple(f"tests/test_error_table.py::{name}" for name in (
    "test_sources_were_parsed", "test_every_check_of_the_code_is_in_the_table",
    "test_every_row_is_a_message_of_the_code", "test_every_row_cites_existing_tests"))


@dataclass
class Result:
    """One test case: its outcome (passed, failed, skipped, xfailed, xpassed, error), why it was skipped or
    expected to fail, its user properties, and the hypothesis examples it ran."""

    outcome: str = "passed"
    reason: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    examples: int = 0


class Collector:
    """pytest plugin: a Result per test node id."""

    def __init__(self) -> None:
        self.results: dict[str, Result] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = self.results.setdefault(report.nodeid, Result())
        result.properties.update(dict(report.user_properties))
        if hasattr(report, "wasxfail"):
            result.outcome = "xpassed" if report.passed else "xfailed"
            result.reason = report.wasxfail
        elif report.skipped:
            result.outcome = "skipped"
            result.reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        elif report.failed:
            result.outcome = "failed" if report.when == "call" else "error"
            result.reason = report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash") else ""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        yield
        statistics = getattr(item, "hypothesis_statistics", "")  # set by hypothesis's own pytest plugin
        if call.when == "call" and statistics:
            self.results.setdefault(item.nodeid, Result()).examples = sum(
                int(passing) + int(failing)
                for passing, failing in re.findall(r"(\d+) passing, (\d+) failing", statistics))


def check_rows() -> list[Any]:
    """The rows of docs/errors.md that document a rejected input: the check tables and argparse's table."""
    return [row for row in table_rows() if "Message" in row.cells or "argparse's message" in row.cells]


def run(extra: list[str]) -> tuple[Collector, int, float]:
    cited = {t for row in check_rows() for t in row.tests if "::" in t}
    targets = sorted(cited | set(BAD_INPUT_FILES) | set(FAULT_FILES) | set(PROPERTY_TESTS) | set(SYNC_TESTS))
    collector = Collector()
    start = time.perf_counter()
    status = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *extra, *targets],
                         plugins=[collector])
    return collector, int(status), time.perf_counter() - start


def tally(results: list[Result]) -> Counter:
    return Counter(r.outcome for r in results)


def in_files(results: dict[str, Result], files: tuple[str, ...]) -> dict[str, Result]:
    return {node: r for node, r in results.items() if node.split("::")[0] in files}


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def report(collector: Collector, seconds: float, command: str) -> tuple[str, bool]:
    """The markdown report, and whether every test that ran passed (expected failures aside)."""
    results = collector.results
    counts = tally(list(results.values()))
    ok = counts["failed"] + counts["error"] == 0
    lines = ["# Reliability report", "",
             f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"commit {git_state()}; Python {platform.python_version()}, torch {torch.__version__}, "
             f"{platform.machine()} with {len(os.sched_getaffinity(0))} CPU cores, CUDA "
             f"{'available' if torch.cuda.is_available() else 'not available'}. {len(results)} test cases in "
             f"{seconds:.0f} s: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", "",
             "Every number below is counted from that run by the script (a pytest plugin that records each test's "
             "outcome); none is typed in. What the tests are is described in the script's docstring, in "
             "[errors.md](errors.md) (the input checks) and in tests/test_faults.py (the faults).", ""]

    # --- bad inputs
    rows = check_rows()
    row_state = Counter()
    for row in rows:
        outcomes = {results[t].outcome for t in row.tests if t in results}
        row_state["failing" if outcomes & {"failed", "error"} else "shown" if outcomes & {"passed"} else
                   "not run here"] += 1
    cited = {t: results[t] for row in rows for t in row.tests if t in results}
    bad = {**cited, **in_files(results, BAD_INPUT_FILES)}
    properties = {t: results[t] for t in PROPERTY_TESTS if t in results}
    examples = sum(r.examples for r in properties.values())

    # --- faults
    faults = {node: r for node, r in results.items() if "fault" in r.properties}
    kinds: dict[str, list[Result]] = {}
    for r in faults.values():
        kinds.setdefault(r.properties["fault"], []).append(r)
    ran = [r for r in faults.values() if r.outcome != "skipped"]
    injected = sum(int(r.properties["faults_injected"]) for r in ran)
    intact = sum(int(r.properties["faults_injected"]) for r in ran if r.properties.get("intact"))

    lines += ["## Summary", "", "| | Count |", "|---|---|",
              f"| Documented input checks (rows of errors.md's check tables) | {len(rows)} |",
              f"| ... shown by a passing test in this run | {row_state['shown']} |",
              f"| ... whose tests were all skipped here (see \"Not passed\") | {row_state['not run here']} |",
              f"| ... whose test failed | {row_state['failing']} |",
              f"| Bad inputs tried: test cases (each feeds at least one bad input and checks the error) | "
              f"{len([r for r in bad.values() if r.outcome != 'skipped'])} |",
              f"| Bad inputs tried: generated examples of the property tests ({len(properties)} tests) | {examples} |",
              f"| Faults injected | {injected} |",
              f"| ... after which the test showed that nothing was lost or corrupted | {intact} |",
              f"| Tests failed | {counts['failed'] + counts['error']} |", ""]

    lines += ["## Faults", "",
              "\"Nothing lost\": the faults whose test got past its assertions that every checkpoint, input file and "
              "result is intact (an interrupted run is resumed and must end bit-identical to an uninterrupted one).",
              "", "| Fault | Test cases | Faults injected | Passed | Failed | Expected failures | Nothing lost |",
              "|---|---|---|---|---|---|---|"]
    for kind, rs in sorted(kinds.items()):
        c, run_rs = tally(rs), [r for r in rs if r.outcome != "skipped"]
        skipped = f" (+{c['skipped']} skipped)" if c["skipped"] else ""
        lines.append(f"| {kind} | {len(run_rs)}{skipped} | {sum(int(r.properties['faults_injected']) for r in run_rs)} "
                     f"| {c['passed'] + c['xpassed']} | {c['failed'] + c['error']} | {c['xfailed']} | "
                     f"{sum(int(r.properties['faults_injected']) for r in run_rs if r.properties.get('intact'))} |")

    lines += ["", "## Bad inputs by source", "", "| Source | Test cases | Passed | Failed | Skipped |",
              "|---|---|---|---|---|"]
    for name, group in [("tests cited by errors.md's check tables", cited),
                        *[(f, in_files(results, (f,))) for f in BAD_INPUT_FILES]]:
        c = tally(list(group.values()))
        lines.append(f"| {name} | {len(group)} | {c['passed']} | {c['failed'] + c['error']} | {c['skipped']} |")
    for node, r in properties.items():
        lines.append(f"| `{node}` (hypothesis) | {r.examples} examples | {'all' if r.outcome == 'passed' else 0} | "
                     f"{'yes' if r.outcome == 'failed' else 0} | {'yes' if r.outcome == 'skipped' else 0} |")

    sync = tally([results[t] for t in SYNC_TESTS if t in results])
    lines += ["", f"errors.md in step with the code (tests/test_error_table.py's {len(SYNC_TESTS)} checks): "
                  f"{sync['passed']} passed, {sync['failed'] + sync['error']} failed.", ""]

    notable = {node: r for node, r in results.items() if r.outcome != "passed"}
    if notable:
        lines += ["## Not passed", "", "| Test | Outcome | Why |", "|---|---|---|"]
        lines += [f"| `{node}` | {r.outcome} | {r.reason.splitlines()[0] if r.reason else ''} |"
                  for node, r in sorted(notable.items())]
        lines.append("")
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"), help="report file to write")
    args, extra = parser.parse_known_args()
    collector, status, seconds = run(extra)
    if not collector.results:
        print(f"reliability_report: pytest ran nothing (status {status})", file=sys.stderr)
        return 1
    command = " ".join(["python", "scripts/reliability_report.py", *sys.argv[1:]])
    text, ok = report(collector, seconds, command)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
