"""Figures for p-RoPE training runs: loss curves, validation perplexity, and the Table 2 grid.

Inputs are the files :mod:`rope_lens.train` writes: ``metrics.csv`` / ``eval.csv`` per run
(columns ``step, loss, ...`` and ``step, split, length_multiple, seq_len, loss, ppl``) and the
grid summary ``table.csv`` (``dataset, encoding, ppl_<split>@<k>x_mean``/``_std``, ``n``,
``paper``). Callers add ``dataset``/``encoding``/``seed`` columns when they stack runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.train.encodings import TABLE2_LABELS as ENCODING_LABELS  # Table 2's order, labels
from rope_lens.viz.style import CATEGORICAL, styled


def _label(encoding: str) -> str:
    return ENCODING_LABELS.get(encoding, encoding)


def _colour(encoding: str, order: Sequence[str]) -> str:
    return CATEGORICAL[list(order).index(encoding) % len(CATEGORICAL)]


def _order(encodings) -> list[str]:
    known = [e for e in ENCODING_LABELS if e in set(encodings)]
    return known + sorted(set(encodings) - set(known))


def loss_curves(
    metrics: pd.DataFrame, y: str = "loss", title: str | None = None, log_x: bool = False
) -> go.Figure:
    """Training curves: ``y`` against step, one line per run, one panel per dataset.

    Args:
        metrics: stacked ``metrics.csv`` rows with ``dataset``, ``encoding``, ``seed`` added.
        y: column to plot (``loss``, ``lr``, ``grad_norm``, ``tokens_per_s``).
        title: figure title.
        log_x: log-scale steps.
    """
    datasets = list(dict.fromkeys(metrics["dataset"]))
    order = _order(metrics["encoding"].unique())
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, shared_yaxes=True)
    shown: set[str] = set()
    for col, ds in enumerate(datasets, start=1):
        sub = metrics[metrics["dataset"] == ds]
        for (enc, seed), run in sub.groupby(["encoding", "seed"], sort=False):
            fig.add_trace(
                go.Scatter(
                    x=run["step"],
                    y=run[y],
                    name=_label(enc),
                    legendgroup=enc,
                    showlegend=enc not in shown,
                    mode="lines",
                    line=dict(color=_colour(enc, order), width=1.5),
                    hovertemplate=f"{_label(enc)} (seed {seed}, {ds})<br>step %{{x}}"
                    f"<br>{y} %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            shown.add(enc)
        fig.update_xaxes(title_text="step", type="log" if log_x else None, row=1, col=col)
    fig.update_yaxes(title_text=y, row=1, col=1)
    return styled(fig, title or f"Training {y}")


def eval_curves(
    evals: pd.DataFrame, length_multiple: int = 1, title: str | None = None
) -> go.Figure:
    """Validation perplexity against step at one evaluation length (stacked ``eval.csv``)."""
    sub = evals[(evals["split"] == "valid") & (evals["length_multiple"] == length_multiple)]
    fig = loss_curves(sub, y="ppl", title=title)
    fig.update_yaxes(title_text=f"validation perplexity ({length_multiple}x training length)")
    return fig


def ptable_figure(
    table: pd.DataFrame, metric: str = "valid@1x", title: str | None = None
) -> go.Figure:
    """Table 2 as dots: our mean ± std per encoding (left) beside the paper's number (right).

    The two panels have separate scales on purpose: our models are far smaller, so only the
    ordering of encodings is comparable, not the values.
    """
    datasets = list(dict.fromkeys(table["dataset"]))
    fig = make_subplots(
        rows=len(datasets),
        cols=2,
        subplot_titles=[f"{t} ({ds})" for ds in datasets for t in ("ours", "paper, Gemma 2B")],
        shared_yaxes=True,
        vertical_spacing=0.15,
    )
    mean, std = f"ppl_{metric}_mean", f"ppl_{metric}_std"
    for row, ds in enumerate(datasets, start=1):
        sub = table[table["dataset"] == ds].set_index("encoding")
        order = _order(sub.index)
        labels = [_label(e) for e in order]
        err = sub[std].reindex(order).fillna(0) if std in sub else None
        fig.add_trace(
            go.Scatter(
                x=sub[mean].reindex(order),
                y=labels,
                mode="markers",
                marker=dict(size=10, color=CATEGORICAL[0]),
                error_x=dict(type="data", array=err) if err is not None else None,
                name="ours",
                showlegend=row == 1,
                customdata=sub["n"].reindex(order) if "n" in sub else None,
                hovertemplate="%{y}<br>perplexity %{x:.4f}<br>seeds %{customdata}<extra>ours</extra>",
            ),
            row=row,
            col=1,
        )
        if "paper" in sub:
            fig.add_trace(
                go.Scatter(
                    x=sub["paper"].reindex(order),
                    y=labels,
                    mode="markers",
                    marker=dict(size=10, symbol="diamond", color=CATEGORICAL[1]),
                    name="paper",
                    showlegend=row == 1,
                    hovertemplate="%{y}<br>perplexity %{x:.4f}<extra>paper</extra>",
                ),
                row=row,
                col=2,
            )
        fig.update_yaxes(autorange="reversed", row=row, col=1)
        for col in (1, 2):
            fig.update_xaxes(title_text=f"validation perplexity ({metric})", row=row, col=col)
    return styled(fig, title or "p-RoPE table (Table 2): validation perplexity")


def ptable_html_table(table: pd.DataFrame, metric: str = "valid@1x") -> go.Figure:
    """Table 2 as a plotly table (ours mean ± std and the paper's value per dataset)."""
    mean, std = f"ppl_{metric}_mean", f"ppl_{metric}_std"
    rows = []
    for enc in _order(table["encoding"].unique()):
        for _, r in table[table["encoding"] == enc].iterrows():
            ours = f"{r[mean]:.3f}" + (f" ± {r[std]:.3f}" if pd.notna(r.get(std)) else "")
            rows.append([_label(enc), r["dataset"], ours, r.get("n", ""), r.get("paper", "")])
    cols = list(zip(*rows)) if rows else [[]] * 5
    fig = go.Figure(
        go.Table(
            header=dict(values=["Encoding", "Dataset", "Ours", "Seeds", "Paper"], align="left"),
            cells=dict(values=cols, align="left"),
        )
    )
    return styled(fig, f"Table 2: validation perplexity ({metric})")


def length_generalisation(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mean validation perplexity at each evaluated multiple of the training length."""
    cols = sorted(
        (c for c in table.columns if c.startswith("ppl_valid@") and c.endswith("_mean")),
        key=lambda c: int(c.split("@")[1].split("x")[0]),
    )
    multiples = [int(c.split("@")[1].split("x")[0]) for c in cols]
    fig = go.Figure()
    order = _order(table["encoding"].unique())
    for _, r in table.iterrows():
        fig.add_trace(
            go.Scatter(
                x=multiples,
                y=[r[c] for c in cols],
                mode="lines+markers",
                name=f"{_label(r['encoding'])} ({r['dataset']})",
                line=dict(color=_colour(r["encoding"], order)),
            )
        )
    fig.update_xaxes(
        title_text="evaluation length (× training length)", type="log", tickvals=multiples
    )
    fig.update_yaxes(title_text="validation perplexity")
    return styled(fig, title or "Length generalisation")
