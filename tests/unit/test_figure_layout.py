"""Multi-panel figures stay readable for every packaged model's shape: panels wide enough, gaps
that hold the axis titles between them, colour bars that never stand inside a row, subplot
titles that fit their panel. Gemma 3's Fig 13 was six 200-px panels in one 1500-px row with
colour bars over the next panel's axis titles.

Sizes are read in pixels from the figure as exported (its own ``width`` / ``height`` when it
sets them, else its recipe's static size, as ``rope-lens figures`` does).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from rope_lens.viz import freq, paper
from tests.viz_frames import band_norm_frame

GEMMA3_TYPES = (["sliding_attention"] * 5 + ["full_attention"]) * 3
MODELS = {  # the packaged models' shapes: layers, heads, KV heads, chunks, layer types
    "smollm2-135m": dict(n_layers=30, n_heads=9, n_kv_heads=3, n_chunks=32),
    "gemma3-270m": dict(
        n_layers=18, n_heads=4, n_kv_heads=1, n_chunks=128, layer_types=GEMMA3_TYPES
    ),
    "qwen2.5-coder-0.5b": dict(n_layers=24, n_heads=14, n_kv_heads=2, n_chunks=32),
}
MIN_PANEL = 300  # px, each way
MIN_LABELLED_GAP = 150  # px between panels whose facing sides carry tick labels and a title
CHAR = 7.0  # px per character of a subplot title (12-13 px DejaVu Sans)
PAGE = 1500  # the report's page width


def _size(fig, key: str) -> tuple[float, float]:
    recipe = next(r for r in paper.RECIPES if r.key == key)
    return fig.layout.width or recipe.size[0], fig.layout.height or recipe.size[1]


def _panels(fig) -> list[dict[str, Any]]:
    """Each heatmap's panel: its x / y domains and its colour bar."""
    out = []
    for trace in fig.data:
        if trace.type != "heatmap":
            continue
        xa = fig.layout["xaxis" + trace.xaxis[1:]]
        ya = fig.layout["yaxis" + trace.yaxis[1:]]
        twin = fig.layout[f"yaxis{int(trace.yaxis[1:] or 1) + 1}"]
        out.append(dict(x=tuple(xa.domain), y=tuple(ya.domain), trace=trace, left=ya, right=twin))
    return out


def layout_problems(fig, width: float, height: float) -> list[str]:
    margin = fig.layout.margin
    plot_w = width - (margin.l if margin.l is not None else 80) - (margin.r or 80)
    plot_h = height - (margin.t if margin.t is not None else 100) - (margin.b or 80)
    panels = _panels(fig)
    problems = []
    if width > PAGE:
        problems.append(f"{width:.0f} px wide: wider than the report page ({PAGE})")
    for p in panels:
        w, h = (p["x"][1] - p["x"][0]) * plot_w, (p["y"][1] - p["y"][0]) * plot_h
        if w < MIN_PANEL or h < MIN_PANEL:
            problems.append(f"panel {w:.0f} x {h:.0f} px (< {MIN_PANEL})")
    rows: dict[tuple, list] = {}
    for p in panels:
        rows.setdefault(p["y"], []).append(p)
    for row in rows.values():
        row.sort(key=lambda p: p["x"][0])
        row_end = max(p["x"][1] for p in row)
        for left, right in zip(row, row[1:]):
            gap = (right["x"][0] - left["x"][0] - (left["x"][1] - left["x"][0])) * plot_w
            labelled = any(
                bool(axis.title.text) or axis.showticklabels is not False
                for axis in (right["left"], left["right"])
            )  # facing sides with a title or tick labels
            if labelled and gap < MIN_LABELLED_GAP:
                problems.append(f"{gap:.0f} px between labelled panels (< {MIN_LABELLED_GAP})")
        for p in row:
            bar = p["trace"].colorbar
            if p["trace"].showscale is False or bar.orientation == "h":
                continue
            if bar.x is None or bar.x < row_end:
                problems.append(f"a vertical colour bar at x={bar.x} inside its row")
    problems += _title_problems(fig, height)
    for note in fig.layout.annotations:  # subplot titles
        panel = min(panels, key=lambda p: abs(sum(p["x"]) / 2 - note.x))
        longest = max(len(line) for line in str(note.text).split("<br>"))
        room = (panel["x"][1] - panel["x"][0]) * plot_w + MIN_LABELLED_GAP
        if longest * CHAR > room:
            problems.append(f"title {note.text!r} ~{longest * CHAR:.0f} px over {room:.0f}")
    return problems


def _title_problems(fig, height: float) -> list[str]:
    """The figure title's bottom edge against the top of the highest subplot title (plotly puts
    an unanchored title in the middle of the top margin; 22 px a line, 16 px a subplot line)."""
    title = fig.layout.title
    if not title.text or not fig.layout.annotations:
        return []
    lines = str(title.text).count("<br>") + 1
    top_margin = fig.layout.margin.t if fig.layout.margin.t is not None else 100
    if title.yref == "container" and title.yanchor == "top":
        bottom = (1 - (title.y if title.y is not None else 1)) * height
        bottom += (title.pad.t or 0) + 22 * lines
    else:
        bottom = top_margin / 2 + 11 * lines
    sub = max(str(a.text).count("<br>") + 1 for a in fig.layout.annotations)
    highest = top_margin - 16 * sub - 4
    return (
        [f"title ends at {bottom:.0f} px, panel titles start at {highest:.0f}"]
        if bottom > highest
        else []
    )


def _figures(model: str):
    df = band_norm_frame(model=model, **MODELS[model])
    yield "fig13_qkv_per_layer", freq.qkv_panels(df, f"q, k, v<br><sup>{model}</sup>")
    for kind, key in (("q", "fig03a_query_per_layer"), ("k", "fig03b_key_per_layer")):
        yield key, freq.layer_frequency_heatmap(df, kind, f"{kind} per layer<br><sup>{model}</sup>")
    domains = {f"({chr(97 + i)}) {d}": df for i, d in enumerate(("it", "zh", "py", "math"))}
    yield "fig19_query_by_domain", freq.band_norm_panels(domains, "q", shared_scale=True)


@pytest.mark.parametrize("model", MODELS)
def test_band_norm_figures_are_readable_for_every_packaged_model(model):
    for key, fig in _figures(model):
        problems = layout_problems(fig, *_size(fig, key))
        assert not problems, f"{key} on {model}: {problems}"


def test_gemma3_fig13_wraps_into_one_row_per_kind():
    df = band_norm_frame(model="gemma3-270m", **MODELS["gemma3-270m"])
    fig = freq.qkv_panels(df)
    panels = _panels(fig)
    assert len(panels) == 6 and len({p["y"] for p in panels}) == 3  # q, k, v rows
    bars = [p["trace"] for p in panels if p["trace"].showscale is not False]
    assert len(bars) == 3  # one colour bar per row: a kind shares its scale across layer types
    for row in {p["y"] for p in panels}:
        maps = [p["trace"] for p in panels if p["y"] == row]
        assert len({m.zmax for m in maps}) == 1 and not math.isnan(maps[0].zmax)


def test_the_checker_catches_the_old_layout():
    """Six panels in one 1500-px row, a colour bar each: what Gemma 3's Fig 13 used to be."""
    df = band_norm_frame(model="gemma3-270m", **MODELS["gemma3-270m"])
    fig = freq.band_norm_panels(
        {f"panel {i}": df[df.kind == k] for i, k in enumerate("qqkkvv")}, per_row=6
    )
    fig.update_layout(width=None, height=None)
    assert layout_problems(fig, 1500, 520)
