"""Strips Jupyter notebooks in place: no outputs, no execution counts, no widget state, no execution timings.

    python scripts/strip_notebooks.py                 # every notebooks/*.ipynb
    python scripts/strip_notebooks.py a.ipynb b.ipynb
    python scripts/strip_notebooks.py --check         # exit 1 (and list them) if any notebook is not stripped
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

DEFAULT = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_METADATA = ("execution", "collapsed", "scrolled")  # run-time state Jupyter and nbclient record per cell


def strip(nb: nbformat.NotebookNode) -> bool:
    """Removes the run-time state of ``nb`` in place; returns whether anything changed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        for key in CELL_METADATA:
            changed |= cell.metadata.pop(key, None) is not None
        if cell.cell_type == "code":
            changed |= bool(cell.outputs) or cell.execution_count is not None
            cell.outputs, cell.execution_count = [], None
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks [default: notebooks/*.ipynb]")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs stripping")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or DEFAULT:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if strip(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'not stripped' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
