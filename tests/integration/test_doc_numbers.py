"""Numbers in docs/ are what their commands give: the cheap ones are rerun here and compared
cell by cell (the expensive ones carry their exact command on their page, run at a tiny budget
by tests/integration/test_doc_commands.py).

- docs/analyses/critical.md's table: `rope-lens analyze --model M --analysis critical` for the
  three packaged models (no forward pass: the layout read from each model).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
MODELS = {"SmolLM2-135M": "smollm2-135m", "Qwen2.5-Coder-0.5B": "qwen2.5-coder-0.5b",
          "Gemma 3 270M": "gemma3-270m"}  # fmt: skip


def _critical_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "analyses" / "critical.md").read_text(encoding="utf-8")
    table = text[text.index("| model | layer type |") :].split("\n\n")[0].splitlines()[2:]
    return [[c.strip() for c in row.strip("|").split("|")] for row in table]


def test_the_critical_table_has_a_row_per_layer_type_of_each_model():
    rows = _critical_rows()
    assert {r[0] for r in rows} == set(MODELS) and len(rows) == 4
    text = (ROOT / "docs" / "analyses" / "critical.md").read_text(encoding="utf-8")
    for model in MODELS.values():  # each row's command is on the page
        assert f"rope-lens analyze --model {model} --analysis critical" in text


@pytest.mark.parametrize("label", list(MODELS))
def test_critical_table_cells_are_what_the_command_gives(label):
    import tempfile

    from rope_lens.io import load_table
    from rope_lens.pipeline import run_request
    from rope_lens.request import AnalysisRequest

    with tempfile.TemporaryDirectory() as out:
        req = AnalysisRequest(model=MODELS[label], analysis="critical", out=out, progress=False)
        assert run_request(req) == 0
        df, _ = load_table(Path(out) / "critical.parquet")
    for row in (r for r in _critical_rows() if r[0] == label):
        kind = "sliding_attention" if row[1].startswith("sliding") else "full_attention"
        sub = df[df.layer_type == kind]
        n_layers = int(re.search(r"\((\d+) layers\)", row[1]).group(1))
        assert int(sub.n_layers.iloc[0]) == n_layers
        assert float(sub.theta.iloc[0]) == float(row[2])
        assert int(sub.context.iloc[0]) == int(row[3].split()[0].replace(",", ""))
        crit = sub[sub.critical].chunk
        assert f"{crit.min()}–{crit.max()}" == row[4]
        share = f"{len(crit)}/{len(sub)} ({len(crit) / len(sub):.0%})"
        assert share == row[5]
        assert f"{int(sub.under_half_turn.sum())}/{len(sub)}" == row[6]
