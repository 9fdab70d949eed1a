"""Shared report helpers of the kohonen_vq benchmarks: target rows, Markdown tables, result file names.

A target row is JSON: the device, the target's name and case, the measured value, its threshold and
comparison, and `result`: "PASS", "FAIL" or why it has no verdict ("not run: ...", "not measured: ...",
"no target on ..."). `pass` is True / False, or None without a verdict.
"""
from __future__ import annotations

import datetime
import json
import operator
import sys
from pathlib import Path
from typing import Any

import _timing as tm

RESULTS = Path(__file__).resolve().parent / "results"
_COMPARE = {">=": operator.ge, "<=": operator.le}


def target_row(device: str, name: str, case: str, value: float | None, threshold: float | None, compare: str,
               what: str, verdictless: str | None = None, passed: bool | None = None) -> dict[str, Any]:
    """One target check; `verdictless` says why there is no PASS/FAIL (then `value` may still be a figure);
    `passed` is a verdict another benchmark made itself (then `threshold` may be None)."""
    if verdictless is None and passed is None and (value is None or threshold is None):
        raise ValueError(f"target {name} ({case}): a verdict needs a value and a threshold")
    ok = None if verdictless else passed if passed is not None else _COMPARE[compare](value, threshold)
    result = verdictless or ("PASS" if ok else "FAIL")
    return {"device": device, "target": name, "case": case, "value": value, "threshold": threshold,
            "compare": compare, "what": what, "result": result, "pass": ok}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table(title: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def targets_table(rows: list[dict[str, Any]], title: str = "Targets") -> list[str]:
    body = [[t["device"], t["target"], t["case"], t["value"],
             "—" if t["threshold"] is None else f"{t['compare']} {t['threshold']:.3g}", t["result"]] for t in rows]
    lines = table(title, ["device", "target", "case", "value", "threshold", "result"], body)
    meanings = {t["target"]: t["what"] for t in rows}
    return lines + ["", *(f"- `{name}`: {what}" for name, what in meanings.items())]


def stem(bench: str, kind: str, quick: bool) -> str:
    """File stem of a result, e.g. ops-cpu-amd-epyc-2c; never the host name."""
    return f"{bench}-{kind}-{tm.machine_tag(kind)}{'-quick' if quick else ''}"


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(doc: dict[str, Any], markdown: str, out: Path) -> None:
    """The JSON at `out`, the Markdown summary next to it (.md), the JSON on stdout too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1)
    out.write_text(text + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(text)
    print(f"wrote {out} and {out.with_suffix('.md').name}", file=sys.stderr)
