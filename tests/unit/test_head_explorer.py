"""The head explorer's numbers against independent computations, its pages, and its place in
the report (the real browser test is in tests/integration/test_report_browser.py)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from rope_lens import Lens
from rope_lens.analyses import head_explorer
from rope_lens.analyses.head_explorer import records
from rope_lens.viz import head_page
from tests.helpers import one_batch

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = ["I'm sure it's the one you'd like, isn't it?"]


@pytest.fixture(scope="module")
def explored(tiny_lm):
    lm = tiny_lm("qwen3")  # GQA and QK-norm
    batch = one_batch(lm, PROMPT)
    return lm, batch, head_explorer.explore(lm, batch, range(lm.n_layers))


def _one(df, layer, head):
    return df[(df["layer"] == layer) & (df["head"] == head)]


def test_every_head_has_every_record(explored):
    lm, batch, df = explored
    n = batch.input_ids.shape[1]
    assert set(df.record) == set(head_explorer.RECORDS)
    assert len(records(df, "token")) == n
    for layer in range(lm.n_layers):
        for head in range(lm.n_heads):
            assert len(_one(records(df, "pattern"), layer, head)) == n * (n + 1) // 2
            assert set(_one(records(df, "ablation"), layer, head).band) == {"low", "high"}


def test_pattern_is_the_softmax_of_the_decomposed_logits(explored):
    """The pattern is the model's own attention; the logits are rebuilt chunk by chunk from
    the pre-rotation q, k and the config frequencies (Eq. 3): softmax(sum) must be the row."""
    lm, batch, df = explored
    q = batch.input_ids.shape[1] - 1
    for layer in range(lm.n_layers):
        for head in range(lm.n_heads):
            logits = _one(records(df, "logits"), layer, head).groupby("key_pos").value.sum()
            p = np.exp(logits - logits.max())
            row = _one(records(df, "pattern"), layer, head)
            row = row[row.query_pos == q].set_index("key_pos").value
            np.testing.assert_allclose(row.loc[logits.index], p / p.sum(), atol=1e-5)


def test_spectra_equal_chunk_norms_of_the_pre_rotation_vectors(explored):
    """Independent path: lens.qk's pre-rotation q/k (rotation keeps every chunk's norm)."""
    lm, batch, df = explored
    qk = Lens(lm).qk(PROMPT, layers=[1], stage="pre", tensors=True)
    spec = lm.rope.layer_specs[1]
    half = spec.head_dim // 2
    counted = batch.count_mask[0]
    for site, x in qk.items():
        for h in range(x.shape[2]):
            v = x[0, counted, h]  # [pos, d_head], rotate-half pairing (tiny models)
            norms = (v[:, :half] ** 2 + v[:, half:] ** 2).sqrt().mean(0).numpy()
            head = h if site.kind == "q" else h * lm.group(1)  # a query head reading KV head h
            got = _one(records(df, "spectrum"), 1, head)
            got = got[got.kind == site.kind].sort_values("chunk").value.to_numpy(float)
            np.testing.assert_allclose(got, norms, rtol=1e-4)


def test_scores_are_the_patterns_diagonal_previous_and_first_column(explored):
    lm, batch, df = explored
    n = batch.input_ids.shape[1]
    queries = range(1, n)  # BOS is not a counted query
    for layer, head in [(0, 0), (lm.n_layers - 1, lm.n_heads - 1)]:
        pat = np.zeros((n, n))
        rows = _one(records(df, "pattern"), layer, head)
        pat[rows.query_pos.astype(int), rows.key_pos.astype(int)] = rows.value
        scores = _one(records(df, "scores"), layer, head).set_index("label").value
        assert scores["diag_score"] == pytest.approx(
            np.mean([pat[i, i] for i in queries]), abs=1e-5
        )
        assert scores["sink_score"] == pytest.approx(
            np.mean([pat[i, 0] for i in queries]), abs=1e-5
        )
        assert scores["prev_score"] == pytest.approx(
            np.mean([pat[i, i - 1] for i in queries]), abs=1e-5
        )
        assert sum(label.startswith("class:") for label in scores.index) == 1


def test_ablation_rows_come_from_the_heads_own_layer(explored):
    """Each layer's rows are measured under the ablation of that layer alone: the layer-wide
    loss change differs between layers, and it is the same for every head of a layer."""
    lm, _, df = explored
    loss = records(df, "ablation").query("label == 'd_loss_layer' and band == 'low'")
    per_layer = loss.groupby("layer").value
    assert (per_layer.nunique() == 1).all()
    assert loss.drop_duplicates("layer").value.nunique() == lm.n_layers


def test_a_head_page_has_its_figures_and_pattern(explored):
    lm, _, df = explored
    view = head_page.head_view(df, 1, 2)
    assert len(view.figures) == 4 and view.attention.head_names == ["Layer 1 Head 2"]
    assert "Class" in view.summary and "KV head" in view.summary
    page = head_page.head_page(view)
    assert page.count("Plotly.newPlot(") == 4 and "CircuitsVis.AttentionHeads" in page
    with pytest.raises(LookupError):
        head_page.head_view(df, 99, 0)


def test_report_section_links_every_head(explored, tmp_path):
    from rope_lens.io import save_table
    from rope_lens.viz.report import render_report
    from rope_lens.viz.sections import sections_from_folder
    from tests.viz_frames import heads_frame

    lm, _, df = explored
    save_table(df, tmp_path / "head_explorer", {"model": lm.name, "analysis": "head-explorer"})
    save_table(heads_frame(n_layers=lm.n_layers, n_heads=lm.n_heads), tmp_path / "heads", {})
    sections, _ = sections_from_folder(tmp_path)
    page = render_report(sections, "t")
    keys = {f"L{ly}H{hd}" for ly in range(lm.n_layers) for hd in range(lm.n_heads)}
    assert keys <= set(re.findall(r'<a href="#head-(L\d+H\d+)">', page))  # table and summaries
    assert page.count('class="figure head-figure"') == 4 and 'id="head-attention"' in page
    assert '"head_links": "xy"' in page or "head_links" in page  # the class map's cells


def test_lens_show_head_in_a_notebook(tiny_lm, tmp_path):
    lens = Lens(tiny_lm("llama"))
    page = lens.show_head(-1, 1, texts="It's a truth universally acknowledged", query_pos=5)
    assert page.view.layer == lens.lm.n_layers - 1 and page.view.head == 1
    assert "Logit by frequency, query 5" in page.figures[2].layout.title.text
    inline = page._repr_html_()
    assert inline.startswith("<iframe srcdoc=") and "<script" not in inline  # escaped once
    assert page.save(tmp_path / "h.html").read_text(encoding="utf-8") == page.html
    with pytest.raises(Exception, match="out of range"):
        lens.show_head(99, 0)


def test_explorer_table_round_trips_through_parquet(explored, tmp_path):
    _, _, df = explored
    df.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(back, df)
