"""Attention-level hooks that ``extract.py`` does not cover: patterns, pre-softmax scores, the
model's own score scaling, and a batch runner for hooks that read or replace activations.

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

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from rope_lens.extract import Reducer, heads_of, hook_name, to_bphd
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel

# A hook body: receives the activation and the current batch; returning a tensor replaces it.
HookFn = Callable[[Tensor, Batch], Tensor | None]


def pattern_hook(layer: int) -> str:
    """Post-softmax attention probabilities, ``[batch, head, pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def scores_hook(layer: int) -> str:
    """Pre-softmax scores (scaled and masked), ``[batch, head, pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def attn_module(lm: LoadedModel, layer: int) -> Any:
    """The HF attention module of ``layer`` (owner of ``scaling`` and softcapping)."""
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


def batch_to(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        batch.input_ids.to(device),
        batch.attention_mask.to(device),
        batch.positions.to(device),
        batch.count_mask.to(device),
    )


def reducer_hooks(lm: LoadedModel, reducers: Sequence[Reducer]) -> list[tuple[str, HookFn]]:
    """Hooks feeding ``extract``-style q/k/v reducers, as :func:`extract.stream` does, so
    they can share one forward pass with pattern reducers."""
    out = []
    for reducer in reducers:
        for site in reducer.sites:
            name = hook_name(lm, site)

            def fn(x: Tensor, batch: Batch, reducer=reducer, site=site, name=name) -> None:
                reducer.update(
                    site, to_bphd(name, x.detach(), heads_of(lm, site.kind)).float(), batch
                )

            out.append((name, fn))
    return out


def run_batches(
    lm: LoadedModel,
    batch_iter: Iterable[Batch],
    hooks: Sequence[tuple[str, HookFn]],
    on_logits: Callable[[Float[Tensor, "batch pos vocab"], Batch], None] | None = None,
    last_layer: int | None = None,
    total: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> None:
    """Run every batch once with ``hooks``; hand the logits to ``on_logits`` when given.

    Args:
        hooks: ``(hook name, fn(activation, batch))``; several fns may share a name and run in
            order (a replacement made by one is seen by the next hook point, not by them).
        on_logits: called with each batch's logits; without it the unembedding is skipped and
            blocks after ``last_layer`` are not computed.
        last_layer: the deepest layer any hook reads (default: the last layer).
    """
    current: dict[str, Batch] = {}

    def wrap(fn: HookFn):
        def hook(x: Tensor, hook=None) -> Tensor | None:
            return fn(x, current["batch"])

        return hook

    fwd_hooks = [(name, wrap(fn)) for name, fn in hooks]
    if on_logits is None:
        stop = lm.n_layers if last_layer is None else min(last_layer + 1, lm.n_layers)
    else:
        stop = None
    bar = tqdm(batch_iter, total=total, disable=not progress, unit="batch", desc=desc or lm.name)
    with torch.inference_mode():
        for batch in bar:
            current["batch"] = batch_to(batch, lm.device)
            out = lm.bridge.run_with_hooks(
                current["batch"].input_ids,
                fwd_hooks=fwd_hooks,
                attention_mask=current["batch"].attention_mask,
                stop_at_layer=stop,
                return_type="logits" if stop is None else None,
            )
            if on_logits is not None:
                on_logits(out, current["batch"])


def capture_attention(
    lm: LoadedModel, batch: Batch, layers: Sequence[int], what: str = "pattern"
) -> dict[int, Float[Tensor, "batch head pos key_pos"]]:
    """Full fp32 patterns (``what="pattern"``) or pre-softmax scores (``"scores"``) of one small
    batch, per layer (per-prompt views and tests only: T x T per head)."""
    name_of = {"pattern": pattern_hook, "scores": scores_hook}[what]
    store: dict[int, Tensor] = {}

    def keep(layer: int) -> HookFn:
        def fn(x: Tensor, batch: Batch) -> None:
            store[layer] = x.detach().float().cpu().clone()

        return fn

    run_batches(
        lm,
        [batch],
        [(name_of(layer), keep(layer)) for layer in layers],
        last_layer=max(layers),
        progress=False,
    )
    return store
