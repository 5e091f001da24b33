"""The notebooks in analyses/ are committed executed, so they read on GitHub: every code cell
ran, in order, without errors, and figures are stored as PNG images (GitHub does not run the
JavaScript of interactive plotly output). ``tests/integration/test_notebooks.py`` re-runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "analyses").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert len(NOTEBOOKS) == 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1))  # every cell ran, top to bottom, once
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs, "figures are stored as PNG"
    # No inlined plotly.js (4.7 MB per notebook) and no notebook over 1 MB.
    assert "window.PlotlyConfig" not in path.read_text(encoding="utf-8")
    assert path.stat().st_size < 1_000_000
    sources = "\n".join("".join(c["source"]) for c in code)
    assert "Lens(" in sources  # written on the notebook API
