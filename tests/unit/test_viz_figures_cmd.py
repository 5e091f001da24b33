"""`rope-lens figures`: recipes drawn from saved tables, an index, and static export."""

from __future__ import annotations

import argparse
import shutil

import pytest

from rope_lens.commands import figures
from rope_lens.errors import InputError
from rope_lens.io import save_table
from tests.viz_frames import band_norm_frame, heads_frame

TINY = figures.output_name("tiny", None)  # the synthetic tables' model: no registry name


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    figures.add_arguments(parser)
    argv = []
    for key, value in kw.items():
        argv += [f"--{key}", *([value] if isinstance(value, str) else value)]
    return parser.parse_args(argv)


@pytest.fixture
def results(tmp_path):
    model = tmp_path / "results" / "tiny"
    save_table(band_norm_frame(), model / "band_norm", {"model": "tiny"})
    save_table(heads_frame(), model / "heads", {"model": "tiny"})
    save_table(band_norm_frame(), model / "domain-python" / "band_norm", {"model": "tiny"})
    return tmp_path / "results"


def test_figures_from_a_results_parent(results, tmp_path, capsys):
    out = tmp_path / "out"
    rc = figures.run(_args(results=[str(results)], out=str(out), formats="html", theory="skip"))
    assert rc == 0
    names = {p.name for p in (out / TINY).iterdir()}
    assert {"fig03a_query_per_layer.html", "fig19_query_by_domain.html"} <= names
    assert "extra_head_classes.html" in names
    assert not any(n.endswith(".tmp") for n in names)
    index = (out / "INDEX.md").read_text()
    assert f"| Fig 3(a), Fig 10(a) | tiny | `{TINY}/fig03a_query_per_layer` |" in index
    assert "wrote" in capsys.readouterr().out


def test_only_selects_recipes(results, tmp_path):
    out = tmp_path / "out"
    args = _args(
        results=[str(results)], out=str(out), formats="html", theory="skip",
        only=["fig13_qkv_per_layer"],
    )  # fmt: skip
    assert figures.run(args) == 0
    assert [p.name for p in (out / TINY).iterdir()] == ["fig13_qkv_per_layer.html"]


def test_nothing_to_draw_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no results tables"):
        figures.run(_args(results=[str(tmp_path)], out=str(tmp_path / "o"), theory="skip"))


def test_unknown_format_is_an_input_error(results, tmp_path):
    with pytest.raises(InputError, match="unknown figure format"):
        figures.run(_args(results=[str(results)], formats="gif", theory="skip"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH")
def test_static_formats_in_one_batch(results, tmp_path):
    pytest.importorskip("kaleido", reason="kaleido (viz extra) writes static figures")
    out = tmp_path / "out"
    args = _args(
        results=[str(results)], out=str(out), formats="png,svg,pdf", theory="skip",
        only=["fig03b_key_per_layer"],
    )  # fmt: skip
    assert figures.run(args) == 0
    stem = out / TINY / "fig03b_key_per_layer"
    assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert stem.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in stem.with_suffix(".svg").read_bytes()[:500]
    assert not stem.with_suffix(".html").exists()  # html only when asked for


def test_without_chromium_static_export_is_refused_not_downloaded(results, tmp_path, monkeypatch):
    """No Chromium: kaleido is never started (it could try to fetch a browser); HTML still works."""
    import plotly.graph_objects as go

    from rope_lens.viz import style

    monkeypatch.setattr(style.shutil, "which", lambda name: None)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    started = []
    kaleido = pytest.importorskip("kaleido", reason="kaleido (viz extra) writes static figures")
    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", lambda *a, **k: started.append(a))
    assert "Chromium" in style.static_export_problem()
    with pytest.raises(RuntimeError, match="no Chromium"):
        style.save_figure(go.Figure(), tmp_path / "f", ["png"])
    assert not started and not list(tmp_path.glob("f*"))
    out = tmp_path / "out"
    args = _args(results=[str(results)], out=str(out), formats="html,png", theory="skip",
                 only=["fig03a_query_per_layer"])  # fmt: skip
    assert figures.run(args) == 0  # static formats dropped with a warning
    assert [p.name for p in (out / TINY).iterdir()] == ["fig03a_query_per_layer.html"]
    assert not started


def test_training_grid_figures(tmp_path):
    """Table 2 and the training curves from a `rope-lens table` grid folder."""
    import pandas as pd

    grid = tmp_path / "table-cpu"
    grid.mkdir()
    pd.DataFrame(
        {"dataset": ["wiki", "wiki"], "encoding": ["rope", "0.75-rope"],
         "ppl_valid@1x_mean": [30.0, 29.0], "ppl_valid@1x_std": [0.5, 0.4], "n": [2, 2],
         "paper": [4.4627, 4.4414]}
    ).to_csv(grid / "table.csv", index=False)  # fmt: skip
    (grid / "table.md").write_text("| Encoding |\n")
    for enc in ("rope", "0.75-rope"):
        run = grid / "wiki" / enc / "seed0"
        run.mkdir(parents=True)
        pd.DataFrame({"step": [1, 2], "loss": [5.0, 4.0]}).to_csv(run / "metrics.csv", index=False)
        pd.DataFrame(
            {"step": [2], "split": ["valid"], "length_multiple": [1], "seq_len": [64],
             "loss": [3.4], "ppl": [30.0]}
        ).to_csv(run / "eval.csv", index=False)  # fmt: skip
    out = tmp_path / "out"
    args = _args(results=[str(tmp_path / "none")], runs=[str(grid)], out=str(out),
                 formats="html", theory="skip")  # fmt: skip
    assert figures.run(args) == 0
    names = {p.name for p in (out / "training-table-cpu").iterdir()}
    assert {"table2_perplexity.html", "table2_table.html", "table2_table.md"} <= names
    assert {"training_loss.html", "training_valid_ppl.html"} <= names
    assert "| Table 2 | table-cpu |" in (out / "INDEX.md").read_text()
