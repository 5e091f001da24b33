"""The static type check CI runs: pyright (basic mode, configured in pyproject.toml under
``[tool.pyright]``) over the whole ``rope_lens`` package, against this interpreter's packages.

Runs offline: the ``pyright`` wheel bundles the checker and ``pyright[nodejs]`` a Node.js
runtime. Skipped only where the dev extra is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    importlib.util.find_spec("pyright") is None, reason="pyright (dev extra) is not installed"
)
def test_pyright_finds_no_errors():
    run = subprocess.run(
        [sys.executable, "-m", "pyright", "--pythonpath", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    summary = re.search(r"(\d+) errors?, (\d+) warnings?", out)
    assert summary is not None, out[-2000:]  # pyright ran and reported
    errors = [line.strip() for line in out.splitlines() if " - error: " in line]
    assert run.returncode == 0 and not errors, "\n".join(errors[:60]) + f"\n{summary.group(0)}"
