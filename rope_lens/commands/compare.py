"""`rope-lens compare`: a cross-model atlas, one table and one figure per question.

Reads each model's saved tables (``rope-lens analyze`` output in ``--results/<model>``); with
``--run``, analyses whose table is missing are run first (the model is loaded once per model).
Models are put side by side on a normalised frequency axis, ``chunk / n_chunks`` (0 = the
highest frequency, 1 = the lowest), so that head sizes 64 and 256 compare.

Questions (table name: source analysis):

- ``frequency_use``: mean q / k chunk norm relative to the model's mean, per normalised chunk
  (band-norm; the paper's Fig 3 claim that the lowest frequencies carry the most norm);
- ``positional_heads``: share of diagonal / previous-token / sink / other heads (heads);
- ``massive_chunks``: share of (layer, head) with a massive q or k dim, per normalised chunk
  (massive-values);
- ``sink_heads``: sink rate and the mean BOS-favouring contribution of sink heads per
  normalised chunk (sinks);
- ``truncation``: loss change when the lowest fraction of chunks is rotation-free (ablation
  ``--sweep low``: tolerance to inference-time p-RoPE);
- ``critical``: the first critical chunk per layer type, normalised (critical).

Writes ``OUT/<question>.csv`` and ``OUT/<question>.html`` (atomically; the pages load one
``OUT/plotly.min.js`` and work offline) and prints one line per question. A table is used only
when it reads back whole and unedited and is a table of the model it is listed under
(``rope_lens.tables``); any other is left out, saying why.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "compare"
HELP = "cross-model atlas: one table and one figure per question, models side by side"

log = logging.getLogger(__name__)

SOURCES = {
    "frequency_use": "band-norm",
    "positional_heads": "heads",
    "massive_chunks": "massive-values",
    "sink_heads": "sinks",
    "truncation": "ablation",
    "critical": "critical",
}
N_BINS = 16


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        required=True,
        help="comma-separated registry names or model folders "
        "(e.g. smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b)",
    )
    p.add_argument("--results", default="results", help="where each model's tables live")
    p.add_argument("--out", default=None, help="output folder (default RESULTS/compare)")
    p.add_argument(
        "--questions",
        default=",".join(SOURCES),
        help=f"comma-separated subset of: {', '.join(SOURCES)}",
    )
    p.add_argument(
        "--run",
        action="store_true",
        help="run the analyses whose table is missing (otherwise they are skipped)",
    )
    p.add_argument("--prompts", default="wiki", help="inputs for --run (default wiki)")
    p.add_argument("--max-tokens", type=int, default=2000, help="token budget for --run")


def _bins(position):
    import numpy as np

    return np.minimum((np.asarray(position) * N_BINS).astype(int), N_BINS - 1) / N_BINS


def frequency_use(df):
    """Per model: mean q/k chunk norm over layers and heads, relative to the model's mean."""
    sub = df[df.kind.isin(["q", "k"])].copy()
    n = sub.chunk.max() + 1
    sub["position"] = _bins(sub.chunk / n)
    out = sub.groupby(["model", "kind", "position"]).mean_norm.mean().reset_index()
    out["relative_norm"] = out.mean_norm / out.groupby(["model", "kind"]).mean_norm.transform(
        "mean"
    )
    return out


def positional_heads(df):
    counts = df.groupby("model").head_class.value_counts(normalize=True)
    return counts.rename("share").reset_index()


def massive_chunks(df):
    dims = df[(df.record == "dim") & df.kind.isin(["q", "k"])].copy()
    n = dims.chunk.max() + 1
    dims["position"] = _bins(dims.chunk / n)
    per_head = dims.groupby(["model", "kind", "layer", "head", "position"]).massive.any()
    return per_head.groupby(["model", "kind", "position"]).mean().rename("share").reset_index()


def sink_heads(df):
    sub = df[df.is_sink].copy()
    if sub.empty:
        sub = df.iloc[0:0].copy()
    n = df.chunk.max() + 1
    sub["position"] = _bins(sub.chunk / n)
    out = sub.groupby(["model", "position"]).bos_minus_others.mean().reset_index()
    heads = df[df["rank"] == 1]
    out["sink_rate"] = float(heads.is_sink.mean())
    return out


def truncation(df):
    sub = df[(df.ablation == "rotation-free") & (df.sweep == "low")]
    return (
        sub.drop_duplicates(["band_lo", "band_hi"])[["model", "band_fraction", "delta_loss"]]
        .sort_values("band_fraction")
        .reset_index(drop=True)
    )


def critical(df):
    rows = []
    for (model, layer_type), sub in df.groupby(["model", "layer_type"], sort=False):
        crit = sub[sub.critical]
        n = len(sub)
        first = int(crit.chunk.min()) if len(crit) else n
        rows.append(
            {
                "model": model,
                "layer_type": layer_type,
                "context": int(sub.context.iloc[0]),
                "theta": float(sub.theta.iloc[0]),
                "first_critical_chunk": first,
                "position": first / n,
                "critical_share": len(crit) / n,
            }
        )
    import pandas as pd

    return pd.DataFrame(rows)


