"""The README stays true: its two commands (CI runs the second), every analysis, every module
in the layout section, and the same measured timings as docs/index.md."""

from __future__ import annotations

import re
from pathlib import Path

import rope_lens
from rope_lens.analyses import ANALYSES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PACKAGE = Path(rope_lens.__file__).parent


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_the_two_commands_are_unchanged():
    assert "bash scripts/setup.sh && .venv/bin/rope-lens analyze --model smollm2-135m" in README
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest\n" in README


def test_every_analysis_is_shown():
    commands = _section("Commands")
    for name in ANALYSES:
        assert f"| `{name}`" in commands, name  # a row of the table
        if name != "band-norm":
            assert f"--analysis {name}" in commands, name  # and a command line


def test_layout_lists_every_module():
    layout = _section("Layout")
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()  # rope_lens/x.py, rope_lens/pkg/y.py
        parts = rel.split("/")
        if len(parts) == 2:
            found = rel in layout
        else:
            package = "/".join(parts[:-1]) + "/"
            stem = path.stem
            found = package in layout and (
                stem == "__init__" or re.search(rf"\b{re.escape(stem)}\b", layout) is not None
            )
        if not found:
            missing.append(rel)
    assert missing == []


def test_timings_match_the_docs_front_page():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    timings = re.findall(
        r"took (\d+ s)\s+the first time .*? and (\d+ s) once converted", README, re.S
    )
    assert timings, "the README states its measured timings"
    for t in timings[0]:
        assert t in index, t


def test_cache_location_and_size_are_stated():
    quick = _section("Quick start (fresh machine, offline-capable)")
    assert "~/.cache/rope-lens" in quick and "ROPE_LENS_CACHE" in quick
    assert re.search(r"\d(\.\d)? GB", quick)
