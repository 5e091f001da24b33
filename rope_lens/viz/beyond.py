"""Figures for the beyond-the-paper analyses: critical chunks, massive values, attention sinks,
passkey retrieval and loss by position, and the cross-model atlas.

Every function takes the tidy table its analysis writes (``rope_lens.analyses.critical``,
``massive_values``, ``sinks``, ``passkey``) and returns a ``go.Figure``; nothing is computed
here beyond reshaping, counting and means. Frequencies are shown as the *normalised* axis
``chunk / n_chunks`` (0 = highest frequency, 1 = lowest) where models with different head
sizes are compared, and as chunk indices otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_lens.viz.style import panel, styled


def critical_figure(df: pd.DataFrame) -> go.Figure:
    """Turns each chunk makes over the trained context (log scale), per layer type; chunks
    under the 1-turn line are critical (they never complete a cycle)."""
    fig = go.Figure()
    for layer_type, sub in df.groupby("layer_type", sort=False):
        r = sub.iloc[0]
        turns = sub.turns_over_context.where(sub.rotating)
        fig.add_trace(
            go.Scatter(
                x=sub.chunk,
                y=turns,
                mode="lines+markers",
                name=f"{layer_type} (theta {r.theta:g}, context {int(r.context):,})",
                customdata=np.stack([sub.frequency, sub.wavelength, sub.critical], -1),
                hovertemplate="chunk %{x}<br>%{y:.3g} turns<br>frequency %{customdata[0]:.3g}"
                "<br>wavelength %{customdata[1]:.4g}<br>critical %{customdata[2]}<extra></extra>",
            )
        )
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="one full turn")
    fig.add_hline(y=0.5, line_dash="dot", annotation_text="half a turn")
    fig.update_yaxes(type="log", title="turns over the trained context")
    fig.update_xaxes(title="chunk (0 = highest frequency)")
    return styled(fig, f"Critical chunks: wavelength > context ({df.model.iloc[0]})")


def massive_figure(df: pd.DataFrame, criterion: str = "massive") -> go.Figure:
    """Per kind (q / k / v): how many (layer, head) have a massive dim in each chunk, and the
    mean ratio of a dim's L2 norm to its head's mean, per chunk."""
    dims = df[df.record == "dim"]
    kinds = [k for k in ("q", "k", "v") if (dims.kind == k).any()]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=("massive dims per chunk", "max ratio to the head mean"),
    )
    for kind in kinds:
        sub = dims[dims.kind == kind]
        counts = (
            sub[sub[criterion]]
            .groupby("chunk")
            .size()
            .reindex(sorted(sub.chunk.unique()), fill_value=0)
        )
        fig.add_trace(
            go.Bar(x=counts.index, y=counts.values, name=f"{kind}: massive dims"), row=1, col=1
        )
        peak = sub.groupby("chunk").ratio_to_mean.max()
        fig.add_trace(
            go.Scatter(x=peak.index, y=peak.values, mode="lines", name=f"{kind}: max ratio"),
            row=2,
            col=1,
        )
    lam = float(df["lambda"].iloc[0])
    fig.add_hline(y=lam, line_dash="dash", annotation_text=f"lambda = {lam:g}", **panel(2, 1))
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_xaxes(title="chunk (0 = highest frequency)", row=2, col=1)
    return styled(fig, f"Massive q/k values by frequency chunk ({df.model.iloc[0]})")


def disruption_figure(df: pd.DataFrame) -> go.Figure:
    """Loss change and passkey accuracy: massive dims vs an equal random control."""
    dis = df[df.record == "disruption"]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("loss change (nats/token)", "passkey accuracy")
    )
    fig.add_trace(go.Bar(x=dis.condition, y=dis.delta_loss, showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=dis.condition, y=dis.probe_accuracy, showlegend=False), row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    return styled(fig, f"Mean-replacing massive vs random q/k dims ({df.model.iloc[0]})")


def sinks_figure(df: pd.DataFrame) -> go.Figure:
    """Left: sink mass per (layer, head) with the threshold. Right: for sink and other heads,
    the mean BOS-favouring contribution per chunk."""
    heads = df[df["rank"] == 1]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("first-token attention per head", "BOS minus others, per chunk"),
    )
    grid = heads.pivot_table(index="layer", columns="head", values="sink_mass")
    fig.add_trace(
        go.Heatmap(
            z=grid.values,
            x=[str(c) for c in grid.columns],
            y=grid.index,
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=dict(x=0.45),
        ),
        row=1,
        col=1,
    )
    for label, sub in (("sink heads", df[df.is_sink]), ("other heads", df[~df.is_sink])):
        if sub.empty:
            continue
        mean = sub.groupby("chunk").bos_minus_others.mean()
        fig.add_trace(
            go.Scatter(x=mean.index, y=mean.values, mode="lines", name=label), row=1, col=2
        )
    fig.update_yaxes(title="layer", row=1, col=1)
    fig.update_xaxes(title="head", row=1, col=1)
    fig.update_xaxes(title="chunk (0 = highest frequency)", row=1, col=2)
    eps = float(df.epsilon.iloc[0])
    return styled(
        fig, f"Attention sinks (epsilon {eps:g}) and the chunks behind them ({df.model.iloc[0]})"
    )


def coinciding(df: pd.DataFrame, x: str, y: str) -> list[tuple[list[str], pd.DataFrame]]:
    """Rows per ``variant``, variants with the same (x, y) points merged: ``(names, rows)``
    in first-seen order."""
    groups: dict[tuple, tuple[list[str], pd.DataFrame]] = {}
    for variant, sub in df.groupby("variant", sort=False):
        sub = sub.sort_values(x)
        key = tuple(zip(sub[x].round(9), sub[y].round(9)))
        if key in groups:
            groups[key][0].append(str(variant))
        else:
            groups[key] = ([str(variant)], sub)
    return list(groups.values())


def passkey_figure(df: pd.DataFrame) -> go.Figure:
    """Passkey accuracy per length and variant; loss by position per variant (if measured)."""
    pk = df[df.probe == "passkey"]
    loss = df[df.probe == "loss"]
    cols = 2 if len(loss) else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        subplot_titles=(
            ("passkey accuracy", "loss by position") if cols == 2 else ("passkey accuracy",)
        ),
    )
    # Variants whose curves are identical (below the trained context every scaling rule is at
    # factor 1: the model as trained) are one trace named for all of them, not six lines drawn
    # on top of each other that look like one.
    for names, sub in coinciding(pk, "length", "accuracy"):
        n = sub["n_prompts"] if "n_prompts" in sub else pd.Series([np.nan] * len(sub))
        solved = [
            f"{a * k:.0f}/{k:.0f} prompts" if k == k else f"{a:.0%}"
            for a, k in zip(sub.accuracy, n)
        ]
        fig.add_trace(
            go.Scatter(
                x=sub.length,
                y=sub.accuracy,
                mode="lines+markers",
                name=" = ".join(names),
                legendgroup=names[0],
                customdata=solved,
                hovertemplate="%{x} tokens: %{customdata}<extra>%{fullData.name}</extra>",
            ),
            row=1,
            col=1,
        )
    for names, sub in coinciding(loss, "position_lo", "loss"):
        mid = (sub.position_lo + sub.position_hi) / 2
        fig.add_trace(
            go.Scatter(
                x=mid,
                y=sub.loss,
                mode="lines",
                name=" = ".join(names),
                legendgroup=names[0],
                showlegend=False,
            ),
            row=1,
            col=cols,
        )
    ctx = int(df.context.iloc[0])
    for col in range(1, cols + 1):
        fig.add_vline(
            x=ctx, line_dash="dash", annotation_text="trained context",
            annotation_position="top left", **panel(1, col),
        )  # fmt: skip
    fig.update_xaxes(title="tokens", type="log", row=1, col=1)
    n = sorted({int(k) for k in pk["n_prompts"]}) if "n_prompts" in pk else []
    per_length = f" (n = {', '.join(map(str, n))} per length)" if n else ""
    fig.update_yaxes(range=[0, 1.05], title=f"share solved{per_length}", row=1, col=1)
    # One merged trace still names its variants; below the plot, long names cannot squeeze it.
    fig.update_layout(
        showlegend=True, legend=dict(orientation="h", x=0, y=-0.28, yanchor="top"),
        margin=dict(b=130),
    )  # fmt: skip
    if cols == 2:
        fig.update_xaxes(title="position", row=1, col=2)
        fig.update_yaxes(title="nats/token", row=1, col=2)
    return styled(fig, f"Passkey retrieval and RoPE variants ({df.model.iloc[0]})")


def atlas_figure(table: pd.DataFrame, value: str, title: str) -> go.Figure:
    """Models side by side on the normalised frequency axis: ``table`` has ``model``,
    ``position`` (chunk / n_chunks) and ``value``."""
    fig = go.Figure()
    for model, sub in table.groupby("model", sort=False):
        sub = sub.sort_values("position")
        fig.add_trace(go.Scatter(x=sub.position, y=sub[value], mode="lines+markers", name=model))
    fig.update_xaxes(title="chunk / n_chunks (0 = highest frequency, 1 = lowest)", range=[0, 1])
    fig.update_yaxes(title=value.replace("_", " "))
    return styled(fig, title)


# ---------------------------------------------------------------------------------------------
# Report sections (hook: ``sections += beyond.sections_for_folder(folder)``)
# ---------------------------------------------------------------------------------------------

# table file stem -> (title, analysis module, what it is, the reference finding, figure functions)
BEYOND = {
    "critical": (
        "Critical frequencies",
        "rope_lens.analyses.critical",
        "Chunks whose wavelength exceeds the trained context (the sliding window for sliding "
        "layers): they never complete a turn over any distance the model was trained on.",
        "The paper's Theorem 6.1: a semantic channel is robust only while it barely rotates; "
        "Jonasson (2025) finds rotary offset features and outliers in these chunks.",
        (critical_figure,),
    ),
    "massive_values": (
        "Massive values",
        "rope_lens.analyses.massive_values",
        "Query/key dims whose L2 norm over tokens exceeds 5x their head's mean (Jin et al.), the "
        "chunks they sit in, and what mean-replacing them costs against as many random dims.",
        "Jin et al. (ICML 2025) find massive values in q and k, not v, concentrated in "
        "low-frequency dims, and essential for contextual knowledge.",
        (massive_figure, disruption_figure),
    ),
    "sinks": (
        "Attention sinks",
        "rope_lens.analyses.sinks",
        "Mean first-token attention per head against epsilon = 0.3 (Gu et al.), joined to the "
        "chunks that most favour the BOS key in the logit decomposition.",
        "Gu et al. (ICLR 2025) find sinks in most heads of trained LMs; the paper traces one "
        "BOS preference to a low-frequency chunk (App. E.1).",
        (sinks_figure,),
    ),
    "passkey": (
        "Passkey retrieval and RoPE variants",
        "rope_lens.analyses.passkey",
        "Passkey retrieval accuracy per prompt length as trained, with inference-time p-RoPE and "
        "with RoPE scaling rules, and loss by position.",
        "The paper argues that p-RoPE's rotation-free channels are robust over long contexts "
        "(§6); scaling rules such as YaRN and llama3 stretch the low frequencies.",
        (passkey_figure,),
    ),
}


def sections_for_folder(folder, tables=None) -> list:
    """Report sections for whichever of this module's tables are in ``folder``, or in
    ``tables`` (kind -> DataFrame, as ``rope_lens.tables.read_folder`` checked them)."""
    import importlib
    import logging

    from rope_lens.viz.report import Section

    if tables is None:
        from rope_lens.tables import read_folder

        tables = read_folder(folder, kinds=BEYOND).tables
    out = []
    for stem, (title, module, what, paper, figs) in BEYOND.items():
        df = tables.get(stem)
        if df is None:
            continue
        summary = importlib.import_module(module).summarize(df)
        figures = []
        for fn in figs:
            try:
                figures.append(fn(df))
            except (LookupError, ValueError, KeyError) as err:
                logging.getLogger(__name__).info("report: no %s figure (%s)", stem, err)
        out.append(Section(title, [what, paper], figures, summary))
    return out
