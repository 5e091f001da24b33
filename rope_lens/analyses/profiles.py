"""Per-head frequency profiles joined with head classes (the paper's Figs 4, 6, 11 as a table).

One forward pass feeds two reducers: ``band_norms.BandNormReducer`` (mean chunk norms of q and
k per head) and ``heads.HeadScoreReducer`` (head scores and classes). Each query head gets its
own q spectrum and the spectrum of the KV head it reads (shared by its GQA group), plus where
the norm sits:

- ``*_mean_log10_freq``: norm-weighted mean of log10(frequency in rad/token) over rotating
  chunks; 0 is the highest frequency (1 rad/token), about -log10(theta) the lowest.
- ``*_high_share`` / ``*_low_share``: share of the summed chunk norm in the highest / lowest
  quarter of the rotating chunks (0.25 each for a flat spectrum).
- ``*_peak_chunk``: chunk with the largest mean norm (0 = highest frequency).

Chunk norms (not squared norms) are the weights because the paper's argument is Cauchy-Schwarz:
|<q^(k), k^(k)>| <= ||q^(k)|| ||k^(k)||, so a chunk's norm bounds its reach into the logit.
With this, "positional heads use the highest frequencies; most heads load the lowest" is a
comparison of ``high_share`` / ``low_share`` across ``head_class`` (see ``summarize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rope_lens.analyses import heads
from rope_lens.analyses.band_norms import BandNormReducer
from rope_lens.extract import SiteTap, reducer_hooks, run_batches
from rope_lens.models.load import LoadedModel
from rope_lens.resume import resumable

STATS = ("mean_log10_freq", "high_share", "low_share", "peak_chunk")


def spectrum_stats(norms: np.ndarray, freq: np.ndarray) -> dict[str, float]:
    """Where a spectrum's norm sits, over rotating chunks (``freq > 0``; chunk 0 highest)."""
    rot = freq > 0
    n_rot = int(rot.sum())
    if n_rot == 0:  # NoPE: no frequency to speak of (NaN, not a misleading 0)
        return {
            "mean_log10_freq": np.nan,
            "high_share": np.nan,
            "low_share": np.nan,
            "peak_chunk": -1,
        }
    x, f = norms[rot], freq[rot]
    total = float(x.sum()) or 1.0
    quarter = max(1, n_rot // 4)
    return {
        "mean_log10_freq": float((x * np.log10(f)).sum() / total),
        "high_share": float(x[:quarter].sum() / total),
        "low_share": float(x[-quarter:].sum() / total),
        "peak_chunk": int(np.flatnonzero(rot)[np.argmax(x)]),  # a rotating chunk's index
    }


def join(bands: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Long per-chunk frame, one q and one k spectrum per *query* head, with per-head stats
    (prefixed ``q_`` / ``k_``) and head scores and class as repeated columns."""
    q = bands[bands.kind == "q"]
    k = bands[bands.kind == "k"].drop(columns=["kv_head"]).rename(columns={"head": "kv_head"})
    # Each query head reads its group's KV head: broadcast that spectrum to the query heads.
    k = q[["layer", "head", "kv_head", "chunk"]].merge(
        k, on=["layer", "kv_head", "chunk"], how="left"
    )
    spectra = pd.concat([q, k[q.columns]], ignore_index=True)
    stats = []
    for (layer, head, kind), sub in spectra.groupby(["layer", "head", "kind"]):
        sub = sub.sort_values("chunk")
        s = spectrum_stats(sub.mean_norm.to_numpy(), sub.frequency.to_numpy())
        stats.append({"layer": layer, "head": head, **{f"{kind}_{k}": v for k, v in s.items()}})
    per_head = pd.DataFrame(stats).groupby(["layer", "head"], as_index=False).first()
    # q and k stats come from separate rows (NaN elsewhere), which made the peaks floats.
    per_head = per_head.astype({"q_peak_chunk": int, "k_peak_chunk": int})
    score_cols = ["layer", "head", *heads.present_scores(scores), "head_class", "n_queries"]
    out = spectra.merge(per_head, on=["layer", "head"]).merge(
        scores[score_cols], on=["layer", "head"]
    )
    return out.sort_values(["layer", "head", "kind", "chunk"], ignore_index=True)


def per_head(df: pd.DataFrame) -> pd.DataFrame:
    """Collapse the long frame to one row per (layer, head): scores, class and stats."""
    cols = ["model", "layer", "layer_type", "head", "kv_head", *heads.present_scores(df)]
    cols += ["head_class"]
    cols += [f"{kind}_{s}" for kind in "qk" for s in STATS]
    return df.drop_duplicates(["layer", "head"])[cols].reset_index(drop=True)


def run(
    lm: LoadedModel,
    batch_iter,
    layers: Sequence[int],
    total: int | None = None,
    progress: bool = True,
    options: dict | None = None,
) -> pd.DataFrame:
    """Spectra, stats and head classes for ``layers`` in one pass over ``batch_iter``
    (``options``: the pipeline's, for a resume checkpoint)."""
    bands = BandNormReducer(lm, layers, kinds="qk")
    scores = heads.HeadScoreReducer(lm, layers)
    plug: dict[str, Any]
    if lm.backend == "native":
        plug = {"taps": [SiteTap([bands]), scores]}
    else:
        plug = {"hooks": reducer_hooks(lm, [bands]) + scores.hooks()}
    skip, after_batch, finished = resumable(options or {}, [bands, scores])
    run_batches(
        lm,
        batch_iter,
        last_layer=max(layers),
        total=total,
        progress=progress,
        skip=skip,
        after_batch=after_batch,
        **plug,
    )
    df = join(bands.to_frame(), scores.to_frame())
    finished()
    return df


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point (see ``rope_lens.pipeline``); resumes from a checkpoint."""
    return run(lm, make_batches(), layers, total=total, progress=progress, options=options)


def class_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean profile statistics per head class (the one-table answer)."""
    ph = per_head(df)
    cols = [f"{kind}_{s}" for kind in "qk" for s in ("mean_log10_freq", "high_share", "low_share")]
    table = ph.groupby("head_class")[cols].mean()
    table.insert(0, "n_heads", ph.groupby("head_class").size())
    return table


def summarize(df: pd.DataFrame) -> str:
    """Profile statistics per head class, then the positional heads one by one."""
    ph = per_head(df)
    lines = [f"{df.model.iloc[0]}: mean profile per head class (flat spectrum: shares 0.25)"]
    lines.append(class_table(df).round(3).to_string())
    pos = ph[ph.head_class.isin(["diagonal", "previous-token"])]
    for r in pos.itertuples():
        lines.append(
            f"L{r.layer}H{r.head} {r.head_class:<14} q high/low {r.q_high_share:.2f}/"
            f"{r.q_low_share:.2f}  k high/low {r.k_high_share:.2f}/{r.k_low_share:.2f}"
        )
    return "\n".join(lines)
