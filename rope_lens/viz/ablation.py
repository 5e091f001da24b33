"""Ablation figures: loss and positional-head survival as bands of frequencies stop rotating.

Input: the table of :mod:`rope_lens.analyses.ablation`, one row per (configuration, layer,
head) with ``ablation, sweep, band_lo, band_hi, band_fraction, loss, base_loss, delta_loss``,
the head scores under ablation, their change ``d_<score>`` and the baseline ``base_class``.
Baseline rows have ``ablation == "none"``.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.viz.style import CATEGORICAL, styled

CONFIG = ["ablation", "sweep", "band_lo", "band_hi", "ablated_layers", "ablated_heads"]
_DASH = {"rotation-free": "solid", "zero": "dash", "mean": "dot"}


def _sweeps(df: pd.DataFrame):
    """(ablation kind, sweep direction) groups of the swept configurations, in table order."""
    swept = df[(df["ablation"] != "none") & (df["sweep"] != "")]
    return swept.groupby(["ablation", "sweep"], sort=False)


def _which(word: str, ids: object) -> str:
    """``("layer", "all")`` -> "every layer"; ``("head", "1,2")`` -> "heads 1, 2"."""
    text = str(ids)
    if text == "all":
        return f"every {word}"
    return f"{word}{'s' if ',' in text else ''} {text.replace(',', ', ')}"


def ablated_scope(df: pd.DataFrame) -> str:
    """Which layers and heads the ablations touched, in words, e.g. ``"layer 3, heads 2"``
    or ``"every layer and head"`` (one clause per distinct scope when configurations differ)."""
    if "ablated_layers" not in df:
        return "every layer and head"
    rows = df[df["ablation"] != "none"]
    scopes = rows[["ablated_layers", "ablated_heads"]].drop_duplicates()
    parts = []
    for layers, heads in scopes.itertuples(index=False):
        if str(layers) == "all" and str(heads) == "all":
            parts.append("every layer and head")
            continue
        parts.append(f"{_which('layer', layers)}, {_which('head', heads)}")
    return "; ".join(parts) if parts else "nothing (baseline only)"


def _band_text(r) -> str:
    return f"chunks {int(r.band_lo)}:{int(r.band_hi)} ({r.band_fraction:.0%} of frequencies)"


def ablation_curves(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Change in next-token loss against the fraction of chunks ablated, one line per sweep.

    A ``low`` sweep that stops rotating the lowest frequencies is an inference-time p-RoPE;
    ``high`` removes the highest frequencies (the paper's "reversed" variant).
    """
    fig = go.Figure()
    for i, ((kind, sweep), sub) in enumerate(_sweeps(df)):
        rows = sub.drop_duplicates(CONFIG).sort_values("band_fraction")
        fig.add_trace(
            go.Scatter(
                x=rows["band_fraction"],
                y=rows["delta_loss"],
                mode="lines+markers",
                name=f"{kind}, {sweep}est frequencies",
                line=dict(color=CATEGORICAL[i % len(CATEGORICAL)], dash=_DASH.get(kind, "solid")),
                customdata=[_band_text(r) for r in rows.itertuples()],
                hovertemplate=f"{kind} · {sweep}<br>%{{customdata}}<br>Δ loss %{{y:.4f}} nats/token"
                "<extra></extra>",
            )
        )
    single = df[(df["ablation"] != "none") & (df["sweep"] == "")].drop_duplicates(CONFIG)
    if len(single):
        fig.add_trace(
            go.Scatter(
                x=single["band_fraction"],
                y=single["delta_loss"],
                mode="markers",
                name="single bands",
                marker=dict(symbol="x", size=9, color="black"),
                customdata=[f"{r.ablation} {_band_text(r)}" for r in single.itertuples()],
                hovertemplate="%{customdata}<br>Δ loss %{y:.4f}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="black", width=1, dash="dot"))
    fig.update_xaxes(title_text="fraction of frequency chunks ablated", tickformat=".0%")
    fig.update_yaxes(title_text="Δ next-token loss (nats/token)")
    base = df["base_loss"].iloc[0] if len(df) else float("nan")
    model = df["model"].iloc[0] if len(df) else ""
    return styled(
        fig,
        title
        or f"Inference-time frequency ablations ({model}; base loss {base:.3f})"
        f"<br><sup>ablated: {ablated_scope(df)}</sup>",
    )


def head_survival(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mean diagonal / previous-token score of the baseline's positional heads under each sweep."""
    fig = make_subplots(
        rows=1, cols=2, shared_yaxes=True,
        subplot_titles=["baseline diagonal heads: diag score", "baseline previous-token heads: prev score"],
    )  # fmt: skip
    for col, (cls, score) in enumerate(
        (("diagonal", "diag_score"), ("previous-token", "prev_score")), start=1
    ):
        heads = df[df["base_class"] == cls]
        if heads.empty:
            continue
        base = heads[heads["ablation"] == "none"][score].mean()
        for i, ((kind, sweep), sub) in enumerate(_sweeps(heads)):
            curve = sub.groupby("band_fraction")[score].mean()
            fig.add_trace(
                go.Scatter(
                    x=[0.0, *curve.index],
                    y=[base, *curve.to_numpy()],
                    mode="lines+markers",
                    name=f"{kind}, {sweep}",
                    legendgroup=f"{kind}{sweep}",
                    showlegend=col == 1,
                    line=dict(color=CATEGORICAL[i % len(CATEGORICAL)], dash=_DASH.get(kind)),
                    hovertemplate=f"{kind} · {sweep}<br>%{{x:.0%}} ablated<br>mean {score} "
                    f"%{{y:.3f}} over {heads[['layer', 'head']].drop_duplicates().shape[0]} "
                    "heads<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="fraction of chunks ablated", tickformat=".0%", row=1, col=col)
    fig.update_yaxes(title_text="mean score", range=[0, 1.02], row=1, col=1)
    return styled(
        fig,
        title
        or "Do positional heads survive frequency ablations?"
        f"<br><sup>ablated: {ablated_scope(df)}</sup>",
    )