BUILDERS = {
    "frequency_use": frequency_use,
    "positional_heads": positional_heads,
    "massive_chunks": massive_chunks,
    "sink_heads": sink_heads,
    "truncation": truncation,
    "critical": critical,
}


def _figure(question, table):
    import plotly.graph_objects as go

    from rope_lens.viz.beyond import atlas_figure
    from rope_lens.viz.style import styled

    if question == "frequency_use":
        return atlas_figure(
            table[table.kind == "q"], "relative_norm", "Query norm by normalised frequency"
        )
    if question == "massive_chunks":
        return atlas_figure(table[table.kind == "q"], "share", "Heads with a massive q dim")
    if question == "sink_heads":
        return atlas_figure(table, "bos_minus_others", "Sink heads: BOS-favouring contribution")
    if question == "critical":
        fig = go.Figure(go.Bar(x=table.model + " " + table.layer_type, y=table.critical_share))
        return styled(fig, "Share of chunks that never complete a turn in the trained context")
    if question == "truncation":
        fig = go.Figure()
        for model, sub in table.groupby("model", sort=False):
            fig.add_trace(go.Scatter(x=sub.band_fraction, y=sub.delta_loss, name=model))
        fig.update_xaxes(title="fraction of lowest chunks rotation-free")
        fig.update_yaxes(title="loss change (nats/token)")
        return styled(fig, "Tolerance to inference-time truncation of the lowest frequencies")
    fig = go.Figure()
    for cls, sub in table.groupby("head_class"):
        fig.add_trace(go.Bar(x=sub.model, y=sub.share, name=cls))
    fig.update_layout(barmode="stack")
    return styled(fig, "Head classes per model")


def _table_path(results: Path, model: str, analysis: str) -> Path:
    from rope_lens.request import default_results_dir

    return default_results_dir(model, results) / f"{analysis.replace('-', '_')}.parquet"


def _load(path: Path, model: str):
    """(table, None) when ``path`` holds a whole, unedited table of ``model``; (None, why)
    otherwise. The model is checked by its identity (folder, revision, weights) where it is
    on this machine, else by the name its sidecar records."""
    from rope_lens.tables import expected_model, read_table

    claimed = expected_model(model)
    df, meta, why = read_table(path, claimed)
    if df is not None and claimed is None and meta.get("model") != model:
        df, why = None, f"it is a table of {meta.get('model')!r}"
    if df is not None and claimed is None:
        log.warning("%s is not on this machine: its tables are checked by name only", model)
    return df, why


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from rope_lens import atomic
    from rope_lens.errors import InputError
    from rope_lens.request import check_model_name
    from rope_lens.viz.style import save_figure, shared_plotlyjs

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(models) < 1:
        raise InputError("--models needs at least one model")
    questions = [q.strip() for q in args.questions.split(",") if q.strip()]
    bad = [q for q in questions if q not in SOURCES]
    if bad:
        raise InputError(f"unknown question {bad[0]!r}; choose from {', '.join(SOURCES)}")
    for m in models:
        check_model_name(m)
    results = Path(args.results)
    out = Path(args.out) if args.out else results / "compare"
    if args.run:
        _run_missing(models, questions, results, args)
    written = 0
    for q in questions:
        analysis = SOURCES[q]
        frames, missing = [], []
        for m in models:
            path = _table_path(results, m, analysis)
            if not path.exists():
                missing.append(m)
                continue
            df, why = _load(path, m)
            if df is None:
                print(
                    f"{q}: left out {m}'s {analysis} table ({path}): {why}; rerun "
                    f"`rope-lens analyze --model {m} --analysis {analysis} --force`"
                )
                continue
            df["model"] = m
            frames.append(BUILDERS[q](df))
        if missing:
            print(
                f"{q}: no {analysis} table for {', '.join(missing)} "
                f"(rope-lens analyze --analysis {analysis}, or rerun with --run)"
            )
        if not frames:
            continue
        table = pd.concat(frames, ignore_index=True)
        # Atomic, and offline: the pages share one plotly.js beside them (as `figures` does).
        atomic.write_file(out / f"{q}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
        save_figure(_figure(q, table), out / q, ["html"], plotlyjs=shared_plotlyjs(out))
        written += 1
        print(f"{q}: {len(table)} rows over {len(frames)} model(s) -> {out / (q + '.csv')}")
    if not written:
        raise InputError(
            "no table to compare: none of the models has a usable table for these questions "
            "(see above; --run makes the missing ones)"
        )
    return 0


def _run_missing(models, questions, results: Path, args) -> None:
    from rope_lens.models import load_model
    from rope_lens.pipeline import run_request
    from rope_lens.request import AnalysisRequest

    for m in models:
        need = [SOURCES[q] for q in questions if not _table_path(results, m, SOURCES[q]).exists()]
        if not need:
            continue
        lm = load_model(m, device="cpu")
        for analysis in dict.fromkeys(need):
            extra = {"sweep": "low", "sweep_points": 4} if analysis == "ablation" else {}
            req = AnalysisRequest.build(
                model=m,
                analysis=analysis,
                prompts=args.prompts,
                max_tokens=args.max_tokens,
                out=str(_table_path(results, m, analysis).parent),
                progress=False,
                **extra,
            )
            run_request(req, lm)
