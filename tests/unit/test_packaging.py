"""pyproject.toml: the SPDX license string (no setuptools deprecation banner on every setup),
the notebook extra, and the type checker in the dev extra with its configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")  # 3.10: no tomllib
PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_and_setuptools_reads_it():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=(\d+)", setuptools).group(1)) >= 77  # PEP 639 support


def test_notebook_extra_brings_jupyterlab_and_widgets():
    assert {"jupyterlab", "ipywidgets"} <= set(
        PYPROJECT["project"]["optional-dependencies"]["notebook"]
    )


def test_type_check_is_configured_in_basic_mode_over_the_package():
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("pyright") for d in dev) and "pandas-stubs" in dev
    cfg = PYPROJECT["tool"]["pyright"]
    assert cfg["typeCheckingMode"] == "basic" and cfg["include"] == ["rope_lens"]
    assert "exclude" not in cfg and "ignore" not in cfg  # nothing left out
