"""Head-level figures: the layer x head class map, score scatter, frequency profiles by class.

Inputs are the tables of :mod:`rope_lens.analyses.heads` (one row per layer and head with
``diag_score, prev_score, sink_score, head_class``, and with ``--spread`` ``mean_distance,
entropy``),
:mod:`rope_lens.analyses.profiles` (per-chunk q/k spectra of every query head, with its class)
and :mod:`rope_lens.analyses.apostrophe` (``after_apos, others_sink, apostrophe_score``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.viz.chunks import fmt_frequency, fmt_wavelength
from rope_lens.viz.style import CATEGORICAL, styled

CLASS_ORDER = ("diagonal", "previous-token", "sink", "other")
CLASS_COLOURS = {
    "diagonal": CATEGORICAL[1],
    "previous-token": CATEGORICAL[0],
    "sink": CATEGORICAL[3],
    "other": "#d9d9d9",
}


def _classes(df: pd.DataFrame) -> list[str]:
    present = set(df["head_class"])
    return [c for c in CLASS_ORDER if c in present] + sorted(present - set(CLASS_ORDER))


def head_class_map(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Layer (rows) x head (columns) grid coloured by head class; hover shows every score."""
    classes = _classes(df)
    code = {c: i for i, c in enumerate(classes)}
    layers = sorted(df["layer"].unique())
    heads = sorted(df["head"].unique())
    grid = df.set_index(["layer", "head"])
    z = np.full((len(layers), len(heads)), np.nan)
    text = np.full(z.shape, "", dtype=object)
    for i, layer in enumerate(layers):
        for j, head in enumerate(heads):
            if (layer, head) not in grid.index:
                continue
            r = grid.loc[(layer, head)]
            z[i, j] = code[r["head_class"]]
            text[i, j] = (
                f"layer {layer} · head {head} (KV head {r['kv_head']})<br>class {r['head_class']}"
                f"<br>diag {r['diag_score']:.2f} · prev {r['prev_score']:.2f} · "
                f"sink {r['sink_score']:.2f}"
            )
            if "entropy" in r:  # measured with --spread
                text[i, j] += (
                    f"<br>mean distance {r['mean_distance']:.1f} tokens"
                    f" · entropy {r['entropy']:.2f} nats"
                )
    n = len(classes)
    # A stepped colour scale: one flat band per class code.
    scale = []
    for i, c in enumerate(classes):
        colour = CLASS_COLOURS.get(c, CATEGORICAL[(4 + i) % len(CATEGORICAL)])
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=heads,
            y=layers,
            customdata=text,
            colorscale=scale,
            zmin=-0.5,
            zmax=n - 0.5,
            xgap=1,
            ygap=1,
            hovertemplate="%{customdata}<extra></extra>",
            colorbar=dict(
                tickmode="array", tickvals=list(range(n)), ticktext=classes, title="class"
            ),
        )
    )
    fig.update_xaxes(title_text="head (0-based)", tickmode="array", tickvals=heads)
    fig.update_yaxes(title_text="layer (0-based)", autorange="reversed")
    fig.update_layout(meta={"head_links": "xy"})  # the report's head explorer: click a cell
    return styled(fig, title or f"Head classes ({df['model'].iloc[0]})")


def head_score_scatter(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Diagonal score against previous-token score, one dot per head, coloured by class."""
    fig = go.Figure()
    for cls in _classes(df):
        sub = df[df["head_class"] == cls]
        fig.add_trace(
            go.Scatter(
                x=sub["diag_score"],
                y=sub["prev_score"],
                mode="markers",
                name=cls,
                marker=dict(color=CLASS_COLOURS.get(cls), size=7, line=dict(width=0.5)),
                customdata=np.stack([sub["layer"], sub["head"], sub["sink_score"]], axis=1),
                hovertemplate="layer %{customdata[0]} · head %{customdata[1]}<br>diag %{x:.2f}"
                " · prev %{y:.2f} · sink %{customdata[2]:.2f}<extra>" + cls + "</extra>",
            )
        )
    for line in ("x", "y"):
        getattr(fig, f"add_{'v' if line == 'x' else 'h'}line")(0.5, line=dict(dash="dot", width=1))
    fig.update_xaxes(title_text="diagonal score (mean α_{i,i})", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="previous-token score (mean α_{i,i-1})", range=[-0.02, 1.02])
    fig.update_layout(meta={"head_links": "customdata"})  # customdata = [layer, head, ...]
    return styled(fig, title or f"Positional head scores ({df['model'].iloc[0]})")


def profile_by_class(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mean q and k chunk norm against chunk for each head class (profiles table)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["queries", "keys"], shared_yaxes=True)
    classes = _classes(df)
    for col, kind in enumerate(("q", "k"), start=1):
        sub = df[df["kind"] == kind]
        for cls in classes:
            part = sub[sub["head_class"] == cls]
            if part.empty:
                continue
            g = part.groupby("chunk")
            prof = g["mean_norm"].mean()
            n_heads = part.groupby(["layer", "head"]).ngroups
            freq = [fmt_frequency(float(x)) for x in g["frequency"].first()]
            wave = [
                fmt_wavelength(2 * np.pi / x if x > 0 else np.inf) for x in g["frequency"].first()
            ]
            fig.add_trace(
                go.Scatter(
                    x=prof.index,
                    y=prof.to_numpy(),
                    mode="lines",
                    name=f"{cls} ({n_heads} heads)",
                    legendgroup=cls,
                    showlegend=col == 1,
                    line=dict(color=CLASS_COLOURS.get(cls)),
                    customdata=np.stack([freq, wave], axis=1),
                    hovertemplate=f"{cls}<br>chunk %{{x}} · frequency %{{customdata[0]}} rad/token"
                    "<br>wavelength %{customdata[1]} tokens<br>mean norm %{y:.3f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="chunk (0 = highest frequency)", row=1, col=col)
    fig.update_yaxes(title_text="mean chunk norm", row=1, col=1, rangemode="tozero")
    return styled(fig, title or f"Frequency profile by head class ({df['model'].iloc[0]})")


def apostrophe_scores(df: pd.DataFrame, top: int = 15, title: str | None = None) -> go.Figure:
    """The best apostrophe-head candidates: attention after an apostrophe vs to BOS otherwise."""
    best = df.sort_values("apostrophe_score", ascending=False).head(top)
    labels = [f"L{r.layer}H{r.head}" for r in best.itertuples()]
    fig = go.Figure()
    for col, name, colour in (
        ("after_apos", "α to the apostrophe (queries after one)", CATEGORICAL[1]),
        ("others_sink", "α to BOS (other queries)", CATEGORICAL[0]),
        ("others_prev", "α to previous token (other queries)", "#aaaaaa"),
    ):
        fig.add_trace(go.Bar(x=labels, y=best[col], name=name, marker_color=colour))
    fig.add_hline(y=0.5, line=dict(dash="dot", width=1))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="head (layer, head; best apostrophe score first)")
    fig.update_yaxes(title_text="mean attention", range=[0, 1])
    return styled(fig, title or f"Apostrophe-head search ({df['model'].iloc[0]})")
