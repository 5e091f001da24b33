"""Frequency-usage figures from the band-norm table (paper Figs 3, 4, 10, 11, 13, 19).

Every function takes the table written by :mod:`rope_lens.analyses.band_norms` (columns
``layer, layer_type, head, kind, chunk, frequency, wavelength, mean_norm``) and returns a
``go.Figure``. Nothing is computed beyond reshaping and the mean over heads that the paper's
per-layer panels show.

Axis convention (the paper's): chunk 0, the highest frequency, is the top row. The left axis is
labelled in frequency (rad/token), the right axis in wavelength (tokens); hovering a cell shows
its layer, head, chunk, exact frequency, wavelength and value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.viz.chunks import (  # noqa: F401 (re-exported: the axis helpers live there)
    add_chunk_heatmap,
    chunk_heatmap,
    chunk_ticks,
    fmt_frequency,
    fmt_wavelength,
)
from rope_lens.viz.style import styled

KIND_NAMES = {"q": "Query", "k": "Key", "v": "Value"}
_V_NOTE = "values are not rotated: the frequency is the matching q/k chunk's label"


def _grid(df: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Mean over the remaining rows of ``mean_norm`` per (chunk, column), plus freq/wavelength."""
    g = df.groupby(["chunk", column], sort=True)
    z = g["mean_norm"].mean().unstack(column)
    freq = g["frequency"].first().unstack(column).reindex_like(z)
    wave = g["wavelength"].first().unstack(column).reindex_like(z)
    return z.to_numpy(), freq.to_numpy(), wave.to_numpy(), list(z.columns)


def _one_kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    sub = df[df["kind"] == kind]
    if sub.empty:
        raise ValueError(f"the band-norm table has no rows for kind {kind!r}")
    return sub


def _layer_labels(df: pd.DataFrame, layers: list, kind: str) -> list[str]:
    types = df.groupby("layer")["layer_type"].first()
    n_heads = df.groupby("layer")["head"].nunique()
    unit = "query heads" if kind == "q" else "KV heads"
    return [f"layer {ly} ({types[ly]})<br>mean over {n_heads[ly]} {unit}" for ly in layers]


def _theta(freqs: np.ndarray) -> float | None:
    """The base θ of a default-spaced frequency ladder (None when it is not one)."""
    f = freqs[freqs > 0]
    if len(f) < 2:
        return None
    ratio = f[:-1] / f[1:]
    if not np.allclose(ratio, ratio[0], rtol=1e-3):
        return None
    return float(ratio[0] ** len(freqs))


