"""Chunk heatmaps: rows are frequency chunks, highest frequency on top, as in the paper.

The left axis is labelled in frequency (rad/token), the right axis in wavelength (tokens); hover
shows each cell's column (layer, head or token), chunk, exact frequency, wavelength and value.
Shared by the band-norm (:mod:`rope_lens.viz.freq`) and per-token (:mod:`rope_lens.viz.tokens`)
figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.viz.style import SEQUENTIAL, styled


def fmt_frequency(g: float) -> str:
    """``1`` -> ``"1"``, ``2.05e-4`` -> ``"2.1e-04"``, ``0`` -> ``"0 (unrotated)"``."""
    if g == 0 or not math.isfinite(g):
        return "0 (unrotated)"
    return f"{g:.2g}" if g >= 0.01 else f"{g:.1e}".replace("e-0", "e-")


def fmt_wavelength(w: float) -> str:
    """Tokens per full turn: ``6.28`` -> ``"6.3"``, ``6.1e5`` -> ``"610k"``, inf -> ``"∞"``."""
    if not math.isfinite(w):
        return "∞"
    if w >= 1e6:
        return f"{w / 1e6:.3g}M"
    if w >= 1e3:
        return f"{w / 1e3:.3g}k"
    return f"{w:.3g}"


def chunk_ticks(n_chunks: int, n_ticks: int = 8) -> list[int]:
    """Evenly spaced chunk indices including the first and the last."""
    if n_chunks <= n_ticks:
        return list(range(n_chunks))
    return sorted({int(round(x)) for x in np.linspace(0, n_chunks - 1, n_ticks)})


def chunk_heatmap(
    z: np.ndarray,
    columns: Sequence,
    frequency: np.ndarray,
    wavelength: np.ndarray,
    hover_column: Sequence[str],
    colorbar_title: str,
    x_title: str,
    title: str | None = None,
    zmax: float | None = None,
    note: str = "",
) -> go.Figure:
    """One heatmap of chunks (rows, highest frequency on top) by ``columns``.

    Args:
        z: values, shape ``[n_chunks, n_columns]``.
        columns: x values (layers, heads or token positions).
        frequency: rad/token per cell (same shape as ``z``; per-layer RoPE can differ by column).
        wavelength: tokens per turn per cell.
        hover_column: one hover line per column, e.g. ``"layer 3 (sliding_attention)"``.
        colorbar_title: what the colour means ("Mean norm", "Norm").
        x_title: x-axis title.
        title: figure title.
        zmax: colour-scale maximum (default: the data's).
        note: extra hover line (e.g. that values are not rotated).
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    add_chunk_heatmap(
        fig, 1, 1, z, columns, frequency, wavelength, hover_column, colorbar_title, zmax, note,
        colorbar_x=1.13,
    )  # fmt: skip
    fig.update_xaxes(title_text=x_title)
    fig.update_layout(margin=dict(r=150))
    return styled(fig, title)


def add_chunk_heatmap(
    fig: go.Figure,
    row: int,
    col: int,
    z: np.ndarray,
    columns: Sequence,
    frequency: np.ndarray,
    wavelength: np.ndarray,
    hover_column: Sequence[str],
    colorbar_title: str,
    zmax: float | None = None,
    note: str = "",
    colorbar_x: float | None = None,
    axis_label_column: int | None = None,
    showscale: bool = True,
    colorbar: dict[str, Any] | None = None,
) -> None:
    """Draw a chunk heatmap into panel (row, col) of a figure made with ``secondary_y`` specs.

    The frequency/wavelength tick labels are read from one column (``axis_label_column``,
    default the first) because per-layer-type RoPE (Gemma 3) gives columns different
    frequencies; the axis title then names that column, and the hover stays exact per cell.
    """
    n_chunks = z.shape[0]
    chunks = np.arange(n_chunks)
    hover = np.empty(z.shape + (3,), dtype=object)
    for j, label in enumerate(hover_column):
        hover[:, j, 0] = [fmt_frequency(float(g)) for g in frequency[:, j]]
        hover[:, j, 1] = [fmt_wavelength(float(w)) for w in wavelength[:, j]]
        hover[:, j, 2] = label
    extra = f"<br><i>{note}</i>" if note else ""
    cbar: dict[str, Any] = dict(title=dict(text=colorbar_title, side="right"), len=0.9)
    if colorbar_x is not None:
        cbar["x"] = colorbar_x
    cbar.update(colorbar or {})  # a panel in a grid: placed by the grid (rope_lens.viz.freq)
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=list(columns),
            y=chunks,
            customdata=hover,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=zmax,
            colorbar=cbar,
            showscale=showscale,
            hovertemplate="%{customdata[2]}<br>chunk %{y} (0 = highest frequency)"
            "<br>frequency %{customdata[0]} rad/token<br>wavelength %{customdata[1]} tokens"
            f"<br>{colorbar_title.lower()} %{{z:.3f}}{extra}<extra></extra>",
        ),
        row=row,
        col=col,
        secondary_y=False,
    )
    # An invisible twin trace gives the right-hand (wavelength) axis something to span.
    fig.add_trace(
        go.Scatter(
            x=[columns[0]],
            y=[0],
            mode="markers",
            marker=dict(opacity=0),
            hoverinfo="skip",
            showlegend=False,
        ),
        row=row,
        col=col,
        secondary_y=True,
    )
    ref = 0 if axis_label_column is None else axis_label_column
    ticks = chunk_ticks(n_chunks)
    same = bool(np.allclose(frequency, frequency[:, [ref]], rtol=1e-6, equal_nan=True))
    where = "" if same else f" ({hover_column[ref].split('<br>')[0]})"
    common: dict[str, Any] = dict(
        range=[n_chunks - 0.5, -0.5],
        tickmode="array",
        tickvals=ticks,
        showgrid=False,
        automargin=True,
        title_standoff=6,
    )
    fig.update_yaxes(
        ticktext=[fmt_frequency(float(frequency[t, ref])) for t in ticks],
        title_text=f"frequency (rad/token){where}",
        row=row,
        col=col,
        secondary_y=False,
        **common,
    )
    fig.update_yaxes(
        ticktext=[fmt_wavelength(float(wavelength[t, ref])) for t in ticks],
        title_text="wavelength (tokens)",
        row=row,
        col=col,
        secondary_y=True,
        **common,
    )
