"""Logit decomposition by frequency (App. E.1, Fig 12): each chunk's share of a head's logit.

By Eq. 3 the RoPE logit is a sum of per-frequency 2-D dot products. For query head h (KV head
g), query position i and key position j, chunk k contributes

    c_k(i, j) = s * (q_i^(k))^T rho((j - i) g_k) k_j^(k)

with q, k the *pre-rotation* vectors (the QK-normed ones where the model has QK-norm), g_k the
layer's frequencies and s the model's own score scaling (times YaRN's attention factor squared).
The rotation is applied here from the layout's frequencies (measured at load, the config's
where they agree), not read from this forward, so the test that the contributions sum to the
model's own ``hook_attn_scores`` checks the frequencies, the pairing and the scaling at once.
A learned sink logit (gpt-oss) belongs to no chunk: it is the ``sink_logit`` column, and in the
denominator of ``attention``. The ``q_x, q_y, k_x, k_y`` columns are the pre-rotation
chunk vectors the paper quotes (e.g. its chunk-119 vectors for BOS and non-BOS tokens).

The search for the paper's apostrophe head, whose logits this decomposes, is in
``apostrophe.py``; ``bos_channels`` finds the chunks that push the BOS key up and the others
down, as the paper's chunk 119 does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from rope_lens.analyses.head_options import heads_or_all, parse_positions, select_prompt
from rope_lens.analyses.per_token import token_strings
from rope_lens.attention import capture_attention_views, model_scaling, softcap
from rope_lens.errors import InputError
from rope_lens.extract import Site, capture
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.rope import rotate_chunks, to_chunks

log = logging.getLogger(__name__)

# One row per (layer, head, pair, chunk) grows as T^2: refuse tables pandas cannot hold
# comfortably (all heads of all layers on a 512-token prompt would be ~10^9 rows).
MAX_ROWS = 5_000_000


def decompose(
    lm: LoadedModel,
    batch: Batch,
    layers: Sequence[int],
    heads: Sequence[int],
    query_pos: Sequence[int] | None = None,
    key_pos: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Per-chunk contributions to every causal (query, key) logit of a one-row ``batch``.

    Returns one row per (layer, head, query_pos, key_pos, chunk) with ``contribution``, the
    pair's ``logit`` (sum over chunks), ``model_score`` (the model's ``hook_attn_scores``,
    which equals ``logit`` unless the model soft-caps scores) and ``attention`` (the model's
    attention weight for the pair); masked pairs (outside a sliding window or chunk) are
    dropped. A model with learned sink logits (gpt-oss) gets a ``sink_logit`` column: the
    head's extra logit, which belongs to no key and no chunk, and is in every row's softmax
    (so ``attention`` is the model's weight, sink included in its denominator).
    """
    n_pos = batch.input_ids.shape[1]
    queries = list(range(n_pos)) if query_pos is None else list(query_pos)
    keys = list(range(n_pos)) if key_pos is None else list(key_pos)
    pairs = [(i, j) for i in queries for j in keys if j <= i]
    if not pairs:
        raise InputError(
            f"no key position at or before the query positions {queries}: attention is causal"
        )
    rows = n_rows(lm, layers, heads, queries, keys)
    if rows > MAX_ROWS:
        raise InputError(
            f"the decomposition would have {rows:,} rows (> {MAX_ROWS:,}): narrow it with "
            "--layers, --head, --query-pos or --key-pos"
        )
    acts = capture(lm, batch, [Site(layer, kind, "pre") for layer in layers for kind in "qk"])
    # Scores and the model's own attention weights (for Fig 5 / circuitsvis) in one pass.
    attn = capture_attention_views(lm, batch, layers, ("scores", "pattern", "sinks"))
    scores, patterns, sinks = attn["scores"], attn["pattern"], attn.get("sinks", {})
    tokens = token_strings(lm, batch.input_ids[0].tolist())
    q_idx = torch.tensor([i for i, _ in pairs])
    k_idx = torch.tensor([j for _, j in pairs])
    frames = []
    for layer in layers:
        spec = lm.rope.layer_specs[layer]
        group = lm.group(layer)
        freq = spec.frequencies()  # fp64, (chunk,)
        scale = model_scaling(lm, layer) * spec.attention_scaling**2
        cap = softcap(lm, layer)
        masked_value = torch.finfo(scores[layer].dtype).min / 2
        for head in heads:
            cq = to_chunks(acts[Site(layer, "q", "pre")][0, :, head].double(), spec)
            ck = to_chunks(acts[Site(layer, "k", "pre")][0, :, head // group].double(), spec)
            # (pair, chunk, 2): k_j rotated by (j - i) g_k, as in Eq. 3.
            theta = (k_idx - q_idx).double()[:, None] * freq
            rotated = rotate_chunks(ck[k_idx], theta)
            contrib = (cq[q_idx] * rotated).sum(-1) * scale  # (pair, chunk)
            logit = contrib.sum(-1)
            model = scores[layer][0, head, q_idx, k_idx].double()
            keep = (model > masked_value).numpy()
            n_chunk = contrib.shape[1]
            rep = np.repeat(np.arange(len(pairs)), n_chunk)
            frame = pd.DataFrame(
                {
                    "model": lm.name,
                    "layer": layer,
                    "layer_type": lm.rope.layer_types[layer],
                    "head": head,
                    "kv_head": head // group,
                    "query_pos": q_idx.numpy()[rep],
                    "key_pos": k_idx.numpy()[rep],
                    "query_token": np.array(tokens, dtype=object)[q_idx.numpy()[rep]],
                    "key_token": np.array(tokens, dtype=object)[k_idx.numpy()[rep]],
                    "chunk": np.tile(np.arange(n_chunk), len(pairs)),
                    "frequency": freq.numpy()[np.tile(np.arange(n_chunk), len(pairs))],
                    "contribution": contrib.numpy().reshape(-1),
                    "logit": logit.numpy()[rep],
                    "logit_capped": (
                        (torch.tanh(logit / cap) * cap).numpy()[rep] if cap else logit.numpy()[rep]
                    ),
                    "model_score": model.numpy()[rep],
                    "attention": patterns[layer][0, head, q_idx, k_idx].numpy()[rep],
                    "q_x": cq[q_idx][..., 0].numpy().reshape(-1),
                    "q_y": cq[q_idx][..., 1].numpy().reshape(-1),
                    "k_x": ck[k_idx][..., 0].numpy().reshape(-1),
                    "k_y": ck[k_idx][..., 1].numpy().reshape(-1),
                }
            )
            if sinks:
                frame["sink_logit"] = float(sinks[layer][head]) if layer in sinks else float("nan")
            frames.append(frame[np.repeat(keep, n_chunk)])
    return pd.concat(frames, ignore_index=True)


def bos_channels(df: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """Chunks that separate the BOS key from the others (App. E.1's chunk-119 analysis):
    per (layer, head, chunk), mean contribution to key 0 minus mean to keys j >= 1 over the
    same queries (i >= 1), largest first."""
    sub = df[df.query_pos >= 1]
    bos = sub[sub.key_pos == 0].groupby(["layer", "head", "chunk"]).contribution.mean()
    rest = sub[sub.key_pos >= 1].groupby(["layer", "head", "chunk"]).contribution.mean()
    out = pd.DataFrame({"to_bos": bos, "to_others": rest}).dropna()
    out["bos_minus_others"] = out.to_bos - out.to_others
    out = out.reset_index().sort_values("bos_minus_others", ascending=False)
    return out.groupby(["layer", "head"]).head(top).reset_index(drop=True)


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point: ``--prompt-index``, ``--head`` (all when omitted),
    ``--query-pos`` and ``--key-pos`` (all causal pairs when omitted)."""
    heads = heads_or_all(lm, options.get("head"))
    batch = select_prompt(make_batches, int(options.get("prompt_index") or 0))
    n_pos = batch.input_ids.shape[1]
    queries = parse_positions(options.get("query_pos"), n_pos)
    keys = parse_positions(options.get("key_pos"), n_pos)
    if options.get("query_pos") is None:
        queries = default_queries(lm, layers, heads, n_pos, keys)
    return decompose(lm, batch, layers, heads, queries, keys)


def n_rows(
    lm: LoadedModel,
    layers: Sequence[int],
    heads: Sequence[int],
    queries: Sequence[int],
    keys: Sequence[int],
) -> int:
    """Rows of the decomposition table: one per (layer, head, causal pair, chunk)."""
    pairs = sum(1 for i in queries for j in keys if j <= i)
    return len(heads) * pairs * sum(lm.rope.n_chunks(layer) for layer in layers)


def default_queries(
    lm: LoadedModel,
    layers: Sequence[int],
    heads: Sequence[int],
    n_pos: int,
    keys: Sequence[int] | None,
) -> list[int] | None:
    """Every query when the table fits (None); otherwise the last one, so that the default
    run (every layer and head of the first prompt: 87.7M rows on SmolLM2) answers "what does
    each frequency add to the last token's logits" instead of failing. ``--query-pos all``
    asks for every pair explicitly."""
    every = range(n_pos)
    key_list = every if keys is None else keys
    if n_rows(lm, layers, heads, every, key_list) <= MAX_ROWS:
        return None
    log.warning(
        "decomposing the last query (position %d) only: every pair would be %s rows; give "
        "--query-pos (e.g. 5 or all) with fewer --layers / --head for more",
        n_pos - 1,
        f"{n_rows(lm, layers, heads, every, key_list):,}",
    )
    return [n_pos - 1]


def summarize(df: pd.DataFrame) -> str:
    """Largest-magnitude chunks of the first few pairs, and the decomposition's residual."""
    keys = ["layer", "head", "query_pos", "key_pos"]
    pairs = df.drop_duplicates(keys)  # one row per pair (not one group each: 145k groups took 12 s)
    resid = float((pairs.logit_capped - pairs.model_score).abs().max())
    lines = [f"max |sum of chunk contributions - model score| = {resid:.2e}"]
    shown = df.merge(pairs.sort_values(keys).tail(6)[keys], on=keys)
    for key, sub in shown.groupby(keys):
        top = sub.reindex(sub.contribution.abs().sort_values(ascending=False).index).head(3)
        cells = ", ".join(f"chunk {r.chunk} {r.contribution:+.2f}" for r in top.itertuples())
        lines.append(
            f"L{key[0]}H{key[1]} q{key[2]} {sub.query_token.iloc[0]!r} -> k{key[3]} "
            f"{sub.key_token.iloc[0]!r}: logit {sub.logit.iloc[0]:+.2f} = {cells}, ..."
        )
    return "\n".join(lines)
