"""One publication style for every rope_lens figure, and the one way to save them.

Figures are written as HTML that works offline (plotly.js either inlined, or shared: one
``plotly.min.js`` per output folder that every page loads by a relative path, so a hundred
figures cost one 4.7 MB copy rather than a hundred) and, when ``kaleido`` can drive a local
Chromium, as static PNG/SVG/PDF.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from rope_lens.atomic import write_file, write_text

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
        xaxis=dict(
            showline=True, linecolor="black", ticks="outside", mirror=False, automargin=True
        ),
        yaxis=dict(
            showline=True, linecolor="black", ticks="outside", mirror=False, automargin=True
        ),
        margin=dict(l=70, r=30, t=80, b=60),
    )
)
pio.templates["rope_lens"] = TEMPLATE


def panel(row: int, col: int) -> dict[str, Any]:
    """``row``/``col`` keywords for ``fig.add_vline`` / ``add_hline``: plotly leaves them
    unannotated with the default ``"all"``, so a type checker reads them as ``str``."""
    return {"row": row, "col": col}


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


PLOTLY_JS = "plotly.min.js"


def shared_plotlyjs(folder: str | Path) -> Path:
    """``folder/plotly.min.js`` (written once, atomically), for :func:`save_figure`'s
    ``plotlyjs`` argument: every page that loads it stays offline without its own copy."""
    path = Path(folder) / PLOTLY_JS
    if not path.exists():
        from plotly.offline import get_plotlyjs

        write_text(path, get_plotlyjs())
    return path


def save_figure(
    fig: go.Figure,
    stem: str | Path,
    formats: Iterable[str] = ("html",),
    width: int = 800,
    height: int = 500,
    plotlyjs: str | Path | None = None,
) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format, atomically; returns the paths.

    ``html`` inlines plotly.js (self-contained) unless ``plotlyjs`` names a shared copy (see
    :func:`shared_plotlyjs`), which the page then loads by its path relative to the page.
    Static formats (png, svg, pdf) need kaleido and a local Chromium (Debian's ``chromium``
    package); no browser is ever downloaded.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            include: str | bool = True
            if plotlyjs is not None:
                include = Path(os.path.relpath(plotlyjs, stem.parent)).as_posix()
            write_file(target, lambda tmp, inc=include: fig.write_html(
                tmp, include_plotlyjs=inc, full_html=True
            ))
        else:
            job = (fig.to_dict(), target, width, height)  # a snapshot: fig may change later
            if _BATCH:  # inside static_export(): rendered when the block closes
                _BATCH[0].append(job)
            else:
                _write_static([job])
        written.append(target)
    return written


STATIC_FORMATS = ("png", "svg", "pdf")
_BATCH: list[list[tuple[dict, Path, int, int]]] = []  # open static_export() blocks


def static_export_problem() -> str | None:
    """Why static export cannot work here, or None when kaleido and a Chromium are present."""
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return "kaleido is not installed (pip install kaleido)"
    if not (os.environ.get("BROWSER_PATH") or _chromium()):
        return "no Chromium on PATH (Debian: apt-get install chromium)"
    return None


def _write_static(jobs: list[tuple[dict, Path, int, int]]) -> None:
    """Render every job in one headless Chromium session, each file written atomically.

    kaleido's one-shot mode is used on purpose: its long-lived "sync server" blocks forever if
    Chromium fails to start, while one-shot raises. The browser is the system one (Debian's
    ``chromium``, found on PATH or via ``BROWSER_PATH``): kaleido never downloads one. MathJax is
    off because kaleido would fetch it from a CDN and no label uses LaTeX.
    """
    if not jobs:
        return
    problem = static_export_problem()
    if problem:
        raise RuntimeError(f"static figure export unavailable: {problem}")
    import kaleido

    chrome = _chromium()
    if chrome:
        os.environ.setdefault("BROWSER_PATH", chrome)
    # One browser session renders every job into a scratch folder; each file is then moved
    # into place with the atomic helper (chmod, fsync, rename), so readers never see half.
    with tempfile.TemporaryDirectory(dir=jobs[0][1].parent, prefix=".static-") as scratch:
        specs, rendered = [], []
        for n, (fig, target, width, height) in enumerate(jobs):
            path = Path(scratch) / f"{n}{target.suffix}"
            opts = dict(format=target.suffix[1:], width=width, height=height, scale=1)
            specs.append(dict(fig=fig, path=path, opts=opts))
            rendered.append((path, target))
        kaleido.write_fig_from_object_sync(specs, kopts=dict(mathjax=False))
        for path, target in rendered:
            if not path.exists() or path.stat().st_size == 0:
                raise RuntimeError(f"kaleido wrote nothing for {target}")
            write_file(target, lambda tmp, src=path: shutil.move(src, tmp))


@contextlib.contextmanager
def static_export() -> Iterator[None]:
    """Batch every static (png/svg/pdf) export inside the block into one Chromium session.

    Starting Chromium costs seconds per image otherwise. Files appear when the block exits;
    :func:`save_figure` returns their final paths at once. Nested blocks join the outer one.
    """
    if _BATCH:  # nested: the outermost block writes
        yield
        return
    _BATCH.append([])
    try:
        yield
        jobs = _BATCH[0]
    finally:
        _BATCH.clear()
    _write_static(jobs)


def use_static_notebook_figures(width: int | None = None, height: int | None = None) -> str:
    """Make ``fig.show()`` in a notebook draw a PNG when kaleido and a Chromium work (small
    outputs that GitHub renders; one browser kept open, about half a second a figure), and
    interactive HTML with plotly.js inlined otherwise. Returns the renderer chosen."""
    if static_export_problem() is not None:
        pio.renderers.default = "notebook"
        return "notebook"
    import atexit
    import warnings

    import kaleido

    chrome = _chromium()
    if chrome:
        os.environ.setdefault("BROWSER_PATH", chrome)
    kaleido.start_sync_server(mathjax=False, timeout=60, silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)
    # plotly passes its own kaleido options per call, which a running server ignores (it
    # already has them): that warning says nothing here.
    warnings.filterwarnings("ignore", message="The kopts argument is ignored")
    if width or height:  # default: each figure's own layout size (plotly: 700 x 500)
        png: Any = pio.renderers["png"]
        png.width, png.height = width, height
    pio.renderers.default = "png"
    return "png"