def frequency_groups(sub: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The rows of one kind split by layer type when the types rotate at different
    frequencies (Gemma 3: sliding layers θ = 10k, full layers θ = 1M), each with a label such as
    ``"sliding_attention layers (θ = 1e+04)"``; one group when every layer shares them."""
    ladders = (
        sub.groupby(["layer_type", "chunk"], sort=True)["frequency"].first().unstack("chunk")
    )
    if len(ladders) < 2 or np.allclose(ladders.to_numpy(), ladders.to_numpy()[0], rtol=1e-6):
        return [("", sub)]
    order = sub.drop_duplicates("layer_type").sort_values("layer")["layer_type"]
    groups = []
    for layer_type in order:
        theta = _theta(ladders.loc[layer_type].to_numpy())
        rows = sub[sub["layer_type"] == layer_type]
        layers = sorted(rows["layer"].unique())
        label = f"{layer_type} layers ({len(layers)})"
        groups.append((label + (f", θ = {theta:.0e}" if theta else ""), rows))
    return groups


def layer_frequency_heatmap(
    df: pd.DataFrame, kind: str = "q", title: str | None = None, zmax: float | None = None
) -> go.Figure:
    """Layer x frequency mean chunk norms of one kind, averaged over heads (Figs 3, 10, 13).

    Layer types with different frequencies (Gemma 3's sliding and full layers) get one panel
    each, with that type's own frequency and wavelength axes and one shared colour scale.
    """
    sub = _one_kind(df, kind)
    if title is None:
        title = f"{KIND_NAMES[kind]} frequency usage per layer ({sub['model'].iloc[0]})"
    groups = frequency_groups(sub)
    if len(groups) > 1:
        return band_norm_panels(
            dict(groups), kind=kind, title=title, shared_scale=True, own_axes=True
        )
    z, freq, wave, layers = _grid(sub, "layer")
    return chunk_heatmap(
        z,
        layers,
        freq,
        wave,
        _layer_labels(sub, layers, kind),
        "Mean norm",
        "layer (0-based)",
        title,
        zmax,
        _V_NOTE if kind == "v" else "",
    )


def head_frequency_heatmap(
    df: pd.DataFrame,
    kind: str,
    layer: int,
    heads: Sequence[int] | None = None,
    title: str | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """Head x frequency mean chunk norms for one layer (Figs 4, 11).

    Args:
        df: band-norm table.
        kind: ``"q"``, ``"k"`` or ``"v"`` (k and v heads are KV heads).
        layer: layer index as stored (0-based; negative counts from the end).
        heads: restrict to these heads (e.g. one KV group of query heads, Fig 11).
        title: figure title.
        zmax: colour-scale maximum.
    """
    sub = _one_kind(df, kind)
    layers = sorted(sub["layer"].unique())
    if layer < 0:
        layer = layers[layer]
    sub = sub[sub["layer"] == layer]
    if sub.empty:
        raise ValueError(f"the band-norm table has no layer {layer}")
    if heads is not None:
        sub = sub[sub["head"].isin(list(heads))]
    z, freq, wave, cols = _grid(sub, "head")
    kv = sub.groupby("head")["kv_head"].first()
    unit = "query head" if kind == "q" else "KV head"
    hover = [f"layer {layer} · {unit} {h} (KV head {kv[h]})" for h in cols]
    if title is None:
        title = f"{KIND_NAMES[kind]} frequency usage (layer {layer}, {sub['model'].iloc[0]})"
    fig = chunk_heatmap(
        z, cols, freq, wave, hover, "Mean norm", f"{unit} (0-based)", title, zmax,
        _V_NOTE if kind == "v" else "",
    )  # fmt: skip
    fig.update_xaxes(tickmode="array", tickvals=cols)
    return fig


def band_norm_panels(
    frames: Mapping[str, pd.DataFrame],
    kind: str = "q",
    by: str = "layer",
    layer: int | None = None,
    title: str | None = None,
    shared_scale: bool = False,
    own_axes: bool = False,
) -> go.Figure:
    """Side-by-side chunk heatmaps, one panel per labelled table or per kind.

    ``own_axes``: the panels' frequencies differ (Gemma 3's layer types), so each keeps its
    tick labels on both sides and the panels stand further apart.

    ``frames`` maps a panel title to a band-norm table; use it for q/k/v side by side (Fig 13:
    pass the same table under three titles with ``kind`` ignored, see :func:`qkv_panels`) or for
    the same model on several input domains (Fig 19, with ``shared_scale=True``: one colour
    bar for all panels).
    """
    items = list(frames.items())
    n = len(items)
    grids = []
    for _, frame in items:
        sub_kind = frame["kind"].iloc[0] if frame["kind"].nunique() == 1 else kind
        sub = _one_kind(frame, sub_kind)
        if by == "head":
            ly = layer if layer is not None else int(sub["layer"].min())
            sub = sub[sub["layer"] == (sorted(sub["layer"].unique())[ly] if ly < 0 else ly)]
        z, freq, wave, cols = _grid(sub, by)
        labels = (
            _layer_labels(sub, cols, sub_kind) if by == "layer" else [f"head {h}" for h in cols]
        )
        grids.append((z, freq, wave, cols, labels, sub_kind))
    # One colour scale makes panels comparable (Fig 19); q, k and v need their own (Fig 13).
    zmax = max(float(np.nanmax(g[0])) for g in grids) if shared_scale else None
    spacing = 0.07 if shared_scale and not own_axes else 0.2
    fig = make_subplots(
        rows=1,
        cols=n,
        subplot_titles=[name for name, _ in items],
        specs=[[{"secondary_y": True}] * n],
        horizontal_spacing=min(spacing, 0.9 / max(n, 1)) if n > 1 else 0.0,
    )
    for i, (z, freq, wave, cols, labels, sub_kind) in enumerate(grids, start=1):
        xaxis: Any = fig.layout[f"xaxis{i if i > 1 else ''}"]  # panel i's x axis
        domain_end = xaxis.domain[1]
        add_chunk_heatmap(
            fig, 1, i, z, cols, freq, wave, labels, "Mean norm", zmax=zmax,
            note=_V_NOTE if sub_kind == "v" else "",
            colorbar_x=1.03 if shared_scale else domain_end + 0.055,
            showscale=not shared_scale or i == n,
        )  # fmt: skip
        fig.update_xaxes(title_text=by, row=1, col=i)
        if list(cols) != list(range(int(min(cols)), int(min(cols)) + len(cols))):
            # Gaps (e.g. Gemma 3's full layers 5, 11, 17): one cell per column, not stretched.
            fig.update_xaxes(type="category", row=1, col=i)
        if shared_scale and not own_axes:  # axis titles once, on the outer panels
            if i > 1:
                fig.update_yaxes(title_text=None, row=1, col=i, secondary_y=False)
            if i < n:
                fig.update_yaxes(title_text=None, row=1, col=i, secondary_y=True)
    fig.update_layout(margin=dict(r=90))
    return styled(fig, title)


def qkv_panels(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Fig 13: per-layer mean chunk norms of queries, keys and values side by side (one panel
    per kind and, when they rotate differently, per layer type: see :func:`frequency_groups`)."""
    frames = {}
    kinds = [kind for kind in ("q", "k", "v") if kind in set(df["kind"])]
    for i, k in enumerate(kinds):
        for label, rows in frequency_groups(df[df["kind"] == k]):
            name = f"({chr(97 + i)}) {KIND_NAMES[k]} frequency usage per layer"
            frames[f"{name}<br>{label}" if label else name] = rows
    return band_norm_panels(frames, title=title or f"q, k, v chunk norms ({df['model'].iloc[0]})")


def frequency_profile(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mean chunk norm against chunk, one line per kind, averaged over layers and heads."""
    fig = go.Figure()
    for kind in ("q", "k", "v"):
        sub = df[df["kind"] == kind]
        if sub.empty:
            continue
        g = sub.groupby("chunk")
        prof = g["mean_norm"].mean()
        freq = [fmt_frequency(float(x)) for x in g["frequency"].first()]
        wave = [fmt_wavelength(float(x)) for x in g["wavelength"].first()]
        fig.add_trace(
            go.Scatter(
                x=prof.index,
                y=prof.to_numpy(),
                name=KIND_NAMES[kind],
                mode="lines+markers",
                marker=dict(size=4),
                customdata=np.stack([freq, wave], axis=1),
                hovertemplate=f"{KIND_NAMES[kind]}<br>chunk %{{x}}<br>frequency %{{customdata[0]}}"
                " rad/token<br>wavelength %{customdata[1]} tokens<br>mean norm %{y:.3f}"
                "<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="chunk (0 = highest frequency → lowest)")
    fig.update_yaxes(title_text="mean norm (over layers and heads)", rangemode="tozero")
    return styled(fig, title or f"Frequency profile ({df['model'].iloc[0]})")
