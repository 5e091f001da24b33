"""docs/engine.md lists exactly the families the tests check, with the layout they check
(the table is generated from ``tests/families.py``)."""

from pathlib import Path

from tests.families import EXPECTED, REFUSED, doc_table, docs_block

PAGE = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def test_the_docs_table_is_the_tested_families():
    block = docs_block(PAGE.read_text(encoding="utf-8"))
    assert block is not None, "docs/engine.md lost its families table"
    assert block == doc_table(), "regenerate it: python -m tests.families --write"
    for name in [*EXPECTED, *REFUSED]:
        assert f"| `{name}` |" in block
