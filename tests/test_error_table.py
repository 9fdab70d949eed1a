"""docs/errors.md ("Every input check and its error") cannot fall behind the code.

- Every message template of the code (each TORCH_CHECK in csrc/, each ``raise`` with a message in
  kohonen_vq/quantizers, kohonen_vq/grid.py, the training CLI's checks in kohonen_vq/train and the dataset
  loaders in kohonen_vq/data, and the quantisers' state-dict error) is instantiated by at
  least one row of the tables, and every row's message is an instance of some template, with the exception
  type the code raises.
- Every test a row cites exists (pytest's own collection, in a subprocess), and every row cites one.

The second half of the file holds the tests of rows that no other test file covers.
"""
from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from kohonen_vq import EMAVQ, GradientSOMVQ, GradientVQ, KohonenVQ, ops

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "errors.md"
CPP_SOURCES = sorted(p for ext in ("cpp", "cu", "h", "cuh") for p in (ROOT / "csrc").rglob(f"*.{ext}"))
PY_SOURCES = sorted((ROOT / "kohonen_vq" / "quantizers").glob("*.py")) + [ROOT / "kohonen_vq" / "grid.py"] + \
    [ROOT / "kohonen_vq" / "train" / f"{name}.py" for name in ("config", "checkpoint", "runtime", "batches", "trainer",
                                                                "demo")] + \
    sorted((ROOT / "kohonen_vq" / "data").glob("*.py"))
NOT_TESTABLE = "n/a"  # a Test cell starting with this must say why


# ------------------------------------------------------------------------------------- the table
@dataclass
class Row:
    line: int
    cells: dict[str, str]

    @property
    def message(self) -> str:
        return code_spans(self.cells["Message"])[0]

    @property
    def tests(self) -> list[str]:
        return code_spans(self.cells["Test"])


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


