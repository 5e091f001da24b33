"""Figures for :mod:`rope_lens.theory`: each function takes that module's DataFrames and returns a
``go.Figure``. Nothing here computes a result; saving is :func:`rope_lens.viz.style.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.viz.style import CATEGORICAL, panel, styled

_PANEL_TITLES = {
    "constant": "(a) Constant queries and keys",
    "gaussian": "(b) Gaussian queries and keys",
    "constant_gaussian": "Constant Gaussian queries and keys",
}
_DASH = {"diagonal": "solid", "previous": "dash"}


def activation_figure(frame: pd.DataFrame, title: str, x: str = "distance") -> go.Figure:
    """Figs 2, 8, 9: activation vs distance, one panel per q/k model, one line per ``curve``.

    Args:
        frame: from ``decay_frame``, ``random_rope_frame`` or ``constant_gaussian_frame``.
        title: figure title.
        x: column for the x axis (``"index"`` for Random RoPE, whose distance is irregular).
    """
    models = list(dict.fromkeys(frame["model"]))
    fig = make_subplots(
        rows=1, cols=len(models), subplot_titles=[_PANEL_TITLES.get(m, m) for m in models]
    )
    colours = {c: CATEGORICAL[i % len(CATEGORICAL)] for i, c in enumerate(frame["curve"].unique())}
    shown: set[str] = set()  # one legend entry per curve, shared by the panels
    for col, model in enumerate(models, start=1):
        for curve, part in frame[frame["model"] == model].groupby("curve", sort=False):
            fig.add_trace(
                go.Scattergl(
                    x=part[x],
                    y=part["activation"],
                    name=str(curve),
                    legendgroup=str(curve),
                    showlegend=curve not in shown,
                    # The d -> inf limit is a reference curve: draw it thick and black.
                    line=dict(width=2.5, color="black")
                    if curve == "d→∞"
                    else dict(width=1, color=colours[curve]),
                ),
                row=1,
                col=col,
            )
            shown.add(curve)
        fig.update_xaxes(title_text="Relative distance", row=1, col=col)
        fig.update_yaxes(range=[-1, 1], row=1, col=col)
    fig.update_yaxes(title_text="Activation", row=1, col=1)
    return styled(fig, title)


def gaussian_mean_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Prop 3.2: Monte Carlo mean activation with its (simultaneous) confidence interval."""
    labels = frame["distance"].astype(str)
    fig = go.Figure(
        go.Scatter(
            x=labels,
            y=frame["mean"],
            mode="markers",
            name="MC mean",
            error_y=dict(
                type="data",
                symmetric=False,
                array=frame["ci_high"] - frame["mean"],
                arrayminus=frame["mean"] - frame["ci_low"],
            ),
        )
    )
    fig.add_hline(y=0, line=dict(color="black", dash="dot", width=1))
    fig.update_xaxes(title_text="Relative distance r", type="category")
    fig.update_yaxes(title_text="E[qᵀR⁻ʳk] / d")
    return styled(fig, title)


