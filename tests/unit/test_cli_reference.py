"""docs/cli.md is the real CLI reference in the repository (not only after ``mkdocs build``),
and it is current: every command's ``--help`` as the parsers print it now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HOOK = Path(__file__).parents[2] / "docs" / "hooks" / "cli_reference.py"


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_is_current():
    hook = _hook()
    assert hook.committed() == hook.render().strip("\n"), (
        "docs/cli.md is stale: run `python docs/hooks/cli_reference.py`"
    )


def test_reference_lists_every_command_with_its_options():
    from rope_lens.cli import build_parser

    text = _hook().committed()
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    for name in sub.choices:
        assert f"## rope-lens {name}\n" in text and f"usage: rope-lens {name} " in text
    assert "--analysis" in text and "--sweep-points" in text and "--collect-only" in text
