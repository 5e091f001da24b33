"""The docs site builds with warnings as errors, and its generated CLI reference is complete.

``mkdocs build --strict`` fails on a broken link, a nav entry without a page, or a page that
does not parse; running it here is how CI builds the docs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="mkdocs (dev extra) builds the docs")
    pytest.importorskip("material", reason="mkdocs-material (dev extra) is the docs theme")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's banner is not a build problem
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def test_every_analysis_has_a_page(site):
    pages = {p.stem for p in (ROOT / "docs" / "analyses").glob("*.md")}
    from rope_lens.analyses import ANALYSES

    assert {name.replace("band-norm", "band-norms") for name in ANALYSES} <= pages
    for page in pages:
        assert (site / "analyses" / page / "index.html").exists()


def test_cli_reference_lists_every_command(site):
    import importlib

    from rope_lens.commands import COMMANDS

    text = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "<!-- cli-reference -->" not in text  # the hook replaced the marker ...
    for module in COMMANDS:  # ... with every registered command's --help
        name = importlib.import_module(module).NAME
        assert f"usage: rope-lens {name} " in text, name
