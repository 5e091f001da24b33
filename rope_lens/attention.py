"""Attention-level views that ``extract.py`` does not cover: patterns, pre-softmax scores, the
model's own score scaling. The batch runner they share with the q/k/v reducers is
``extract.run_batches``. On the native backend, scores of small batches are recomputed from the
attention call's q / k (``_ScoreTap``); on ``tl`` they are read from hooks.

``extract.py`` streams q/k/v vectors into reducers; the head analyses also need
``hook_pattern`` (post-softmax) and ``hook_attn_scores`` (pre-softmax, including the model's
scaling and the causal / sliding-window mask), and the ablations must *replace* an
activation, which TransformerLens does when a hook function returns a tensor. This module keeps
those hook names in one place, next to ``extract.hook_name`` (which it reuses for q/k/v), so a
TransformerLens upgrade still touches only these two files.

Shapes as the bridge fires them (checked in tests): patterns and scores are
``[batch, head, pos, key_pos]``; q/k reach hooks through ``extract.to_bphd`` as
``[batch, pos, head, d_head]`` (k with ``kv_head`` heads, not repeated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor

from rope_lens.extract import HookFn, run_batches
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel


def pattern_hook(layer: int) -> str:
    """Post-softmax attention probabilities, ``[batch, head, pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def scores_hook(layer: int) -> str:
    """Pre-softmax scores (scaled and masked), ``[batch, head, pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def attn_module(lm: LoadedModel, layer: int) -> Any:
    """The HF attention module of ``layer`` (owner of ``scaling`` and softcapping)."""
    if lm.backend == "native":
        from rope_lens.engine.native import attention_modules

        return attention_modules(lm.hf_model)[layer]
    return lm.bridge.blocks[layer].attn.original_component


def model_scaling(lm: LoadedModel, layer: int) -> float:
    """The factor the model multiplies q.k by: HF ``scaling`` (Gemma 2/3 use
    ``query_pre_attn_scalar**-0.5``, which can differ from 1/sqrt(d_head)), else 1/sqrt(d_head).

    The same lookup the bridge's attention reimplementation uses, so scores recomputed with it
    reproduce ``hook_attn_scores``.
    """
    return float(getattr(attn_module(lm, layer), "scaling", lm.head_dim**-0.5))


def softcap(lm: LoadedModel, layer: int) -> float | None:
    """Gemma 2's tanh logit softcap, applied to scores before masking (None when absent)."""
    return getattr(attn_module(lm, layer), "attn_logit_softcapping", None)


def capture_attention(
    lm: LoadedModel, batch: Batch, layers: Sequence[int], what: str = "pattern"
) -> dict[int, Float[Tensor, "batch head pos key_pos"]]:
    """Full fp32 patterns (``what="pattern"``) or pre-softmax scores (``"scores"``) of one small
    batch, per layer (per-prompt views and tests only: T x T per head)."""
    return capture_attention_views(lm, batch, layers, (what,))[what]


def capture_attention_views(
    lm: LoadedModel, batch: Batch, layers: Sequence[int], views: Sequence[str]
) -> dict[str, dict[int, Float[Tensor, "batch head pos key_pos"]]]:
    """Several of ``"pattern"`` / ``"scores"`` from the same single forward pass (masked
    pairs: -inf scores, zero weight on the native backend; a large negative score on ``tl``).
    Patterns are the model's own attention weights: a learned sink logit joins each row's
    softmax, so a row's weights then sum to less than 1; view ``"sinks"`` holds those logits
    (``[head]``, native backend, only layers that have them)."""
    if lm.backend == "native":
        from rope_lens.engine.kernels import softmax_with_sinks

        tap = _ScoreTap(layers)
        run_batches(lm, [batch], taps=[tap], last_layer=max(layers), progress=False)
        out = {
            view: {
                layer: (s if view == "scores" else softmax_with_sinks(s, tap.sinks.get(layer)))
                for layer, s in tap.scores.items()
            }
            for view in views
            if view != "sinks"
        }
        if "sinks" in views:
            out["sinks"] = dict(tap.sinks)
        return out
    name_of = {"pattern": pattern_hook, "scores": scores_hook}
    views = [view for view in views if view != "sinks"]  # no learned sinks on the bridge
    store: dict[str, dict[int, Tensor]] = {view: {} for view in views}

    def keep(view: str, layer: int) -> HookFn:
        def fn(x: Tensor, batch: Batch) -> None:
            store[view][layer] = x.detach().float().cpu().clone()

        return fn

    hooks = [(name_of[view](layer), keep(view, layer)) for view in views for layer in layers]
    run_batches(lm, [batch], hooks, last_layer=max(layers), progress=False)
    return store


class _ScoreTap:
    """Native backend: explicit pre-softmax scores of one small batch (model scaling, softcap,
    causal and sliding-window mask), from the post-rotation q / k of the attention call."""

    needs_stats = False

    def __init__(self, layers: Sequence[int]) -> None:
        self.layers = list(layers)
        self.scores: dict[int, Tensor] = {}
        self.sinks: dict[int, Tensor] = {}

    def edit(self, call) -> None:
        pass

    def observe(self, call) -> None:
        from rope_lens.engine.kernels import explicit_scores

        q, k = call.query.float(), call.keys_per_query_head().float()
        s = explicit_scores(q, k, call.scaling, call.softcap, call.window, call.chunk)
        self.scores[call.layer] = s.cpu()
        if call.sinks is not None:
            self.sinks[call.layer] = call.sinks.cpu()
