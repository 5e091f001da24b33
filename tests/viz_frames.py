"""Synthetic results tables for the plotting tests (no model needed).

The values are arbitrary but shaped like the real tables: chunk 0 is the highest frequency,
and keys get a bump at the high-frequency end so orientation mistakes are visible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def band_norm_frame(
    n_layers: int = 4,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    n_chunks: int = 8,
    theta: float = 10_000.0,
    model: str = "tiny",
    layer_types: list[str] | None = None,
) -> pd.DataFrame:
    """A band-norm table (columns of ``rope_lens.analyses.band_norms.COLUMNS``)."""
    rng = np.random.default_rng(0)
    types = layer_types or ["full_attention"] * n_layers
    rows = []
    for layer in range(n_layers):
        base = theta if types[layer] == "full_attention" else theta / 100
        freqs = base ** (-2 * np.arange(n_chunks) / (2 * n_chunks))
        for kind in ("q", "k", "v"):
            heads = n_heads if kind == "q" else n_kv_heads
            for head in range(heads):
                for chunk in range(n_chunks):
                    norm = 1 + rng.random() + (3.0 if kind == "k" and chunk == 0 else 0.0)
                    rows.append(
                        dict(
                            model=model,
                            layer=layer,
                            layer_type=types[layer],
                            head=head,
                            kv_head=head // (n_heads // n_kv_heads) if kind == "q" else head,
                            kind=kind,
                            chunk=chunk,
                            frequency=freqs[chunk],
                            wavelength=2 * np.pi / freqs[chunk],
                            mean_norm=norm,
                            n_tokens=100,
                        )
                    )
    return pd.DataFrame(rows)


def attention(n: int, heads: int = 2) -> np.ndarray:
    """Causal uniform attention patterns ``[heads, n, n]``."""
    a = np.tril(np.ones((heads, n, n)))
    return a / a.sum(-1, keepdims=True)


def heads_frame(n_layers: int = 4, n_heads: int = 4, model: str = "tiny") -> pd.DataFrame:
    """A head-score table (``rope_lens.analyses.heads.columns(spread=True)``) with one head of each class."""
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            diag, prev, sink = 0.1, 0.1, 0.3
            if (layer, head) in ((0, 1), (n_layers - 1, 2)):
                diag = 0.9
            if (layer, head) == (0, 3):
                prev = 0.8
            if (layer, head) == (1, 0):
                sink = 0.7
            rows.append(
                dict(
                    model=model, layer=layer, layer_type="full_attention", head=head,
                    kv_head=head // 2, diag_score=diag, prev_score=prev, sink_score=sink,
                    mean_distance=3.0 + head, entropy=1.0 + layer + head / 10, n_queries=100,
                )
            )  # fmt: skip
    df = pd.DataFrame(rows)
    trio = df[["diag_score", "prev_score", "sink_score"]]
    names = trio.idxmax(axis=1).map(
        {"diag_score": "diagonal", "prev_score": "previous-token", "sink_score": "sink"}
    )
    df["head_class"] = names.where(trio.max(axis=1) >= 0.5, "other")
    return df


def per_token_frame(tokens: list[str], layers=(0, 3), heads=(0, 1, 2, 3), n_chunks: int = 8):
    """A per-token table (``rope_lens.analyses.per_token``) for one prompt."""
    rng = np.random.default_rng(1)
    freqs = 10_000.0 ** (-np.arange(n_chunks) / n_chunks)
    rows = []
    for layer in layers:
        for head in heads:
            for pos, tok in enumerate(tokens):
                ub = 5 + rng.random()
                cs = dict(upper_bound=ub, diag_logit=0.9 * ub, prev_logit=np.nan if pos == 0 else 1.0,
                          prev_bound=np.nan if pos == 0 else ub)  # fmt: skip
                for kind in ("q", "k"):
                    for chunk in range(n_chunks):
                        rows.append(
                            dict(
                                model="tiny", layer=layer, layer_type="full_attention", head=head,
                                kv_head=head // 2, pos=pos, token=tok, **cs, kind=kind,
                                chunk=chunk, frequency=freqs[chunk],
                                norm=1 + rng.random() + (4 if chunk == 0 else 0),
                            )
                        )  # fmt: skip
    return pd.DataFrame(rows)


def decompose_frame(tokens: list[str], layer: int = 0, head: int = 0, n_chunks: int = 4):
    """A decomposition table (``rope_lens.analyses.decompose``) for every causal pair."""
    rows = []
    for i, qt in enumerate(tokens):
        for j, kt in enumerate(tokens[: i + 1]):
            for chunk in range(n_chunks):
                rows.append(
                    dict(
                        model="tiny", layer=layer, layer_type="full_attention", head=head,
                        kv_head=0, query_pos=i, key_pos=j, query_token=qt, key_token=kt,
                        chunk=chunk, frequency=1.0 / (chunk + 1), contribution=float(i - j),
                        logit=float(n_chunks * (i - j)), model_score=float(n_chunks * (i - j)),
                        attention=1.0 / (i + 1),
                    )
                )  # fmt: skip
    return pd.DataFrame(rows)


def ablation_frame(n_heads: int = 2) -> pd.DataFrame:
    """An ablation table (``rope_lens.analyses.ablation``): baseline plus low/high sweeps."""
    configs = [("none", "", 0, 0)] + [
        ("rotation-free", sweep, lo, hi)
        for sweep, bands in (("low", [(6, 8), (4, 8)]), ("high", [(0, 2), (0, 4)]))
        for lo, hi in bands
    ]
    rows = []
    for kind, sweep, lo, hi in configs:
        size = hi - lo
        delta = 0.0 if kind == "none" else (0.01 * size if sweep == "low" else 0.2 * size)
        for head in range(n_heads):
            diag = 0.9 - (0.2 * size if sweep == "high" else 0.0)
            rows.append(
                dict(
                    model="tiny", ablation=kind, sweep=sweep, band_lo=lo, band_hi=hi,
                    band_fraction=size / 8, ablated_layers="all", ablated_heads="all",
                    loss=3.0 + delta, base_loss=3.0, delta_loss=delta, n_targets=100, layer=0,
                    layer_type="full_attention", head=head, kv_head=0, diag_score=diag,
                    prev_score=0.1, sink_score=0.1, mean_distance=1.0, entropy=1.0,
                    class_ablated="diagonal" if diag >= 0.5 else "other",
                    base_class="diagonal" if head == 0 else "other",
                )
            )  # fmt: skip
    return pd.DataFrame(rows)
