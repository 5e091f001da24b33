"""Attention sinks per head, and the frequency chunks that make the first token a sink
(Gu et al., ICLR 2025, *When Attention Sink Emerges in Language Models: An Empirical View*).

**Sink metric.** Gu et al. measure, per layer l and head h, the mean attention to the first
token, α^{l,h}_1 = mean_i A^{l,h}_{i,1}, and call the head a sink head when it exceeds a
threshold ε; the model's sink rate is the share of such heads (ε = 0.3 in their paper).
Here ``sink_mass`` is the head analysis' ``sink_score`` (``rope_lens.analyses.heads``): the
mean attention weight on position 0 (BOS when prepended) over counted queries, which on the
native backend is computed from one logit per query and the row's log-sum-exp, never a
[T, T] tensor. Difference from Gu et al.: the BOS query itself is not counted (its whole row
is on BOS) unless ``--count-bos``; with T queries that moves the rate by at most 1 / T.

**Learned sinks.** gpt-oss adds one learned logit per head to every row's softmax, a sink
that belongs to no token. Its share of the row, mean exp(sink_h - lse_i) over counted queries,
is ``learned_sink_mass`` beside the first-token ``sink_mass`` (0 for models without learned
sinks); every weight here has it in its denominator, as the model computes them.

**Link to frequencies.** For the first prompts (``--sink-prompts``, default 4), every head's
logit to each key is split into per-chunk contributions (App. E.1 of the paper; the same
decomposition as ``decompose.bos_channels``, computed here for all heads at once without a
per-pair table): ``to_bos`` is a chunk's mean contribution to key 0 over queries i >= 1,
``to_others`` its mean contribution to keys 1..i, and ``bos_minus_others`` their difference,
i.e. how much the chunk favours the first key. Each chunk is also flagged ``critical`` (its
wavelength exceeds the trained context: ``rope_lens.analyses.critical``).

One row per (layer, head, chunk); head-level columns (``sink_mass``, ``is_sink``) repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd
import torch

from rope_lens.analyses import critical
from rope_lens.analyses import heads as head_scores
from rope_lens.analyses.band_norms import band_of
from rope_lens.analyses.registry import read_option
from rope_lens.attention import model_scaling
from rope_lens.errors import InputError
from rope_lens.extract import Site, capture
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.rope import rotate_chunks, to_chunks

EPSILON = 0.3  # Gu et al.'s threshold
COLUMNS = [
    "model",
    "layer",
    "layer_type",
    "head",
    "kv_head",
    "sink_mass",
    "learned_sink_mass",
    "is_sink",
    "epsilon",
    "chunk",
    "frequency",
    "wavelength",
    "band",
    "critical",
    "to_bos",
    "to_others",
    "bos_minus_others",
    "rank",
    "n_queries",
    "n_prompts",
]


def _window(lm: LoadedModel, layer: int) -> int | None:
    if lm.rope.layer_windows:  # what the layer's attention call masks with (Mistral: all)
        return lm.rope.window(layer)
    if "sliding" not in lm.rope.layer_types[layer]:
        return None
    cfg = lm.hf_model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "sliding_window", None)


def bos_contributions(
    cq: torch.Tensor,
    ck: torch.Tensor,
    freq: torch.Tensor,
    scale: float,
    window: int | None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Sums of per-chunk logit contributions of one head on one prompt.

    Args:
        cq, ck: pre-rotation chunks ``[pos, chunk, 2]`` (fp64) of the query head and its key.
        freq: ``[chunk]`` frequencies; ``scale``: the model's score scaling.
        window: sliding window (keys with i - j >= window are masked), or None.
        chunk: attention chunk (keys in another chunk than the query's are masked), or None.

    Returns:
        (sum over queries i >= 1 of the contribution to key 0, sum over allowed pairs
        (i >= 1, 1 <= j <= i) of the contribution to key j, number of the former, of the latter).
    """
    n = cq.shape[0]
    to_bos = torch.zeros(cq.shape[1], dtype=cq.dtype)
    to_rest = torch.zeros(cq.shape[1], dtype=cq.dtype)
    n_bos = n_rest = 0
    for i in range(1, n):
        lo = 0 if window is None else max(0, i - window + 1)
        if chunk is not None:
            lo = max(lo, (i // chunk) * chunk)
        j = torch.arange(lo, i + 1)
        theta = (j - i).to(cq.dtype)[:, None] * freq  # (keys, chunk): k_j turned by (j - i) g
        contrib = (cq[i][None] * rotate_chunks(ck[j], theta)).sum(-1) * scale  # (keys, chunk)
        if lo == 0:
            to_bos += contrib[0]
            n_bos += 1
        rest = contrib[j >= 1]
        to_rest += rest.sum(0)
        n_rest += rest.shape[0]
    return to_bos, to_rest, n_bos, n_rest


def bos_channel_table(
    lm: LoadedModel, batches: Sequence[Batch], layers: Sequence[int]
) -> pd.DataFrame:
    """Per (layer, head, chunk): mean contribution to key 0 and to keys >= 1 (queries i >= 1)
    over the rows of ``batches`` (each row's real tokens)."""
    sums: dict[tuple[int, int], list] = {}
    n_prompts = 0
    for batch in batches:
        acts = capture(lm, batch, [Site(layer, kind, "pre") for layer in layers for kind in "qk"])
        lengths = batch.attention_mask.sum(1).tolist()
        for row, length in enumerate(lengths):
            n_prompts += 1
            for layer in layers:
                spec = lm.rope.layer_specs[layer]
                group = lm.group(layer)  # Gemma 4's full layers have their own
                freq = spec.frequencies()
                scale = model_scaling(lm, layer) * spec.attention_scaling**2
                window = _window(lm, layer)
                q = to_chunks(acts[Site(layer, "q", "pre")][row, :length].double(), spec)
                k = to_chunks(acts[Site(layer, "k", "pre")][row, :length].double(), spec)
                for head in range(lm.n_heads):
                    b, r, nb, nr = bos_contributions(
                        q[:, head], k[:, head // group], freq, scale, window, lm.rope.chunk(layer)
                    )
                    acc = sums.setdefault((layer, head), [0, 0, 0, 0])
                    acc[0] = acc[0] + b
                    acc[1] = acc[1] + r
                    acc[2] += nb
                    acc[3] += nr
    rows = []
    for (layer, head), (b, r, nb, nr) in sums.items():
        spec = lm.rope.layer_specs[layer]
        freq = spec.frequencies().numpy()
        to_bos = (b / max(nb, 1)).numpy() if nb else np.full(len(freq), np.nan)
        to_others = (r / max(nr, 1)).numpy() if nr else np.full(len(freq), np.nan)
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": head,
                    "chunk": np.arange(len(freq)),
                    "to_bos": to_bos,
                    "to_others": to_others,
                    "n_prompts": n_prompts,
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out["bos_minus_others"] = out.to_bos - out.to_others
    return out


def run(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    epsilon: float = EPSILON,
    n_prompts: int = 4,
    max_len: int = 64,
    total: int | None = None,
    progress: bool = True,
    options: dict | None = None,
) -> pd.DataFrame:
    """Sink mass per head over ``make_batches()``; BOS channels over the first ``n_prompts``
    texts (cut to ``max_len`` tokens). ``options``: the pipeline's; the corpus pass resumes
    from its checkpoint."""
    if not 0 < epsilon < 1:
        raise InputError(f"--sink-epsilon must be in (0, 1), got {epsilon}")
    if n_prompts < 1:
        raise InputError(f"--sink-prompts must be at least 1, got {n_prompts}")
    scores = head_scores.run(
        lm, make_batches(), layers, total=total, progress=progress, options=options
    )
    prompts = []
    for batch in make_batches():
        for row in range(batch.input_ids.shape[0]):
            if len(prompts) == n_prompts:
                break
            length = min(int(batch.attention_mask[row].sum()), max_len)
            if length < 2:  # no key after the first: nothing to compare BOS with
                continue
            prompts.append(
                Batch(
                    batch.input_ids[row : row + 1, :length],
                    batch.attention_mask[row : row + 1, :length],
                    batch.positions[row : row + 1, :length],
                    batch.count_mask[row : row + 1, :length],
                )
            )
        if len(prompts) == n_prompts:
            break
    if not prompts:
        raise InputError(
            "the sinks analysis needs a text of at least 2 tokens (a first token and a key "
            "after it); every text here is shorter: give longer texts (or drop --no-bos)"
        )
    channels = bos_channel_table(lm, prompts, layers)
    if head_scores.LEARNED not in scores:
        scores = scores.assign(**{head_scores.LEARNED: 0.0})
    head_cols = scores[
        ["layer", "layer_type", "head", "kv_head", "sink_score", head_scores.LEARNED, "n_queries"]
    ]
    names = {"sink_score": "sink_mass", head_scores.LEARNED: "learned_sink_mass"}
    df = channels.merge(head_cols.rename(columns=names), on=["layer", "head"])
    df["is_sink"] = df.sink_mass > epsilon
    df["epsilon"] = epsilon
    freq_rows = []
    for layer in sorted(set(df.layer)):
        spec = lm.rope.layer_specs[layer]
        freq = spec.frequencies().numpy()
        rotating = [float(f) for f in freq if f > 0]
        freq_rows.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "chunk": np.arange(len(freq)),
                    "frequency": freq,
                    "wavelength": spec.wavelengths().numpy(),
                    "band": [band_of(float(f), rotating) for f in freq],
                }
            )
        )
    df = df.merge(pd.concat(freq_rows), on=["layer", "chunk"])
    df = critical.mark_critical(df, critical.run(lm, layers))
    df["rank"] = (
        df.groupby(["layer", "head"]).bos_minus_others.rank(ascending=False, method="first")
    ).astype(int)
    df["model"] = lm.name
    return df.sort_values(["layer", "head", "chunk"], ignore_index=True)[COLUMNS]


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point. Options: ``sink_epsilon`` (0.3), ``sink_prompts`` (4),
    ``sink_len`` (64 tokens per prompt for the chunk decomposition)."""

    def opt(name, default, cast):
        return read_option(options, name, default, cast)

    return run(
        lm,
        make_batches,
        layers,
        epsilon=opt("sink_epsilon", EPSILON, float),
        n_prompts=opt("sink_prompts", 4, int),
        max_len=opt("sink_len", 64, int),
        total=total,
        progress=progress,
        options=options,
    )


def head_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per head: sink mass, class, and its most BOS-favouring chunk."""
    top = df[df["rank"] == 1]
    cols = [
        "model",
        "layer",
        "layer_type",
        "head",
        "sink_mass",
        "learned_sink_mass",
        "is_sink",
        "chunk",
        "frequency",
        "band",
        "critical",
        "bos_minus_others",
    ]
    cols = [c for c in cols if c in top]  # tables saved before learned sinks lack that one
    return top[cols].rename(columns={"chunk": "top_chunk"}).reset_index(drop=True)


