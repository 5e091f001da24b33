"""Every notebook in ``analyses/`` runs top to bottom, offline, on the packaged models.

Executed with nbclient (the engine of ``jupyter nbconvert --execute``) on a copy: the
committed notebooks keep the outputs they were shipped with (checked by
``tests/unit/test_notebooks_shipped.py``). Each takes about one to two minutes on a busy
2-core CPU, most of it loading the packaged models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((Path(__file__).parents[2] / "analyses").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_offline(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat/nbclient (dev extra) run notebooks")
    nbclient = pytest.importorskip("nbclient", reason="nbformat/nbclient (dev extra) run notebooks")
    pytest.importorskip("ipykernel", reason="ipykernel (dev extra) is the notebooks' kernel")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [
        out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"
    ]
    assert not errors
