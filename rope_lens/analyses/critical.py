"""Critical frequencies: the chunks that never complete a turn within the trained context.

Closed form from the model's RoPE layout alone (no forward pass). For a layer whose keys are
at most ``L - 1`` tokens from the query (``L`` = the trained context, or the sliding window for
a sliding-attention layer), chunk k with frequency g_k rotates a query-key pair by at most
g_k (L - 1) radians. The chunk is **critical** when its wavelength 2π / g_k exceeds ``L``: over
every distance the model was trained on it turns less than once, so its phase is never seen
to wrap around. Such chunks are where the paper's Theorem 6.1 bites (a "semantic" channel is
robust only while it barely rotates, and breaks at lengths where it finally does) and where
Jonasson (2025, *Rotary Outliers and Rotary Offset Features*) finds rotary offset features:
a constant offset in a chunk that turns less than a full cycle acts as a monotone bias rather
than an oscillation, and outliers concentrate there.

For standard RoPE, g_k = θ^(-2k/r) (r = rotary dim), so chunk k is critical exactly when
``k > (r / 2) · log_θ(L / 2π)``: ``first_critical_chunk`` computes that index in closed form
and the tests check the table against it. Unrotated chunks (p-RoPE, partial rotary) have
infinite wavelength and are listed as critical too (``rotating`` False), since they never
turn either. A layer type with no rotating chunk at all (NoPE layers: SmolLM3, Llama 4,
Command R7B, EXAONE 4) gets no verdict: its rows say ``rotating`` False, ``critical`` and
``under_half_turn`` False, because "turns less than once" means nothing where nothing turns.

A second, stricter flag, ``under_half_turn``: g_k (L - 1) < π. Below half a turn cos(g_k d)
is monotone in the distance d over the whole context, so the chunk can only express "nearer
is more/less similar" and never an oscillation.

The trained context defaults to the config's ``original_max_position_embeddings`` when a
scaling rule names one (llama3, YaRN: the pre-extension context), else
``max_position_embeddings``; ``--context N`` overrides it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rope_lens.errors import InputError
from rope_lens.models.load import LoadedModel
from rope_lens.rope import RopeSpec

COLUMNS = [
    "model",
    "layer_type",
    "layers",
    "n_layers",
    "rope_type",
    "theta",
    "context",
    "context_source",
    "chunk",
    "frequency",
    "wavelength",
    "wavelength_over_context",
    "turns_over_context",
    "rotating",
    "critical",
    "under_half_turn",
]


def first_critical_chunk(theta: float, rotary_dim: int, context: int) -> int:
    """Closed form for standard RoPE: the smallest chunk k with 2π θ^(2k/r) > ``context``
    (``rotary_dim // 2`` when no chunk is critical)."""
    n = rotary_dim // 2
    # 2π θ^(2k/r) > L  <=>  k > (r/2) log_θ(L / 2π)
    bound = (rotary_dim / 2) * math.log(context / (2 * math.pi)) / math.log(theta)
    k = math.floor(bound) + 1 if bound >= 0 else 0
    return min(max(k, 0), n)


def _config(lm: LoadedModel):
    cfg = lm.hf_model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def trained_context(
    lm: LoadedModel, layer_type: str, override: int | None = None
) -> tuple[int, str]:
    """(context in tokens, where it came from) for layers of ``layer_type``."""
    cfg = _config(lm)
    if override is not None:
        context, source = int(override), "--context"
    else:
        params = getattr(cfg, "rope_parameters", None) or {}
        params = params.get(layer_type, params) if isinstance(params, dict) else {}
        original = params.get("original_max_position_embeddings") if params else None
        if original:
            context, source = int(original), "original_max_position_embeddings"
        else:
            context, source = lm.max_context, "max_position_embeddings"
    window = _layer_type_window(lm, layer_type)
    if window and window < context:
        return int(window), "sliding_window"
    return context, source


def _layer_type_window(lm: LoadedModel, layer_type: str) -> int | None:
    """The sliding window of ``layer_type``'s layers: as their attention calls received it
    (Mistral-style models slide in every layer with no "sliding" layer type), else, unprobed,
    the config's window for a "sliding" type."""
    if lm.rope.layer_windows:
        windows = [
            w for w, t in zip(lm.rope.layer_windows, lm.rope.layer_types) if t == layer_type and w
        ]
        return min(windows) if windows else None
    if "sliding" in layer_type:
        return getattr(_config(lm), "sliding_window", None)
    return None


def critical_table(
    name: str,
    spec: RopeSpec,
    layer_type: str,
    layers: Sequence[int],
    context: int,
    context_source: str = "",
) -> pd.DataFrame:
    """One row per chunk of one layer type (see the module docstring for the columns)."""
    if context < 2:
        raise InputError(f"the context must be at least 2 tokens, got {context}")
    freq = spec.frequencies().numpy()
    with np.errstate(divide="ignore"):
        wave = np.where(freq > 0, 2 * np.pi / np.where(freq > 0, freq, 1.0), np.inf)
    turns = freq * (context - 1) / (2 * np.pi)
    verdict = bool((freq > 0).any())  # NoPE: no rotation-dependent verdict
    return pd.DataFrame(
        {
            "model": name,
            "layer_type": layer_type,
            "layers": ",".join(map(str, layers)),
            "n_layers": len(layers),
            "rope_type": spec.rope_type,
            "theta": spec.theta,
            "context": context,
            "context_source": context_source,
            "chunk": np.arange(len(freq)),
            "frequency": freq,
            "wavelength": wave,
            "wavelength_over_context": wave / context,
            "turns_over_context": turns,
            "rotating": freq > 0,
            "critical": (wave > context) & verdict,
            "under_half_turn": (freq * (context - 1) < np.pi) & verdict,
        }
    )[COLUMNS]


def run(lm: LoadedModel, layers: Sequence[int] | None = None, context: int | None = None):
    """Critical-chunk table per layer type of ``lm`` (only the types among ``layers``)."""
    layers = list(lm.rope.attention_layers) if layers is None else list(layers)
    by_type: dict[str, list[int]] = {}
    for layer in layers:
        by_type.setdefault(lm.rope.layer_types[layer], []).append(layer)
    frames = []
    for layer_type, members in by_type.items():
        ctx, source = trained_context(lm, layer_type, context)
        spec = lm.rope.layer_specs[members[0]]
        frames.append(critical_table(lm.name, spec, layer_type, members, ctx, source))
    return pd.concat(frames, ignore_index=True)


def analyze(
    lm: LoadedModel,
    make_batches,
    layers: Sequence[int],
    options: dict,
    progress: bool = True,
    total: int | None = None,
) -> pd.DataFrame:
    """Pipeline entry point; reads no text (``make_batches`` is unused). ``--context N``."""
    ctx = options.get("context")
    if ctx is not None:
        try:
            ctx = int(ctx)
        except (TypeError, ValueError) as err:
            raise InputError(f"--context must be a whole number of tokens, got {ctx!r}") from err
        if ctx < 2:
            raise InputError(f"--context must be at least 2 tokens, got {ctx}")
    return run(lm, layers, ctx)


def mark_critical(df: pd.DataFrame, crit: pd.DataFrame) -> pd.DataFrame:
    """Add ``critical`` / ``under_half_turn`` to any per-chunk table (band norms, massive
    values, BOS channels) that has ``layer_type`` and ``chunk`` columns."""
    flags = crit[["layer_type", "chunk", "critical", "under_half_turn"]]
    return df.drop(columns=["critical", "under_half_turn"], errors="ignore").merge(
        flags, on=["layer_type", "chunk"], how="left"
    )


def summarize(df: pd.DataFrame) -> str:
    """Per layer type: the context, the critical chunks and their share of the head."""
    lines = [f"{df.model.iloc[0]}: chunks whose wavelength exceeds the trained context"]
    for layer_type, sub in df.groupby("layer_type", sort=False):
        crit = sub[sub.critical]
        n = len(sub)
        first = int(crit.chunk.min()) if len(crit) else None
        span = f"chunks {first}..{int(sub.chunk.max())}" if first is not None else "none"
        half = int(sub.under_half_turn.sum())
        r = sub.iloc[0]
        if not sub.rotating.any():
            lines.append(f"  {layer_type} ({r.n_layers} layers): NoPE, no chunk turns (no verdict)")
            continue
        lines.append(
            f"  {layer_type} ({r.n_layers} layers, theta {r.theta:g}, {r.rope_type}): context "
            f"{int(r.context):,} ({r.context_source}); critical {span}: {len(crit)}/{n} "
            f"({len(crit) / n:.0%}); under half a turn: {half}/{n}"
        )
    return "\n".join(lines)
