"""Per-token views of one head on one prompt: chunk norms (Fig 6, Figs 14-18 a/b) and the
Cauchy-Schwarz table (Tables 3-5).

For query head h (KV head g = h // group) and token i, from the real post-rotation vectors
q_i = hook_rot_q[i, h] and k_i = hook_rot_k[i, g]:

- ``upper_bound`` = ||q_i|| ||k_i|| / sqrt(d)        (the paper's "Upper Bound" row)
- ``diag_logit``  = q_i . k_i / sqrt(d)             (the actual logit for j = i)
- ``prev_logit``  = q_i . k_{i-1} / sqrt(d)         (actual post-RoPE logit for j = i - 1; NaN at 0)
- ``prev_bound``  = ||q_i|| ||k_{i-1}|| / sqrt(d)   (the bound that really applies to prev_logit)

The paper writes 1/sqrt(d) with d = d_head. Models may scale differently (Gemma 2/3 use
``query_pre_attn_scalar**-0.5``), so every logit also comes as ``*_model``: the same dot product
times the model's own ``scaling``, i.e. exactly what ``hook_attn_scores`` holds (before any
softcap; a test checks this).

Chunk norms (``norm``) come per token for q and k (rotation does not change them), in the
band-norm convention: before rotation, i.e. with the YaRN / LongRoPE attention scaling that
transformers folds into cos / sin divided out, so they compare with ``band_norm`` tables. The
logit and bound columns are of the rotated vectors, as the model computes its scores.
Token-level columns are repeated over the chunk rows; ``cs_table`` collapses them to one row
per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from rope_lens import inputs
from rope_lens.analyses.head_options import heads_or_all, select_prompt
from rope_lens.attention import model_scaling
from rope_lens.errors import InputError
from rope_lens.extract import Site, capture
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel
from rope_lens.rope import chunk_norms

MAX_ROWS = 5_000_000  # one row per (layer, head, token, kind, chunk); keep it in memory
CS_COLUMNS = ["upper_bound", "diag_logit", "prev_logit", "prev_bound"]
TOKEN_COLUMNS = ["model", "layer", "layer_type", "head", "kv_head", "pos", "token"]


def token_strings(lm: LoadedModel, ids: Sequence[int]) -> list[str]:
    """Each id decoded alone (BOS and other specials keep their text, e.g. '<bos>')."""
    return inputs.token_texts(lm.tokenizer, ids)


def cs_rows(q: torch.Tensor, k: torch.Tensor, d_head: int, scale: float) -> dict[str, np.ndarray]:
    """Cauchy-Schwarz columns for one head: q ``[pos, d_head]``, k ``[pos, d_head]``
    (post-rotation, the KV head the query head reads)."""
    q, k = q.double(), k.double()
    qn, kn = q.norm(dim=-1), k.norm(dim=-1)
    inv = d_head**-0.5
    nan = torch.full((1,), float("nan"), dtype=torch.float64)
    out = {
        "upper_bound": qn * kn * inv,
        "diag_logit": (q * k).sum(-1) * inv,
        "prev_logit": torch.cat([nan, (q[1:] * k[:-1]).sum(-1) * inv]),
        "prev_bound": torch.cat([nan, qn[1:] * kn[:-1] * inv]),
    }
    # The model's own scaling, so these columns equal hook_attn_scores.
    out.update({f"{name}_model": v / inv * scale for name, v in list(out.items())})
    out["q_norm"], out["k_norm"] = qn, kn
    return {name: v.numpy() for name, v in out.items()}


def head_token_frame(lm: LoadedModel, batch: Batch, layers: Sequence[int], heads: Sequence[int]):
    """Long frame (layer, head, pos, kind, chunk) for a one-row ``batch``."""
    acts = capture(lm, batch, [Site(layer, kind, "rot") for layer in layers for kind in "qk"])
    ids = batch.input_ids[0].tolist()
    tokens = token_strings(lm, ids)
    n_pos = len(ids)
    frames = []
    for layer in layers:
        spec = lm.rope.layer_specs[layer]
        group = lm.group(layer)
        q_all, k_all = acts[Site(layer, "q", "rot")][0], acts[Site(layer, "k", "rot")][0]
        scale = model_scaling(lm, layer)
        freq = spec.frequencies().numpy()
        for head in heads:
            q, k = q_all[:, head], k_all[:, head // group]  # (pos, d_head)
            token_cols = {
                "model": lm.name,
                "layer": layer,
                "layer_type": lm.rope.layer_types[layer],
                "head": head,
                "kv_head": head // group,
                "pos": np.arange(n_pos),
                "token": tokens,
                **cs_rows(q, k, spec.head_dim, scale),
            }
            for kind, vec in (("q", q), ("k", k)):
                # Rotation keeps chunk norms; the attention scaling in cos / sin does not.
                norms = (chunk_norms(vec.double(), spec) / spec.attention_scaling).numpy()
                n_chunk = norms.shape[1]
                block = pd.DataFrame(token_cols).loc[np.repeat(np.arange(n_pos), n_chunk)]
                block["kind"] = kind
                block["chunk"] = np.tile(np.arange(n_chunk), n_pos)
                block["frequency"] = freq[block["chunk"].to_numpy()]
                block["norm"] = norms.reshape(-1)
                frames.append(block)
    return pd.concat(frames, ignore_index=True)


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point: ``--prompt-index`` picks the prompt, ``--head`` one head (all
    heads when omitted)."""
    heads = heads_or_all(lm, options.get("head"))
    batch = select_prompt(make_batches, int(options.get("prompt_index") or 0))
    chunks = sum(lm.rope.n_chunks(layer) for layer in layers)
    rows = len(heads) * batch.input_ids.shape[1] * 2 * chunks
    if rows > MAX_ROWS:
        raise InputError(
            f"the per-token table would have {rows:,} rows (> {MAX_ROWS:,}): narrow it with "
            "--layers, --head or a shorter --max-len"
        )
    return head_token_frame(lm, batch, layers, heads)


def cs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, head, token) with the Cauchy-Schwarz columns."""
    cols = TOKEN_COLUMNS + CS_COLUMNS + [f"{c}_model" for c in CS_COLUMNS]
    return df.drop_duplicates(["layer", "head", "pos"])[cols].reset_index(drop=True)


def summarize(df: pd.DataFrame) -> str:
    """The Tables 3-5 layout (first 8 tokens) for up to 4 (layer, head) pairs."""
    table = cs_table(df)
    lines = []
    for (layer, head), sub in list(table.groupby(["layer", "head"]))[:4]:
        sub = sub.head(8)
        lines.append(f"layer {layer} head {head} (1/sqrt(d) scaling; *_model columns in table)")
        lines.append("token        " + " ".join(f"{t[:8]!r:>10}" for t in sub.token))
        for col in CS_COLUMNS:
            lines.append(f"{col:<12} " + " ".join(f"{v:>10.2f}" for v in sub[col]))
    return "\n".join(lines)
