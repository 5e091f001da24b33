"""Lean defaults of `rope-lens figures` and `rope-lens theory`: file counts and sizes of small
runs, one shared plotly.js, skipped figures named with a reason, and theory's default output
folder beside the other results (never the tracked figures/theory)."""

from __future__ import annotations

import argparse

import pytest

from rope_lens.commands import figures, theory
from rope_lens.io import save_table
from rope_lens.viz.style import PLOTLY_JS
from tests.viz_frames import band_norm_frame

pytestmark = pytest.mark.usefixtures("one_thread")

MB = 1_000_000


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_figures_html_shares_one_plotlyjs(tmp_path, capsys):
    save_table(band_norm_frame(), tmp_path / "results" / "tiny" / "band_norm", {"model": "tiny"})
    out = tmp_path / "out"
    args = _parse(figures, ["--results", str(tmp_path / "results"), "--out", str(out)])
    args.formats, args.theory = "html", "skip"
    assert figures.run(args) == 0
    files = _files(out)
    pages = [p for p in files if p.suffix == ".html"]
    # One page per band-norm recipe, one INDEX.md and exactly one plotly.js for all of them.
    assert len(pages) == 8
    assert [p.name for p in files if p.suffix == ".js"] == [PLOTLY_JS]
    assert len(files) == len(pages) + 2
    assert all(p.stat().st_size < 0.5 * MB for p in pages)  # no page inlines plotly.js
    assert sum(p.stat().st_size for p in files) < 8 * MB  # was ~8 x 4.8 MB inlined
    assert all('src="../plotly.min.js"' in p.read_text() for p in pages)
    printed = capsys.readouterr().out
    assert f"wrote {len(files) - 1} files" in printed  # INDEX.md is not counted among figures


def test_figures_lists_what_it_skipped_and_why(tmp_path, capsys):
    save_table(band_norm_frame(), tmp_path / "results" / "tiny" / "band_norm", {"model": "tiny"})
    args = _parse(figures, ["--results", str(tmp_path / "results"), "--out", str(tmp_path / "o")])
    args.formats, args.theory = "html", "skip"
    assert figures.run(args) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed
    assert "extra_head_classes" in printed
    assert "no heads table (rope-lens analyze --analysis heads)" in printed
    assert "fig19_query_by_domain" in printed and "domain-<name>" in printed


def test_figures_default_formats_are_lean():
    args = _parse(figures, [])
    assert args.formats == "png,html"


def test_theory_defaults_to_results_folder(tmp_path, monkeypatch, capsys):
    assert _parse(theory, []).out == "results/theory"
    parser = argparse.ArgumentParser()
    theory.add_arguments(parser)
    assert "default: results/theory" in parser.format_help()
    monkeypatch.chdir(tmp_path)
    args = _parse(theory, ["--quick"])
    assert theory.run(args) == 0
    out = tmp_path / "results" / "theory"
    files = _files(out)
    assert [p for p in _files(tmp_path) if out not in p.parents] == []  # nothing elsewhere
    pages = [p for p in files if p.suffix == ".html"]
    assert len(pages) == 9  # Figs 2, 8, 9; Props 3.1, 3.2, 5.2; Thm 5.3 (x2); Thm 6.1
    assert [p.name for p in files if p.suffix == ".js"] == [PLOTLY_JS]
    assert sum(p.stat().st_size for p in files) < 10 * MB  # was ~51 MB with inlined plotly.js
    assert "results/theory/fig2_decay.html" in capsys.readouterr().out.splitlines()
