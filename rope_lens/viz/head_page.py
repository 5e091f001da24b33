"""The head explorer: one head's page, in the report and in a notebook (``lens.show_head``).

Draws the table of :mod:`rope_lens.analyses.head_explorer` (and, when given, the corpus-level
heads and band-norm tables); computes nothing. A head's page holds:

- its attention pattern on the prompt (circuitsvis, from the offline bundle);
- its q and k spectra: mean chunk norm per frequency on the prompt (and over the corpus when a
  band-norm table is given), chunk 0 = highest frequency;
- its diagonal / previous-token / sink scores and class (corpus scores when a heads table is
  given, the prompt's otherwise);
- the per-frequency decomposition of one query's logits against its strongest keys (Eq. 3);
- its rotation-ablation effect: the change of its own scores when half of its layer's chunks
  stop rotating.

:func:`head_page` is a standalone offline page for one head; :func:`explorer_section` is the
report's section with every head, one selected at a time (a selector, ``#head-L3H2`` links
from the report's tables and class map, and the browser's back button).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rope_lens.analyses.head_explorer import SCORES, records
from rope_lens.viz.chunks import fmt_frequency, fmt_wavelength
from rope_lens.viz.report import Attention, Section, render_report, safe_json
from rope_lens.viz.style import CATEGORICAL, styled
from rope_lens.viz.tokens import token_label

SCORE_NAMES = {"diag_score": "diagonal", "prev_score": "previous-token", "sink_score": "sink"}
TOP_KEYS = 3  # keys shown in the logit decomposition: the largest logits of the query
FIGURE_HEIGHT = 380


def head_key(layer: int, head: int) -> str:
    """``L3H2``: the anchor (``#head-L3H2``) and the label used across the report."""
    return f"L{int(layer)}H{int(head)}"


@dataclass
class HeadView:
    """Everything drawn for one head."""

    layer: int
    head: int
    title: str
    summary: str
    figures: list[go.Figure]
    attention: Attention


def _titled(fig: go.Figure, title: str) -> go.Figure:
    """The house title, without the template: :func:`styled` applies it once per page (the
    report shares one template among every head's figures; deep-copying it per figure made a
    270-head report take minutes)."""
    fig.update_layout(title=dict(text=title, x=0.02, xanchor="left"))
    return fig


def heads_in(explorer: pd.DataFrame) -> list[tuple[int, int]]:
    """The (layer, head) pairs the explorer table covers, in order."""
    pairs = records(explorer, "scores")[["layer", "head"]].drop_duplicates()
    return sorted((int(r.layer), int(r.head)) for r in pairs.itertuples())


def _one(df: pd.DataFrame, layer: int, head: int) -> pd.DataFrame:
    return df[(df["layer"] == layer) & (df["head"] == head)]


def _class_and_scores(
    explorer, layer, head, corpus: pd.DataFrame | None
) -> tuple[str, dict[str, float], str]:
    """(class, {score: value}, where) from the corpus heads table when it has this head, else
    from the prompt."""
    if corpus is not None:
        row = _one(corpus, layer, head)
        if len(row):
            r = row.iloc[0]
            return str(r["head_class"]), {s: float(r[s]) for s in SCORES}, "corpus"
    rows = _one(records(explorer, "scores"), layer, head)
    pairs = list(zip(rows["label"].astype(str), rows["value"].astype(float)))
    scores = {label: value for label, value in pairs if label in SCORES}
    cls = next((label[6:] for label, _ in pairs if label.startswith("class:")), "?")
    return cls, scores, "prompt"


def spectrum_figure(explorer, layer, head, band_norm: pd.DataFrame | None = None) -> go.Figure:
    """q (this query head) and k (its KV head) mean chunk norm per frequency chunk."""
    spec = _one(records(explorer, "spectrum"), layer, head)
    fig = go.Figure()
    for i, kind in enumerate(("q", "k")):
        sub = spec[spec["kind"] == kind].sort_values("chunk")
        hover = [
            f"{fmt_frequency(float(g))} rad/token, wavelength {fmt_wavelength(2 * np.pi / g)}"
            for g in sub["frequency"]
        ]
        name = "query" if kind == "q" else f"key (KV head {int(sub['kv_head'].iloc[0])})"
        fig.add_trace(
            go.Scatter(
                x=sub["chunk"], y=sub["value"], mode="lines+markers", name=f"{name}, prompt",
                line=dict(color=CATEGORICAL[i]), customdata=hover,
                hovertemplate="chunk %{x}: %{customdata}<br>mean norm %{y:.3f}<extra></extra>",
            )
        )  # fmt: skip
        if band_norm is not None:
            row = "head" if kind == "q" else "kv"
            corpus = band_norm[(band_norm["layer"] == layer) & (band_norm["kind"] == kind)]
            pick = head if row == "head" else int(sub["kv_head"].iloc[0])
            corpus = corpus[corpus["head"] == pick].sort_values("chunk")
            if len(corpus):
                fig.add_trace(
                    go.Scatter(
                        x=corpus["chunk"], y=corpus["mean_norm"], mode="lines",
                        name=f"{name}, corpus", line=dict(color=CATEGORICAL[i], dash="dot"),
                    )
                )  # fmt: skip
    fig.update_xaxes(title_text="chunk (0 = highest frequency)")
    fig.update_yaxes(title_text="mean chunk norm", rangemode="tozero")
    fig.update_layout(height=FIGURE_HEIGHT)
    return _titled(fig, f"q and k spectra, layer {layer} head {head}")


def scores_figure(explorer, layer, head, corpus: pd.DataFrame | None = None) -> go.Figure:
    cls, scores, where = _class_and_scores(explorer, layer, head, corpus)
    names = [SCORE_NAMES[s] for s in SCORES]
    fig = go.Figure(
        go.Bar(
            x=names, y=[scores.get(s, np.nan) for s in SCORES],
            marker_color=[CATEGORICAL[0], CATEGORICAL[1], CATEGORICAL[3]],
            hovertemplate="%{x} score %{y:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig.add_hline(y=0.5, line_dash="dash", annotation_text="class threshold 0.5")
    fig.update_yaxes(title_text=f"mean attention ({where})", range=[0, 1.05])
    fig.update_layout(height=FIGURE_HEIGHT)
    return _titled(fig, f"Scores and class: {cls} (layer {layer} head {head}, {where})")


def logits_figure(explorer, layer, head) -> go.Figure:
    """Per-chunk contributions of one query against its strongest keys (App. E.1), as
    ``rope_lens.viz.tokens.contribution_bars`` draws them."""
    rows = _one(records(explorer, "logits"), layer, head)
    if rows.empty:
        raise LookupError(f"no logit decomposition for layer {layer} head {head}")
    query = int(rows["query_pos"].iloc[0])
    tokens = records(explorer, "token").set_index("query_pos")["label"]
    logit = rows.groupby("key_pos")["value"].sum()
    fig = go.Figure()
    for i, key in enumerate(sorted(logit.nlargest(TOP_KEYS).index)):
        part = rows[rows["key_pos"] == key].sort_values("chunk")
        name = token_label(str(tokens.get(key, "")), int(key))
        fig.add_trace(
            go.Bar(
                x=part["chunk"].to_numpy(), y=part["value"].to_numpy(), name=f"key {name}",
                marker_color=CATEGORICAL[i % len(CATEGORICAL)],
                hovertemplate=f"key {name}<br>chunk %{{x}}<br>contribution %{{y:.3f}}"
                f"<br>(logit {logit[key]:.2f})<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(barmode="group", height=FIGURE_HEIGHT)
    fig.update_xaxes(title_text="chunk (0 = highest frequency)")
    fig.update_yaxes(title_text="contribution to the logit")
    query_text = token_label(str(tokens.get(query, "")), query)
    return _titled(fig, f"Logit by frequency, query {query_text} (its {TOP_KEYS} largest logits)")


def ablation_figure(explorer, layer, head) -> go.Figure:
    """Change of its own scores when the lowest / highest half of its layer's chunks stop
    rotating (that layer only)."""
    rows = _one(records(explorer, "ablation"), layer, head)
    if rows.empty:
        raise LookupError(f"no rotation ablation for layer {layer} head {head}")
    fig = go.Figure()
    loss = {}
    for i, band in enumerate(("low", "high")):
        sub = rows[rows["band"] == band].set_index("label")["value"]
        loss[band] = float(sub.get("d_loss_layer", np.nan))
        fig.add_trace(
            go.Bar(
                x=[SCORE_NAMES[s] for s in SCORES], y=[sub.get(f"d_{s}", np.nan) for s in SCORES],
                name=f"{band}est half rotation-free", marker_color=CATEGORICAL[4 + i],
                hovertemplate="Δ %{x} score %{y:+.3f}<extra>%{fullData.name}</extra>",
            )
        )  # fmt: skip
    fig.update_layout(barmode="group", height=FIGURE_HEIGHT)
    fig.update_yaxes(title_text="change of its own score", zeroline=True)
    note = ", ".join(f"{b} half Δloss {v:+.3f}" for b, v in loss.items() if v == v)
    return _titled(fig, f"Rotation ablation of layer {layer} (its effect on this head; {note})")


def attention_view(explorer, layer, head) -> Attention:
    rows = _one(records(explorer, "pattern"), layer, head)
    tokens = records(explorer, "token").sort_values("query_pos")["label"].astype(str).tolist()
    n = len(tokens)
    pattern = np.zeros((1, n, n))
    pattern[0, rows["query_pos"].astype(int), rows["key_pos"].astype(int)] = rows["value"]
    label = f"Layer {layer} Head {head}"
    return Attention(tokens, pattern, [label], f"Attention pattern on the prompt: {label}")


def head_view(
    explorer: pd.DataFrame,
    layer: int,
    head: int,
    corpus_heads: pd.DataFrame | None = None,
    band_norm: pd.DataFrame | None = None,
) -> HeadView:
    """The figures, attention view and words of one head."""
    if (layer, head) not in heads_in(explorer):
        raise LookupError(f"the head explorer table has no layer {layer} head {head}")
    cls, scores, where = _class_and_scores(explorer, layer, head, corpus_heads)
    figures = [
        spectrum_figure(explorer, layer, head, band_norm),
        scores_figure(explorer, layer, head, corpus_heads),
    ]
    for draw in (logits_figure, ablation_figure):
        try:
            figures.append(draw(explorer, layer, head))
        except LookupError:
            pass
    shown = ", ".join(f"{SCORE_NAMES[s]} {v:.2f}" for s, v in scores.items())
    kv = int(_one(records(explorer, "spectrum"), layer, head)["kv_head"].iloc[0])
    summary = f"Class {cls} ({where} scores: {shown}); reads KV head {kv}."
    return HeadView(
        layer, head, f"Layer {layer} Head {head} ({head_key(layer, head)})", summary, figures,
        attention_view(explorer, layer, head),
    )  # fmt: skip


def head_page(view: HeadView, meta: dict[str, object] | None = None) -> str:
    """A standalone, offline HTML page for one head (the report's page machinery)."""
    figures = [styled(f) for f in view.figures]
    section = Section(view.title, [view.summary], figures, attention=[view.attention])
    return render_report([section], f"Head explorer: {view.title}", meta)


class HeadPage:
    """One head's page in a notebook (``lens.show_head``): shown inline as an offline page in
    an iframe; ``.figures`` and ``.attention`` for use one by one; ``.save(path)`` writes it."""

    def __init__(self, view: HeadView, meta: dict[str, object] | None = None) -> None:
        self.view, self.meta = view, meta
        self.figures, self.attention = [styled(f) for f in view.figures], view.attention
        self.html = head_page(view, meta)

    def save(self, path) -> Any:
        from rope_lens.atomic import write_text

        return write_text(path, self.html)

    def _repr_html_(self) -> str:
        # A page of its own (its scripts, its CSP): the notebook's page is left alone.
        height = 560 + len(self.figures) * (FIGURE_HEIGHT + 40) + 900
        return (
            f'<iframe srcdoc="{html.escape(self.html)}" style="width:100%;height:{height}px;'
            'border:0" title="head explorer"></iframe>'
        )

    def __repr__(self) -> str:
        return f"HeadPage({self.view.title}: {self.view.summary})"


# ---- the report's section: every head, one shown at a time -------------------------------


def _plain(fig: go.Figure) -> dict[str, Any]:
    """A figure as JSON-ready data and layout, without the house template (shared once)."""
    from plotly.io.json import to_json_plotly

    d = json.loads(str(to_json_plotly(fig.to_dict())))
    d["layout"].pop("template", None)
    return {"data": d["data"], "layout": d["layout"]}


def _template() -> dict[str, Any]:
    from plotly.io.json import to_json_plotly

    return json.loads(str(to_json_plotly(styled(go.Figure()).to_dict()["layout"]["template"])))


def explorer_section(
    explorer: pd.DataFrame,
    corpus_heads: pd.DataFrame | None = None,
    band_norm: pd.DataFrame | None = None,
) -> Section:
    """The report's head explorer: a selector, one head's page at a time, and a table of every
    head linking to its page (``#head-L3H2``; the class map's cells link there too)."""
    # One small table per head (its rows and the tokens), split once: filtering the whole
    # table for every figure of every head was most of the report's time.
    explorer = explorer.astype({"label": object})  # arrow strings are slow to slice per head
    tokens = records(explorer, "token")
    views = {}
    for (ly, hd), rows in explorer[explorer["record"] != "token"].groupby(["layer", "head"]):
        own = pd.concat([tokens, rows], ignore_index=True)
        views[head_key(ly, hd)] = head_view(own, int(ly), int(hd), corpus_heads, band_norm)
    first = next(iter(views.values()))
    n_fig = max(len(v.figures) for v in views.values())
    data = {
        "template": _template(),
        "tokens": first.attention.tokens,
        "order": list(views),
        "heads": {
            key: {
                "title": v.title,
                "summary": v.summary,
                "figures": [_plain(f) for f in v.figures],
                "pattern": np.round(np.asarray(v.attention.patterns)[0], 4).tolist(),
                "name": v.attention.head_names[0],
            }
            for key, v in views.items()
        },
    }
    esc = html.escape
    options = "".join(f'<option value="{k}">{esc(v.title)}</option>' for k, v in views.items())
    figs = "".join(
        f'<div class="figure head-figure" id="head-figure-{i}" style="height:{FIGURE_HEIGHT}px">'
        "</div>"
        for i in range(n_fig)
    )
    table = _heads_table(views, corpus_heads, explorer)
    markup = (
        '<div id="head-explorer">'
        '<p><label>Head: <select id="head-select">' + options + "</select></label> "
        "(or click a head in the class map, a head name such as L3H2 in a summary, or a row "
        "below; the address bar keeps the head, so the back button works)</p>"
        '<h3 id="head-title"></h3><p id="head-summary"></p>'
        + figs
        + '<div id="head-attention" class="attention"></div>'
        "<details><summary>Every head (links to its page)</summary>" + table + "</details></div>"
        f'<script type="application/json" id="head-explorer-data">{safe_json(data)}</script>'
    )
    prompt = "".join(first.attention.tokens)
    return Section(
        "Head explorer",
        [
            "One head at a time: its attention pattern on the prompt, its query and key spectra, "
            "its scores and class, the per-frequency decomposition of the last query's logits "
            "against its strongest keys, and how its own scores change when half of its layer's "
            "chunks stop rotating.",
            f"Prompt: {prompt!r}.",
        ],
        html=markup,
        script=_SCRIPT,
    )


def _heads_table(views: dict[str, HeadView], corpus: pd.DataFrame | None, explorer) -> str:
    esc = html.escape
    rows = []
    for key, v in views.items():
        cls, scores, _ = _class_and_scores(explorer, v.layer, v.head, corpus)
        cells = "".join(f"<td>{scores.get(s, float('nan')):.2f}</td>" for s in SCORES)
        row = f'<tr><td><a href="#head-{key}">{key}</a></td><td>{esc(str(cls))}</td>{cells}</tr>'
        rows.append(row)
    head = "<tr><th>head</th><th>class</th>" + "".join(f"<th>{SCORE_NAMES[s]}</th>" for s in SCORES)
    return f'<table class="heads"><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# Runs in the report page (nonce'd by rope_lens.viz.report). Picks the head from the address
# (#head-L3H2), draws its figures with the page's plotly and its pattern with circuitsvis, and
# sends clicks on the head class map / head scatter (layout.meta.head_links) to a head's page.
_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('head-explorer-data').textContent);
  var select = document.getElementById('head-select');
  function keyFromHash() {
    var m = /^#head-(L\\d+H\\d+)$/.exec(window.location.hash);
    return m && data.heads[m[1]] ? m[1] : null;
  }
  function show(key) {
    var h = data.heads[key];
    select.value = key;
    document.getElementById('head-title').textContent = h.title;
    document.getElementById('head-summary').textContent = h.summary;
    var figs = document.querySelectorAll('.head-figure');
    for (var i = 0; i < figs.length; i++) {
      var f = h.figures[i];
      if (!f) { figs[i].style.display = 'none'; continue; }
      figs[i].style.display = '';
      var layout = Object.assign({}, f.layout, {template: data.template});
      window.__ropeLens.plots.push(Plotly.react(figs[i], f.data, layout,
        {responsive: true, displaylogo: false}));
    }
    CircuitsVis.render('head-attention', CircuitsVis.AttentionHeads,
      {tokens: data.tokens, attention: [h.pattern], attentionHeadNames: [h.name],
       maskUpperTri: true});
    document.getElementById('head-explorer').setAttribute('data-head', key);
  }
  select.addEventListener('change', function () { window.location.hash = 'head-' + select.value; });
  window.addEventListener('hashchange', function () {
    var key = keyFromHash();
    if (key) { show(key); document.getElementById('head-explorer').scrollIntoView(); }
  });
  var start = keyFromHash();
  show(start || data.order[0]);
  if (start) { document.getElementById('head-explorer').scrollIntoView(); }
  // Clicks on figures that name heads (layout.meta.head_links: "xy" = x head, y layer;
  // "customdata" = [layer, head, ...]) open that head's page, once the plots exist.
  Promise.all(window.__ropeLens.plots).then(function () {
    document.querySelectorAll('.js-plotly-plot').forEach(function (el) {
      var how = el.layout && el.layout.meta && el.layout.meta.head_links;
      if (!how || !el.on) { return; }
      el.on('plotly_click', function (ev) {
        var p = ev.points && ev.points[0];
        if (!p) { return; }
        var layer = how === 'xy' ? p.y : p.customdata[0];
        var head = how === 'xy' ? p.x : p.customdata[1];
        window.location.hash = 'head-L' + layer + 'H' + head;
      });
    });
  });
})();
"""
