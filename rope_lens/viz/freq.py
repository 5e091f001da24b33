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
from dataclasses import dataclass
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
    ladders = sub.groupby(["layer_type", "chunk"], sort=True)["frequency"].first().unstack("chunk")
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


# Panel grid, in pixels, so that no title, tick label or colour bar runs into the next panel
# (Gemma 3's Fig 13 was six 200-px panels in one 1500-px row): a panel keeps its own width and
# the figure grows, wrapping into rows, instead of the panels shrinking.
PANEL_WIDTH = 330
PANEL_HEIGHT = 380
AXES_GAP = 170  # a panel's wavelength ticks and title, then the next panel's frequency ones
BAR_WIDTH = 110  # a colour bar right of a row, with its tick labels and title
BAR_BELOW = 90  # a horizontal colour bar under a panel's x-axis title
ROW_GAP = 120  # the x-axis title of one row and the subplot titles of the next
MARGIN = dict(l=80, r=80, t=110, b=70)
MAX_PER_ROW = 4
TITLE_PAD, TITLE_LINE, SUBTITLE_LINE = 22, 26, 18  # px: a figure title's lines, a panel's
PAGE_WIDTH = 1500  # the report's page (rope_lens.viz.report)


@dataclass(frozen=True)
class PanelGrid:
    """Where ``n`` panels go: ``rows`` x ``cols``, the gaps and the figure's size in pixels.

    ``labelled``: every panel shows both frequency axes (else only the outer ones).
    ``own_bar``: every panel has its own colour scale, with a horizontal colour bar under it
    (so the bars never stand between panels); else one vertical bar per row, at its right end.
    """

    n: int
    cols: int
    labelled: bool
    own_bar: bool

    @property
    def rows(self) -> int:
        return -(-self.n // self.cols)

    @property
    def gap(self) -> int:
        return AXES_GAP if self.labelled else 40

    @property
    def row_gap(self) -> int:
        return ROW_GAP + (BAR_BELOW if self.own_bar else 0)

    @property
    def margin(self) -> dict[str, int]:
        return dict(
            MARGIN,
            r=MARGIN["r"] + (0 if self.own_bar else BAR_WIDTH),
            b=MARGIN["b"] + (BAR_BELOW if self.own_bar else 0),
        )

    @property
    def width(self) -> int:
        panels = self.cols * PANEL_WIDTH + (self.cols - 1) * self.gap
        return self.margin["l"] + panels + self.margin["r"]

    @property
    def height(self) -> int:
        panels = self.rows * PANEL_HEIGHT + (self.rows - 1) * self.row_gap
        return self.margin["t"] + panels + self.margin["b"]

    @property
    def plot_width(self) -> int:
        return self.width - self.margin["l"] - self.margin["r"]

    @property
    def plot_height(self) -> int:
        return self.height - self.margin["t"] - self.margin["b"]

    def spacing(self) -> tuple[float, float]:
        """make_subplots' horizontal and vertical spacing (fractions of the plot area)."""
        h = self.gap / self.plot_width if self.cols > 1 else 0.0
        v = self.row_gap / self.plot_height if self.rows > 1 else 0.0
        return h, v


def panel_grid(n: int, labelled: bool, own_bar: bool, per_row: int | None = None) -> PanelGrid:
    """``per_row`` panels per row; by default as many as fit the report's page width
    (:data:`PAGE_WIDTH`, at most :data:`MAX_PER_ROW`), the rows then balanced (4 -> 2 x 2)."""
    if per_row is not None:
        return PanelGrid(n, max(1, min(n, per_row)), labelled, own_bar)
    fits = [c for c in range(1, min(n, MAX_PER_ROW) + 1)]
    fits = [c for c in fits if PanelGrid(n, c, labelled, own_bar).width <= PAGE_WIDTH] or [1]
    rows = -(-n // max(fits))
    return PanelGrid(n, -(-n // rows), labelled, own_bar)


def band_norm_panels(
    frames: Mapping[str, pd.DataFrame],
    kind: str = "q",
    by: str = "layer",
    layer: int | None = None,
    title: str | None = None,
    shared_scale: bool = False,
    own_axes: bool = False,
    per_row: int | None = None,
    row_scales: bool = False,
) -> go.Figure:
    """Chunk heatmaps, one panel per labelled table or per kind, in a grid of fixed-size panels.

    ``frames`` maps a panel title to a band-norm table; use it for q/k/v side by side (Fig 13,
    see :func:`qkv_panels`) or for the same model on several input domains (Fig 19, with
    ``shared_scale=True``: one colour bar for all panels).

    Args:
        own_axes: the panels' frequencies differ (Gemma 3's layer types), so each keeps its
            tick labels on both sides and the panels stand further apart.
        per_row: panels per row (default up to :data:`MAX_PER_ROW`); more wrap to new rows.
        row_scales: the panels of a row share one colour scale and one colour bar (Fig 13 on
            Gemma 3: one row per kind, one column per layer type).
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
    own_bar = not (shared_scale or row_scales)  # q, k, v: a colour scale (and bar) each
    spaced = own_axes or own_bar  # every panel labels both of its frequency axes
    grid = panel_grid(n, spaced, own_bar, per_row)
    h_space, v_space = grid.spacing()
    fig = make_subplots(
        rows=grid.rows,
        cols=grid.cols,
        subplot_titles=[name for name, _ in items],
        specs=[[{"secondary_y": True}] * grid.cols] * grid.rows,
        horizontal_spacing=h_space,
        vertical_spacing=v_space,
    )
    # One colour scale makes panels comparable (Fig 19); q, k and v need their own (Fig 13).
    zmax_all = max(float(np.nanmax(g[0])) for g in grids) if shared_scale else None
    for i, (z, freq, wave, cols, labels, sub_kind) in enumerate(grids):
        row, col = i // grid.cols + 1, i % grid.cols + 1
        in_row = [g for j, g in enumerate(grids) if j // grid.cols == row - 1]
        zmax = max(float(np.nanmax(g[0])) for g in in_row) if row_scales else zmax_all
        last_in_row = col == grid.cols or i == n - 1
        xaxis: Any = fig.layout[f"xaxis{i + 1 if i else ''}"]
        yaxis: Any = fig.layout[f"yaxis{2 * i + 1 if i else ''}"]  # two y axes per panel
        if own_bar:  # horizontal, under the panel's x-axis title
            bar = dict(
                orientation="h", x=sum(xaxis.domain) / 2, xanchor="center",
                y=yaxis.domain[0] - 72 / grid.plot_height, yanchor="top",
                len=xaxis.domain[1] - xaxis.domain[0], thickness=12,
                title=dict(text="Mean norm", side="top"),
            )  # fmt: skip
        else:  # vertical, right of the row's last wavelength axis (70 px), over the row
            bar = dict(
                x=xaxis.domain[1] + 70 / grid.plot_width,
                y=sum(yaxis.domain) / 2, yanchor="middle", len=yaxis.domain[1] - yaxis.domain[0],
            )  # fmt: skip
        add_chunk_heatmap(
            fig, row, col, z, cols, freq, wave, labels, "Mean norm", zmax=zmax,
            note=_V_NOTE if sub_kind == "v" else "",
            showscale=own_bar or last_in_row,
            colorbar=bar,
        )  # fmt: skip
        fig.update_xaxes(title_text=by, row=row, col=col)
        if list(cols) != list(range(int(min(cols)), int(min(cols)) + len(cols))):
            # Gaps (e.g. Gemma 3's full layers 5, 11, 17): one cell per column, not stretched.
            fig.update_xaxes(type="category", row=row, col=col)
        if not spaced:  # axis labels once, on the outer panels of each row (shared ladder)
            hide = dict(title_text=None, showticklabels=False)
            if col > 1:
                fig.update_yaxes(hide, row=row, col=col, secondary_y=False)
            if not last_in_row:
                fig.update_yaxes(hide, row=row, col=col, secondary_y=True)
    # The title (two lines with the model's name) sits at the top, above the subplot titles
    # (two lines for Gemma 3's layer types), each given its own band of the top margin.
    title_lines = (title or "").count("<br>") + 1 if title else 0
    sub_lines = max((name.count("<br>") + 1 for name, _ in items), default=0)
    top = TITLE_PAD + TITLE_LINE * title_lines + SUBTITLE_LINE * sub_lines + 12
    fig.update_layout(
        width=grid.width,
        height=grid.height - grid.margin["t"] + top,
        margin=dict(grid.margin, t=top),
        autosize=False,
    )
    styled(fig, title)
    if title:
        fig.update_layout(title=dict(y=1, yref="container", yanchor="top", pad=dict(t=TITLE_PAD)))
    return fig


def qkv_panels(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Fig 13: per-layer mean chunk norms of queries, keys and values side by side, each with
    its own colour scale. When layer types rotate differently (Gemma 3, see
    :func:`frequency_groups`) there is one row per kind and one column per layer type, a row
    sharing its kind's colour scale."""
    frames = {}
    kinds = [kind for kind in ("q", "k", "v") if kind in set(df["kind"])]
    n_groups = 1
    for i, k in enumerate(kinds):
        groups = frequency_groups(df[df["kind"] == k])
        n_groups = max(n_groups, len(groups))
        for label, rows in groups:
            name = f"({chr(97 + i)}) {KIND_NAMES[k]} frequency usage per layer"
            frames[f"{name}<br>{label}" if label else name] = rows
    title = title or f"q, k, v chunk norms ({df['model'].iloc[0]})"
    if n_groups == 1:
        return band_norm_panels(frames, title=title, per_row=len(frames))
    return band_norm_panels(frames, title=title, own_axes=True, per_row=n_groups, row_scales=True)


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
