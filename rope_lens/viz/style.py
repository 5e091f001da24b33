"""One publication style for every rope_lens figure, and the one way to save them.

Figures are written as self-contained HTML (plotly.js inlined, works offline) and, when
``kaleido`` can drive a local Chromium, as static PNG/SVG/PDF.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

FONT = "DejaVu Sans, Arial, sans-serif"
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
CATEGORICAL = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]

TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family=FONT, size=13),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=CATEGORICAL,
        xaxis=dict(showline=True, linecolor="black", ticks="outside", mirror=False),
        yaxis=dict(showline=True, linecolor="black", ticks="outside", mirror=False),
        margin=dict(l=70, r=30, t=60, b=60),
    )
)
pio.templates["rope_lens"] = TEMPLATE


def styled(fig: go.Figure, title: str | None = None) -> go.Figure:
    """Apply the house template (and a title) in place; returns the figure for chaining."""
    fig.update_layout(template="rope_lens")
    if title is not None:
        fig.update_layout(title=dict(text=title, x=0.02, xanchor="left"))
    return fig


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def save_figure(
    fig: go.Figure,
    stem: str | Path,
    formats: Iterable[str] = ("html",),
    width: int = 800,
    height: int = 500,
) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format, atomically; returns the paths.

    ``html`` is always self-contained. Static formats (png, svg, pdf) need kaleido and a local
    Chromium (Debian's ``chromium`` package); no browser is ever downloaded.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = stem.with_suffix(f".{fmt}")
        fd, tmp = tempfile.mkstemp(dir=stem.parent, suffix=f".{fmt}.tmp")
        os.close(fd)
        try:
            if fmt == "html":
                fig.write_html(tmp, include_plotlyjs=True, full_html=True)
            else:
                chrome = _chromium()
                if chrome:
                    os.environ.setdefault("BROWSER_PATH", chrome)
                fig.write_image(tmp, format=fmt, width=width, height=height)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(target)
    return written