def distance_argmax_figure(profiles: pd.DataFrame, title: str) -> go.Figure:
    """Prop 3.1: the constructed key's logit over distance (one row per target distance r)."""
    targets = sorted(profiles["target_distance"].unique())
    fig = make_subplots(rows=len(targets), cols=1, shared_xaxes=True, vertical_spacing=0.03)
    for row, target in enumerate(targets, start=1):
        part = profiles[profiles["target_distance"] == target]
        colour = CATEGORICAL[(row - 1) % len(CATEGORICAL)]
        fig.add_trace(
            go.Scattergl(
                x=part["distance"],
                y=part["logit"],
                name=f"k = Rʳq, r = {target}",
                line=dict(width=1, color=colour),
            ),
            row=row,
            col=1,
        )
        fig.add_vline(x=target, line=dict(color="black", dash="dot", width=1), **panel(row, 1))
        fig.update_yaxes(range=[-0.6, 1.1], row=row, col=1)
    fig.update_xaxes(title_text="Distance of the key behind the query", row=len(targets), col=1)
    fig.update_yaxes(title_text="Logit / |q|²", row=(len(targets) + 1) // 2, col=1)
    return styled(fig, title)


def nope_bound_figure(draws: pd.DataFrame, adversary: pd.DataFrame, title: str) -> go.Figure:
    """Prop 5.2: alpha_{3,3} on [bos, x, x] over random heads (left) and under attack (right)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["(a) Random heads: α₃,₃", "(b) Gradient ascent on α"],
    )
    for i, (encoding, part) in enumerate(draws.groupby("encoding", sort=False)):
        fig.add_trace(
            go.Histogram(
                x=part["alpha_3_3"],
                name=f"{encoding} (random)",
                # Edges at 0.0005 + 0.02k: an alpha that rounds to exactly 0.5 stays left of 0.5005.
                xbins=dict(start=0.0005, end=1.0005, size=0.02),
                opacity=0.6,
                marker_color=CATEGORICAL[i % len(CATEGORICAL)],
            ),
            row=1,
            col=1,
        )
    for i, ((encoding, target), part) in enumerate(adversary.groupby(["encoding", "target"])):
        fig.add_trace(
            go.Scatter(
                x=part["step"],
                y=part["alpha"],
                name=f"{encoding}, {target}",
                line=dict(dash=_DASH.get(str(target), "solid"), color=CATEGORICAL[(i // 2) % 7]),
            ),
            row=1,
            col=2,
        )
    fig.add_vline(x=0.5, line=dict(color="black", dash="dot"), **panel(1, 1))
    fig.add_hline(y=0.5, line=dict(color="black", dash="dot"), **panel(1, 2))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="α₃,₃", row=1, col=1)
    fig.update_yaxes(title_text="heads", row=1, col=1)
    fig.update_xaxes(title_text="optimisation step", row=1, col=2)
    fig.update_yaxes(title_text="best α (target key)", range=[0, 1.02], row=1, col=2)
    return styled(fig, title)


def sharpness_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Thm 5.3: worst-row target attention of the constructed heads vs |psi|^2."""
    fig = go.Figure()
    for i, (encoding, part) in enumerate(frame.groupby("encoding", sort=False)):
        for kind, sub in part.groupby("kind", sort=False):
            fig.add_trace(
                go.Scatter(
                    x=sub["norm_sq"],
                    y=sub["min_alpha"],
                    name=f"{encoding}, {kind}",
                    # Later encodings drawn thinner on top: coinciding curves stay visible.
                    line=dict(
                        color=CATEGORICAL[i % len(CATEGORICAL)],
                        dash=_DASH.get(str(kind)),
                        width=max(1.5, 4 - 1.25 * i),
                    ),
                )
            )
    fig.update_xaxes(title_text="|ψ|²", type="log")
    fig.update_yaxes(title_text="min over rows of α (target key)", range=[0, 1.02])
    return styled(fig, title)


def required_norm_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Thm 5.3: |psi|^2 needed for alpha >= 1 - eps, per band, for several context lengths."""
    fig = go.Figure()
    groups = frame.groupby(["band_size", "n_positions"], sort=False)
    for i, ((size, n), part) in enumerate(groups):
        label = "single chunk" if size == 1 else f"band of {size} chunks"
        fig.add_trace(
            go.Scatter(
                x=part["frequency"],
                y=part["required_norm_sq"],
                mode="lines+markers",
                name=f"{label}, n = {n}",
                line=dict(
                    color=CATEGORICAL[i % len(CATEGORICAL)], dash="solid" if size == 1 else "dash"
                ),
                marker=dict(size=4),
            )
        )
    fig.update_xaxes(title_text="frequency of the (band's fastest) chunk, rad/token", type="log")
    fig.update_yaxes(title_text="required |ψ|²", type="log")
    return styled(fig, title)


def overtaking_figure(
    frame: pd.DataFrame, title: str, contexts: Sequence[int] = (8192, 131_072)
) -> go.Figure:
    """Thm 6.1: context length at which a distractor overtakes the target, per chunk."""
    fig = go.Figure()
    groups = frame.groupby(["encoding", "theta", "distractor_phase"], sort=False)
    for i, (key, part) in enumerate(groups):
        encoding, theta, phase = cast(tuple[str, float, float], key)
        finite = part[part["overtaking_length"] < math.inf]
        never = len(part) - len(finite)
        ratio = f"{phase / math.pi:.2g}"
        label = f"{encoding} θ={theta / 1000:g}k, φ={'' if ratio == '1' else ratio}π"
        if never:
            label += f" ({never} chunks never)"
        fig.add_trace(
            go.Scatter(
                x=finite["chunk"],
                y=finite["overtaking_length"],
                mode="lines+markers",
                name=label,
                marker=dict(size=4),
                line=dict(color=CATEGORICAL[i % len(CATEGORICAL)]),
            )
        )
    for n in contexts:
        fig.add_hline(y=n, line=dict(color="grey", dash="dot", width=1))
        # Annotations on a log axis take log10 coordinates (add_hline's own label does not).
        fig.add_annotation(
            x=0, xref="paper", y=math.log10(n), text=f"{n:,} tokens", showarrow=False, yshift=9
        )
    fig.update_xaxes(title_text="chunk (0 = highest frequency)")
    fig.update_yaxes(title_text="overtaking length N* (tokens)", type="log")
    return styled(fig, title)
