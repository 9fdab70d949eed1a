"""The notebooks in notebooks/ run headless from top to bottom, and are stored without outputs.

Each notebook runs in a fresh kernel of this interpreter, with KVQ_NOTEBOOK_SMALL=1 (its small-size switch) and
the current directory set to a temporary folder, so its run folders never land in the repository. Matplotlib
uses the inline backend, which renders to PNG without a display: with MPLBACKEND=Agg the figures would not
appear among the outputs (and plt.show() would warn), so the tests could not check them.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]
CELL_TIMEOUT_S = 300
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"


def test_notebooks_exist() -> None:
    assert NAMES == ["01_quickstart.ipynb", "02_drop_in.ipynb", "03_topography.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_stored_stripped(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "widget state stored: run scripts/strip_notebooks.py"
    for i, cell in enumerate(nb["cells"]):
        assert "execution" not in cell.get("metadata", {}), f"cell {i}: timings stored"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, \
                f"cell {i} holds outputs: run scripts/strip_notebooks.py"
    assert "KVQ_NOTEBOOK_SMALL" in "".join("".join(c["source"]) for c in nb["cells"])


def _kernel_spec(folder: Path) -> None:
    """A kernelspec for this interpreter: "python3" could resolve to another Python installed for Jupyter."""
    spec = folder / "kernels" / "kvq-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kohonen_vq tests", "language": "python"}))


def execute(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """Runs the notebook; returns its stream outputs joined and the number of PNG images it displayed."""
    nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (pip install nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (pip install nbclient)")
    pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel (pip install ipykernel)")
    _kernel_spec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched before the user's and system's
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "KVQ_NOTEBOOK_SMALL": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="kvq-test",
                                     resources={"metadata": {"path": str(work)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{out.get('ename')}: {out.get('evalue')}"
            if out["output_type"] == "stream":
                text.append(out["text"])
            images += "image/png" in out.get("data", {})
    return "".join(text), images


def finite(text: str, pattern: str) -> list[float]:
    """The numbers ``pattern``'s groups capture in ``text``; fails unless it matches and all are finite."""
    match = re.search(pattern, text, re.M)
    assert match, f"no match for {pattern!r} in:\n{text}"
    values = [float(v) for v in match.groups()]
    assert all(math.isfinite(v) for v in values), match.group(0)
    return values


def test_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, images = execute(ROOT / "notebooks" / "01_quickstart.ipynb", tmp_path, monkeypatch)
    assert images >= 3  # curves, reconstructions, codebook grid
    loss, = finite(text, rf"^final validation loss: {NUMBER}")
    assert 0 < loss < 1  # below the ~1 of a constant output: the model learned something
    usage, ppl, topo = finite(text, rf"^codebook usage: {NUMBER}%, perplexity: {NUMBER}, topographic error: {NUMBER}")
    assert 0 < usage <= 100 and ppl >= 1 and 0 <= topo <= 1
    assert "decode(encode(x)) matches the reconstruction: True" in text
    assert (tmp_path / "work" / "runs" / "quickstart" / "metrics.csv").is_file()  # written in the temporary folder


def test_drop_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, images = execute(ROOT / "notebooks" / "02_drop_in.ipynb", tmp_path, monkeypatch)
    assert images >= 1
    for name in ("hand-written EMA-VQ", "KohonenVQ", "EMAVQ, init_count=0", r"EMAVQ \(default, N0=1\)"):
        mse, usage, ppl, _ = finite(text, rf"^{name}\s+{NUMBER}\s+{NUMBER}%\s+{NUMBER}\s+{NUMBER}$")
        assert mse > 0 and 0 < usage <= 100 and ppl >= 1
    # EMAVQ(init_count=0) runs the hand-written algorithm: the first steps agree up to float rounding.
    difference, = finite(text, rf"over the first 10 steps: {NUMBER}")
    assert difference < 1e-3


def test_topography(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, images = execute(ROOT / "notebooks" / "03_topography.ipynb", tmp_path, monkeypatch)
    assert images >= 3  # perturbation, codebooks with U-matrices, usage
    stats = {name: finite(text, rf"^{name}\s+" + r"\s+".join([NUMBER] * 5) + "$") for name in ("KSOM", "EMA-VQ")}
    for loss, topo, ratio, usage, ppl in stats.values():
        assert loss > 0 and 0 <= topo <= 1 and ratio > 0 and 0 < usage <= 1 and ppl >= 1
    # The grid only means something for KSOM: the one claim this small run is large enough to show clearly.
    assert stats["KSOM"][1] < stats["EMA-VQ"][1]
