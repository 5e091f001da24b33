"""Per-token figures on one prompt: chunk norms (Figs 6, 14-18 a/b), the Cauchy-Schwarz table
(Tables 3-5), attention logits and patterns (Figs 5, 12) and the logit decomposition (App. E.1).

Inputs: the per-token table of :mod:`rope_lens.analyses.per_token` (``layer, head, pos, token,
kind, chunk, frequency, norm`` plus the token-level ``upper_bound, diag_logit, prev_logit``) and
the decomposition table of :mod:`rope_lens.analyses.decompose` (``query_pos, key_pos,
query_token, key_token, chunk, contribution, logit, model_score``).

Token text is user input: every label goes through :func:`token_label`, which HTML-escapes it
(plotly renders a small HTML subset in labels; escaped text shows verbatim).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rope_lens.viz.chunks import chunk_heatmap
from rope_lens.viz.style import CATEGORICAL, DIVERGING, SEQUENTIAL, styled


def token_label(token: str, pos: int | None = None) -> str:
    """Escaped, single-line token text for axis ticks and hover (``"3: I'm"``)."""
    text = html.escape(str(token).replace("\n", "↵").replace("\t", "⇥"), quote=False)
    return text if pos is None else f"{pos}: {text}"


def _one_head(df: pd.DataFrame, layer: int, head: int) -> pd.DataFrame:
    sub = df[(df["layer"] == layer) & (df["head"] == head)]
    if sub.empty:
        raise ValueError(f"no rows for layer {layer} head {head}")
    return sub


def token_norm_heatmap(
    df: pd.DataFrame, layer: int, head: int, kind: str = "q", title: str | None = None
) -> go.Figure:
    """Chunk norms per token of one head (rows = chunks, highest frequency on top)."""
    sub = _one_head(df, layer, head)
    sub = sub[sub["kind"] == kind]
    z = sub.pivot(index="chunk", columns="pos", values="norm").sort_index()
    freq = sub.pivot(index="chunk", columns="pos", values="frequency").reindex_like(z)
    wave = np.where(freq > 0, 2 * np.pi / freq.where(freq > 0, 1.0), np.inf)
    tokens = sub.drop_duplicates("pos").set_index("pos")["token"].reindex(z.columns)
    kv = int(sub["kv_head"].iloc[0])
    who = f"query head {head}" if kind == "q" else f"KV head {kv} (read by query head {head})"
    hover = [f"layer {layer} · {who}<br>token {token_label(t, p)}" for p, t in tokens.items()]
    name = {"q": "Query", "k": "Key"}[kind]
    fig = chunk_heatmap(
        z.to_numpy(), list(z.columns), freq.to_numpy(), wave, hover, "Norm",
        "token", title or f"{name} frequency usage for layer {layer} head {head}",
    )  # fmt: skip
    fig.update_xaxes(
        tickmode="array",
        tickvals=list(z.columns),
        ticktext=[token_label(t, p) for p, t in tokens.items()],
        tickangle=-60,
    )
    return fig


def cs_table_figure(
    df: pd.DataFrame, layer: int, head: int, n_tokens: int = 8, title: str | None = None
) -> go.Figure:
    """Tables 3-5: upper bound, diagonal and previous-token logits for the first tokens."""
    sub = _one_head(df, layer, head).drop_duplicates("pos").sort_values("pos").head(n_tokens)
    header = ["", *[token_label(t, p) for p, t in zip(sub["pos"], sub["token"])]]
    rows = [
        ("Upper bound ‖q_i‖‖k_i‖/√d", sub["upper_bound"]),
        ("Diagonal q_i·k_i/√d", sub["diag_logit"]),
        ("Previous-token q_i·R k_{i−1}/√d", sub["prev_logit"]),
    ]
    if "prev_bound" in sub:
        rows.append(("(bound ‖q_i‖‖k_{i−1}‖/√d)", sub["prev_bound"]))
    cells = [[name for name, _ in rows]]
    for j in range(len(sub)):
        cells.append(["N/A" if pd.isna(v.iloc[j]) else f"{v.iloc[j]:.2f}" for _, v in rows])
    fig = go.Figure(
        go.Table(
            columnwidth=[2.4] + [1] * len(sub),
            header=dict(values=header, align="left"),
            cells=dict(values=cells, height=30),
        )
    )
    return styled(
        fig, title or f"Logits against the Cauchy–Schwarz bound, layer {layer} head {head}"
    )


def cs_lines(df: pd.DataFrame, layer: int, head: int, title: str | None = None) -> go.Figure:
    """The same three rows as lines over every token of the prompt."""
    sub = _one_head(df, layer, head).drop_duplicates("pos").sort_values("pos")
    labels = [token_label(t, p) for p, t in zip(sub["pos"], sub["token"])]
    fig = go.Figure()
    for col, name, colour in (
        ("upper_bound", "upper bound ‖q_i‖‖k_i‖/√d", "black"),
        ("diag_logit", "diagonal logit", CATEGORICAL[1]),
        ("prev_logit", "previous-token logit", CATEGORICAL[0]),
    ):
        fig.add_trace(
            go.Scatter(
                x=sub["pos"], y=sub[col], name=name, mode="lines+markers", customdata=labels,
                line=dict(color=colour),
                hovertemplate="token %{customdata}<br>" + name + " %{y:.2f}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_xaxes(title_text="token position", tickmode="array", tickvals=list(sub["pos"]),
                     ticktext=labels, tickangle=-60)  # fmt: skip
    fig.update_yaxes(title_text="logit (1/√d scaling)")
    return styled(fig, title or f"Cauchy–Schwarz check, layer {layer} head {head}")


def _pair_matrix(sub: pd.DataFrame, value: str) -> tuple[np.ndarray, list[str], list[str]]:
    pairs = sub.drop_duplicates(["query_pos", "key_pos"])
    z = pairs.pivot(index="query_pos", columns="key_pos", values=value).sort_index()
    z = z.reindex(columns=sorted(set(z.columns) | set(z.index)))
    qtok = pairs.drop_duplicates("query_pos").set_index("query_pos")["query_token"]
    ktok = pairs.drop_duplicates("key_pos").set_index("key_pos")["key_token"]
    qlab = [token_label(qtok.get(p, ""), p) for p in z.index]
    klab = [token_label(ktok.get(p, qtok.get(p, "")), p) for p in z.columns]
    return z.to_numpy(), qlab, klab


def pair_heatmap(
    df: pd.DataFrame, layer: int, head: int, value: str = "model_score", title: str | None = None
) -> go.Figure:
    """Query x key matrix of one head: raw logits (Fig 12) or, with ``value="attention"`` when
    the table has it, attention probabilities (Fig 5). Masked (future) cells stay blank."""
    sub = _one_head(df, layer, head)
    z, qlab, klab = _pair_matrix(sub, value)
    prob = value == "attention"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=klab,
            y=qlab,
            colorscale=SEQUENTIAL if prob else DIVERGING,
            zmin=0 if prob else None,
            zmax=1 if prob else None,
            zmid=None if prob else 0,
            colorbar=dict(title="attention" if prob else "logit"),
            hovertemplate=f"layer {layer} · head {head}<br>query %{{y}}<br>key %{{x}}"
            f"<br>{value} %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="key token", tickangle=-60, type="category")
    fig.update_yaxes(title_text="query token", autorange="reversed", type="category")
    name = "Attention pattern" if prob else "Attention logits"
    return styled(fig, title or f"{name} (layer {layer} head {head})")


def contribution_bars(
    df: pd.DataFrame, layer: int, head: int, query_pos: int, key_pos: list[int],
    title: str | None = None,
) -> go.Figure:  # fmt: skip
    """Per-chunk contributions to the logits of one query against a few keys (App. E.1)."""
    sub = _one_head(df, layer, head)
    sub = sub[sub["query_pos"] == query_pos]
    fig = go.Figure()
    for i, key in enumerate(key_pos):
        part = sub[sub["key_pos"] == key].sort_values("chunk")
        if part.empty:
            continue
        ktok = token_label(part["key_token"].iloc[0], key)
        fig.add_trace(
            go.Bar(
                x=part["chunk"], y=part["contribution"], name=f"key {ktok}",
                marker_color=CATEGORICAL[i % len(CATEGORICAL)],
                hovertemplate=f"key {ktok}<br>chunk %{{x}}<br>contribution %{{y:.3f}}"
                f"<br>(logit {part['logit'].iloc[0]:.2f})<extra></extra>",
            )
        )  # fmt: skip
    qtok = token_label(sub["query_token"].iloc[0], query_pos) if len(sub) else str(query_pos)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="chunk (0 = highest frequency)")
    fig.update_yaxes(title_text="contribution to the logit")
    return styled(fig, title or f"Logit by frequency, layer {layer} head {head}, query {qtok}")
