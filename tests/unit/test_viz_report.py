"""The HTML report: self-contained, escaped, and built from saved tables (no browser here)."""

from __future__ import annotations

import argparse
import html
import re

import pandas as pd
import plotly.graph_objects as go
import pytest

from rope_lens.commands import report as report_cmd
from rope_lens.errors import InputError
from rope_lens.io import save_table
from rope_lens.viz.report import Attention, Section, render_report, safe_json, write_report
from tests.viz_frames import attention, band_norm_frame

EVIL = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"


def _page(**kw) -> str:
    sec = Section(
        "Title " + EVIL,
        paragraphs=["para " + EVIL],
        figures=[go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name=EVIL))],
        preformatted=EVIL,
        **kw,
    )
    return render_report([sec], "Report " + EVIL, {"key " + EVIL: EVIL})


def test_no_raw_markup_from_user_text():
    page = _page(attention=[Attention(["a", EVIL], attention(2), ["h0", EVIL], EVIL)])
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)" in page  # visible text is escaped, not dropped


def test_every_script_carries_the_nonce_and_nothing_is_fetched():
    page = _page()
    nonce = re.search(r'<script nonce="([^"]+)"', page).group(1)
    tags = re.findall(r"<script[^>]*>", page)
    assert tags and all(f'nonce="{nonce}"' in t for t in tags)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    assert "connect-src 'none'" in html.unescape(page)


def test_plotly_js_inlined_once_and_circuitsvis_only_when_needed():
    page = _page()
    assert page.count("window.PlotlyConfig") <= 1 and "Plotly.newPlot(" in page
    assert "var CircuitsVis" not in page
    with_attention = _page(attention=[Attention(["a", "b"], attention(2), ["h0", "h1"])])
    assert with_attention.count("var CircuitsVis") == 1
    assert "CircuitsVis.AttentionHeads" in with_attention


def test_safe_json_cannot_close_a_script():
    text = safe_json({"t": "</script>&<"})
    assert "<" not in text and ">" not in text and "&" not in text


def test_write_report_is_atomic(tmp_path):
    path = write_report("<html></html>", tmp_path / "sub" / "r.html")
    assert path.read_text() == "<html></html>"
    assert [p.name for p in path.parent.iterdir()] == ["r.html"]


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_cmd.add_arguments(parser)
    argv = [kw.pop("target")] if "target" in kw else []
    for key, value in kw.items():
        argv += [f"--{key}", str(value)]
    return parser.parse_args(argv)


def test_report_command_from_a_results_folder(tmp_path, capsys):
    save_table(band_norm_frame(model="tiny-model"), tmp_path / "band_norm", {"model": "tiny-model"})
    assert report_cmd.run(_args(target=str(tmp_path))) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "RoPE usage report: tiny-model" in page and "Frequency usage" in page
    assert page.count('class="figure"') >= 4
    assert "report.html" in capsys.readouterr().out


def test_report_command_needs_a_target(tmp_path):
    with pytest.raises(InputError, match="results folder or a model"):
        report_cmd.run(_args())


def test_report_command_rejects_unknown_analyses(tmp_path):
    with pytest.raises(InputError, match="unknown analyses"):
        report_cmd.run(_args(target="smollm2-135m", results=str(tmp_path), analyses="nope"))


def test_report_command_on_a_folder_without_tables(tmp_path):
    save_table(pd.DataFrame({"something": [1, 2]}), tmp_path / "other", {})
    with pytest.raises(InputError, match="no results table"):
        report_cmd.run(_args(target=str(tmp_path)))


def test_attention_view_labels_every_position_when_only_some_queries_were_decomposed():
    """decompose --query-pos 3,5 gives rows for two queries; the view is still 6 x 6 and each
    row and column carries its own token."""
    from rope_lens.viz.sections import attention_views
    from tests.viz_frames import decompose_frame, heads_frame

    toks = ["<bos>", "It", "'s", " a", " truth", " universally"]
    dec = decompose_frame(toks, layer=3, head=2)  # the late diagonal head of heads_frame
    dec = dec[dec.query_pos.isin([3, 5])]
    views = attention_views({"heads": heads_frame(), "decompose": dec})
    assert views, "no view drawn"
    for view in views:
        assert view.tokens == toks
        assert view.patterns.shape == (1, 6, 6)
        assert view.patterns[0, 4].sum() == 0 and view.patterns[0, 5].sum() == pytest.approx(1)


def _props(page: str) -> dict:
    import json

    call = re.search(r"CircuitsVis\.AttentionHeads, (\{.*?\})\);</script>", page)
    assert call is not None
    return json.loads(call.group(1))  # safe_json's \u003c escapes are JSON escapes


def test_token_text_survives_the_round_trip_escaped_once():
    """Tokens reach circuitsvis as text: ``'`` and ``<|im_start|>`` come back exactly (they
    were HTML-escaped on top of the JSON escaping and showed as ``&#x27;m``,
    ``&lt;|im_start|&gt;``); in the page source they are still never raw markup."""
    tokens = ["<|im_start|>", "I", "'m", " sure", "&", EVIL]
    names = ["L0 H0 (it's)", "<b>L1</b>"]
    page = render_report(
        [Section("s", attention=[Attention(tokens, attention(len(tokens)), names)])], "t"
    )
    props = _props(page)
    assert props["tokens"] == tokens and props["attentionHeadNames"] == names
    assert "<|im_start|>" not in page and "<img src=x" not in page  # JSON-escaped in the page
    call = page[page.index("CircuitsVis.AttentionHeads, ") :]
    call = call[: call.index("</script>")]
    assert "&#x27;" not in call and "&lt;" not in call and "&amp;" not in call