@lru_cache(maxsize=None)
def table_rows() -> tuple[Row, ...]:
    """The rows of every markdown table of docs/errors.md that has a Test column."""
    rows, header = [], None
    for number, line in enumerate(TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = split_row(line)
        if header is None:
            header = cells
        elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
            assert len(cells) == len(header), f"docs/errors.md:{number}: {len(cells)} cells, header has {len(header)}"
            if "Test" in header:
                rows.append(Row(number, dict(zip(header, cells))))
    return tuple(rows)


def check_rows() -> list[Row]:
    return [r for r in table_rows() if "Message" in r.cells]


# ---------------------------------------------------------------------------------- the templates
@dataclass(frozen=True)
class Template:
    regex: str
    exception: str
    where: str


def c_string(literal: str) -> str:
    return bytes(literal, "utf-8").decode("unicode_escape")


def split_arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments of a C++ call, string literals and nested brackets respected."""
    args, depth, current, i = [], 0, [], 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            current.append(text[i:j + 1])
            i = j + 1
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    args.append("".join(current).strip())
    return args


def call_body(source: str, open_paren: int) -> str:
    """The text between the parenthesis at ``open_paren`` and its match."""
    depth, i = 0, open_paren
    while True:
        ch = source[i]
        if ch == '"':
            i += 1
            while source[i] != '"':
                i += 2 if source[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return source[open_paren + 1:i]
        i += 1


def cpp_templates() -> list[Template]:
    out = []
    for path in CPP_SOURCES:
        source = path.read_text(encoding="utf-8")
        for match in re.finditer(r"\bTORCH_CHECK\s*\(", source):
            args = split_arguments(call_body(source, match.end() - 1))
            parts = []
            for arg in args[1:]:
                literals = re.findall(r'"((?:[^"\\]|\\.)*)"', arg)
                if literals and re.fullmatch(r'(\s*"(?:[^"\\]|\\.)*")+\s*', arg):
                    parts.append(re.escape("".join(c_string(s) for s in literals)))
                else:
                    parts.append("(.+?)")
            line = source.count("\n", 0, match.start()) + 1
            out.append(Template("".join(parts), "RuntimeError", f"{path.relative_to(ROOT)}:{line}"))
    return out


def joined_str_regex(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else "(.+?)" for v in node.values)
    return None


def python_templates() -> list[Template]:
    out = []
    for path in PY_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                regex = joined_str_regex(node.exc.args[0])
                if regex is not None:
                    out.append(Template(regex, ast.unparse(node.exc.func), where))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
                  and ast.unparse(node.func.value) == "error_msgs" and node.args):
                # nn.Module.load_state_dict raises RuntimeError("Error(s) in loading state_dict ...") with these
                out.append(Template(joined_str_regex(node.args[0]), "RuntimeError", where))
    return out


def all_templates() -> list[Template]:
    return cpp_templates() + python_templates()


def test_sources_were_parsed() -> None:
    # The parsers must see the code: a refactoring that hid the checks from them would pass vacuously.
    cpp, py = cpp_templates(), python_templates()
    assert len([t for t in cpp if t.where.startswith("csrc/checks.cpp")]) >= 20, cpp
    assert any(re.fullmatch(t.regex, "kohonen_vq.som_update_: argument 'ema_sums' must be contiguous") for t in cpp)
    assert len(py) >= 15, py
    for t in cpp + py:
        re.compile(t.regex)


def test_every_check_of_the_code_is_in_the_table() -> None:
    messages = [r.message for r in check_rows()]
    missing = [f"{t.where}: {t.regex}" for t in all_templates()
               if not any(re.fullmatch(t.regex, m, flags=re.S) for m in messages)]
    assert not missing, "checks without a row in docs/errors.md:\n" + "\n".join(missing)


def test_every_row_is_a_message_of_the_code() -> None:
    templates = all_templates()
    problems = []
    for row in check_rows():
        matching = [t for t in templates if re.fullmatch(t.regex, row.message, flags=re.S)]
        if not matching:
            problems.append(f"docs/errors.md:{row.line}: no check of the code produces {row.message!r}")
        elif row.cells["Exception"].strip("` ") not in {t.exception for t in matching}:
            problems.append(f"docs/errors.md:{row.line}: {row.cells['Exception']} but the code raises "
                            f"{sorted({t.exception for t in matching})} ({matching[0].where})")
    assert not problems, "\n".join(problems)


@lru_cache(maxsize=None)
def collected_node_ids(files: tuple[str, ...]) -> frozenset[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    ids = frozenset(line.strip() for line in result.stdout.splitlines() if "::" in line)
    assert ids, f"collection failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return ids


def test_every_row_cites_existing_tests() -> None:
    rows = table_rows()
    assert len(check_rows()) >= 80, "docs/errors.md: the check tables were not found"
    cited = {t for r in rows for t in r.tests if "::" in t}
    files = tuple(sorted({t.split("::")[0] for t in cited}))
    for f in files:
        assert (ROOT / f).is_file(), f"cited test file {f} does not exist"
    existing = collected_node_ids(files)
    problems = []
    for row in rows:
        if row.cells["Test"].startswith(NOT_TESTABLE):
            if len(row.cells["Test"]) < len(NOT_TESTABLE) + 20:
                problems.append(f"docs/errors.md:{row.line}: '{NOT_TESTABLE}' needs a reason")
            continue
        if not row.tests:
            problems.append(f"docs/errors.md:{row.line}: no test cited")
        problems += [f"docs/errors.md:{row.line}: {t} is not a collected test" for t in row.tests if t not in existing]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------- tests of rows not covered elsewhere
K, D = 6, 3
CUDA = pytest.mark.cuda


def z(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype, device=device)


def long1(device: str = "cpu", dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.zeros(1, dtype=dtype, device=device)


def som_args(device: str = "cpu", **override: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(codebook=z(K, D, device=device), ema_sums=z(K, D, device=device),
                                ema_counts=z(K, device=device), step=long1(device), skipped=long1(device),
                                sums=z(K, D, device=device), counts=z(K, device=device), grid=(K,))
    args.update(override)
    return args


UNDEFINED = [("assign", "x"), ("assign", "codebook"), ("cluster_stats", "x"), ("cluster_stats", "indices"),
             *[("som_update_", name) for name in ("codebook", "ema_sums", "ema_counts", "step", "skipped", "sums",
                                                  "counts")]]


@pytest.mark.parametrize("op, name", UNDEFINED, ids=[f"{op}-{name}" for op, name in UNDEFINED])
def test_undefined_tensor_rejected(op: str, name: str) -> None:
    # None reaches the kernels as an undefined tensor (the schemas say Tensor, and the dispatcher lets it pass).
    if op == "assign":
        args: dict[str, Any] = dict(x=z(4, D), codebook=z(K, D))
    elif op == "cluster_stats":
        args = dict(x=z(4, D), indices=torch.zeros(4, dtype=torch.int64), num_codes=K)
    else:
        args = som_args()
    args[name] = None
    with pytest.raises(RuntimeError, match=re.escape(f"kohonen_vq.{op}: argument '{name}' is an undefined tensor")):
        getattr(ops, op)(**args)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_assign_rejects_more_than_int32_codes(device: str) -> None:
    # 2^31 codes without the memory: a stride-0 view. The check comes before any copy of the codebook.
    codebook = z(1, D, device=device).expand(2**31, D)
    with pytest.raises(RuntimeError, match=re.escape("kohonen_vq.assign: K = 2147483648 codes exceeds 2^31 - 1")):
        ops.assign(z(2, D, device=device), codebook)


def case(name: str, override: Callable[[], dict[str, Any]], message: str) -> Any:
    return pytest.param(override, message, id=name)


SOM_UPDATE_CASES = [
    case("ema_counts_float64", lambda: dict(ema_counts=z(K, dtype=torch.float64)),
         "argument 'ema_counts' must have dtype Float, got Double"),
    case("skipped_int32", lambda: dict(skipped=long1(dtype=torch.int32)),
         "argument 'skipped' must have dtype Long, got Int"),
    case("ema_sums_non_contiguous", lambda: dict(ema_sums=z(D, K).T), "argument 'ema_sums' must be contiguous"),
    case("ema_counts_non_contiguous", lambda: dict(ema_counts=z(2 * K)[::2]),
         "argument 'ema_counts' must be contiguous"),
    case("counts_shape", lambda: dict(counts=z(K + 1)), "argument 'counts' must have shape [6], got [7]"),
    case("skipped_device", lambda: dict(skipped=long1("meta")),
         "arguments 'skipped' and 'codebook' must be on the same device, got meta and cpu"),
    case("ema_sums_device", lambda: dict(ema_sums=z(K, D, device="meta")),
         "arguments 'codebook' and 'ema_sums' must be on the same device, got cpu and meta"),
    case("ema_counts_device", lambda: dict(ema_counts=z(K, device="meta")),
         "arguments 'codebook' and 'ema_counts' must be on the same device, got cpu and meta"),
    case("sums_device", lambda: dict(sums=z(K, D, device="meta")),
         "arguments 'codebook' and 'sums' must be on the same device, got cpu and meta"),
    case("counts_device", lambda: dict(counts=z(K, device="meta")),
         "arguments 'codebook' and 'counts' must be on the same device, got cpu and meta"),
]


@pytest.mark.parametrize("override, message", SOM_UPDATE_CASES)
def test_som_update_rejects(override: Callable[[], dict[str, Any]], message: str) -> None:
    state = som_args(**override())
    before = {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor) and v.device.type == "cpu"}
    with pytest.raises(RuntimeError, match=re.escape(f"kohonen_vq.som_update_: {message}")):
        ops.som_update_(**state)
    for name, t in before.items():
        assert torch.equal(state[name], t), f"a rejected call changed {name}"


@CUDA
def test_cluster_stats_out_of_range_index_on_cuda() -> None:
    # The CUDA kernel checks the range before launching (reading min and max: one host synchronisation).
    indices = torch.tensor([0, 5, -2, 1], device="cuda")
    with pytest.raises(RuntimeError, match=re.escape("kohonen_vq.cluster_stats: argument 'indices' must lie in "
                                                     "[0, 4), got values in [-2, 5]")):
        ops.cluster_stats(z(4, D, device="cuda"), indices, 4)


@CUDA
def test_som_update_cuda_rejects_more_than_8_grid_axes() -> None:
    grid = (2,) * 9
    k = 2**9
    state = som_args("cuda", codebook=z(k, 1, device="cuda"), ema_sums=z(k, 1, device="cuda"),
                     ema_counts=z(k, device="cuda"), sums=z(k, 1, device="cuda"), counts=z(k, device="cuda"), grid=grid)
    with pytest.raises(RuntimeError, match=re.escape("kohonen_vq.som_update_: the CUDA kernel supports grids with at "
                                                     "most 8 axes of size > 1, got grid [2, 2, 2, 2, 2, 2, 2, 2, 2]")):
        ops.som_update_(**state)


NON_FINITE_HYPER = [(KohonenVQ, name) for name in ("shrink", "sigma", "base", "eps", "init_count")] + \
                   [(EMAVQ, "eps"), (EMAVQ, "init_count")] + \
                   [(cls, "commitment") for cls in (KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ)] + \
                   [(GradientSOMVQ, "neighbour_weight")]


@pytest.mark.parametrize("value", [math.inf, math.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("cls, name", NON_FINITE_HYPER, ids=[f"{c.__name__}-{n}" for c, n in NON_FINITE_HYPER])
def test_module_rejects_non_finite_hyper_parameter(cls: type, name: str, value: float) -> None:
    # inf would pass a plain ">= 0" check and then write NaN into the EMA state (shrink at t = 0: inf * 0;
    # eps, init_count: inf / inf), or make every loss infinite (commitment, neighbour_weight).
    with pytest.raises(ValueError, match=rf"{cls.__name__}: {name} must be finite and .*, got {value}"):
        cls(16, 4, **{name: value})


@pytest.mark.parametrize("cls", [KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ])
def test_module_input_on_another_device(cls: type) -> None:
    vq = cls(16, 4)
    with pytest.raises(RuntimeError, match=re.escape("kohonen_vq.assign: arguments 'x' and 'codebook' must be on the "
                                                     "same device, got meta and cpu")):
        vq(z(2, 4, device="meta"))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls", [KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ])
def test_module_empty_batch(cls: type, training: bool) -> None:
    """An empty batch is not an error: empty outputs, loss 0 (not the NaN of a mean over nothing, and no
    warning), perplexity 0; in training the native quantisers count it as an update without members."""
    vq = cls(16, 4, channel_dim=1).train(training)
    z_in = torch.zeros(0, 4, 5, 5, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = vq(z_in)
    assert out.quantized.shape == z_in.shape and out.indices.shape == (0, 5, 5)
    assert out.loss.item() == 0.0 and out.perplexity.item() == 0.0
    out.loss.backward()  # connected to the graph
    assert z_in.grad is not None and z_in.grad.shape == z_in.shape
    assert vq.step == int(training)
    for name in ("codebook", "ema_sums", "ema_counts"):
        if hasattr(vq, name):
            assert getattr(vq, name).isfinite().all()