def summarize(df: pd.DataFrame) -> str:
    """Sink rate (Gu et al.'s metric), where the sink heads' BOS-favouring chunks sit."""
    heads = head_table(df)
    eps = float(df.epsilon.iloc[0])
    rate = heads.is_sink.mean()
    lines = [
        f"{df.model.iloc[0]}: sink rate {rate:.1%} ({int(heads.is_sink.sum())}/{len(heads)} heads "
        f"with mean first-token attention > {eps:g}; {int(df.n_queries.iloc[0]):,} queries per "
        f"layer); mean sink mass {heads.sink_mass.mean():.3f}"
        + (
            f"; mean learned-sink mass {heads.learned_sink_mass.mean():.3f} (an extra logit "
            "per head, on no token)"
            if "learned_sink_mass" in heads and heads.learned_sink_mass.gt(0).any()
            else ""
        )
    ]
    for label, sub in (
        ("sink heads", heads[heads.is_sink]),
        ("other heads", heads[~heads.is_sink]),
    ):
        if sub.empty:
            continue
        bands = sub.band.value_counts()
        cells = ", ".join(f"{b} {int(bands.get(b, 0))}" for b in ("high", "middle", "low", "none"))
        lines.append(
            f"  {label}: top BOS-favouring chunk by band: {cells}; in a critical chunk "
            f"{sub.critical.mean():.0%}"
        )
    per_layer = heads.groupby("layer").is_sink.mean()
    lines.append(
        "  sink share by layer: "
        + " ".join(f"L{int(cast(int, layer))}:{v:.0%}" for layer, v in per_layer.items())
    )
    return "\n".join(lines)
