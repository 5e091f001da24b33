"""Hooks that record queries, keys and values from a ``LoadedModel`` (the only module that
knows TransformerLens hook names).

Two ways to get vectors out:

- :func:`stream` runs batches through the model and hands each layer's vectors to reducers
  *inside the hook*, in fp32, so memory does not grow with the number of tokens. Layers after
  the last one asked for are never computed (``stop_at_layer``).
- :func:`capture` returns full tensors for one small batch (per-token views, tests).

Sites are ``(layer, kind, stage)`` with kind in q / k / v and stage ``pre`` (the vector that is
rotated: the projection output, or the QK-normed vector on Gemma 3 / Qwen 3) or ``rot`` (after
rotation). Tensors are always handed over as ``[batch, pos, head, d_head]``; k and v have
``kv_head`` heads (GQA: not repeated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from rope_lens.errors import InputError
from rope_lens.inputs import Batch
from rope_lens.models.load import LoadedModel

KINDS = ("q", "k", "v")
STAGES = ("pre", "rot")


@dataclass(frozen=True)
class Site:
    layer: int
    kind: str  # "q" | "k" | "v"
    stage: str = "pre"  # "pre" | "rot"


def hook_name(lm: LoadedModel, site: Site) -> str:
    attn = f"blocks.{site.layer}.attn"
    if site.kind == "v":
        if site.stage != "pre":
            raise InputError("values are not rotated: only stage 'pre' exists for v")
        return f"{attn}.hook_v"
    if site.stage == "rot":
        return f"{attn}.hook_rot_{site.kind}"
    # With QK-norm the rotated vector is the normed one, not the projection output.
    return f"{attn}.hook_{site.kind}_normed" if lm.rope.qk_norm else f"{attn}.hook_{site.kind}"


def to_bphd(name: str, x: Tensor, n_heads: int) -> Float[Tensor, "batch pos head d_head"]:
    """Bring any q/k/v hook tensor to ``[batch, pos, head, d_head]``."""
    if x.dim() == 3:  # flat [batch, pos, head * d_head] (also OLMo-2-style pre-reshape QK-norm)
        return x.unflatten(-1, (n_heads, -1))
    if name.endswith("_normed"):  # per-head QK-norm: the bridge fires [batch, head, pos, d_head]
        return x.transpose(1, 2)
    return x


def check_layers(lm: LoadedModel, layers: Sequence[int] | None) -> list[int]:
    """Validate layer indices (negative ones count from the end); None means all."""
    if layers is None:
        return list(range(lm.n_layers))
    out = []
    for layer in layers:
        idx = layer + lm.n_layers if layer < 0 else layer
        if not 0 <= idx < lm.n_layers:
            raise InputError(
                f"layer {layer} is out of range: {lm.name} has layers 0..{lm.n_layers - 1}"
            )
        out.append(idx)
    return sorted(set(out))


def heads_of(lm: LoadedModel, kind: str) -> int:
    return lm.n_heads if kind == "q" else lm.n_kv_heads


@runtime_checkable
class Reducer(Protocol):
    """Consumes vectors batch by batch; owns its accumulators."""

    sites: Sequence[Site]

    def update(
        self, site: Site, x: Float[Tensor, "batch pos head d_head"], batch: Batch
    ) -> None: ...


def stream(
    lm: LoadedModel,
    batch_iter: Iterable[Batch],
    reducers: Sequence[Reducer],
    total: int | None = None,
    progress: bool = True,
    need_logits: bool = False,
    skip: int = 0,
    after_batch: Callable[[int], None] | None = None,
) -> None:
    """Run every batch once, feeding the reducers from inside the hooks.

    Args:
        skip: batches at the start to pass over (already reduced by a resumed run).
        after_batch: called with the count of finished batches after each one (checkpoints).
    """
    by_name: dict[str, list[tuple[Reducer, Site]]] = {}
    for reducer in reducers:
        for site in reducer.sites:
            by_name.setdefault(hook_name(lm, site), []).append((reducer, site))
    if not by_name:
        raise InputError("nothing to extract: no layers/sites selected")
    last_layer = max(site.layer for r in reducers for site in r.sites)
    current: dict[str, Batch] = {}

    def make_hook(name: str, targets: list[tuple[Reducer, Site]]):
        def hook(x: Tensor, hook=None) -> None:
            batch = current["batch"]
            n = heads_of(lm, targets[0][1].kind)
            vectors = to_bphd(name, x.detach(), n).float()  # reductions always in fp32
            for reducer, site in targets:
                reducer.update(site, vectors, batch)

        return hook

    hooks = [(name, make_hook(name, targets)) for name, targets in by_name.items()]
    stop = None if need_logits or last_layer + 1 >= lm.n_layers else last_layer + 1
    bar = tqdm(batch_iter, total=total, disable=not progress, unit="batch", desc=lm.name)
    with torch.inference_mode():
        for index, batch in enumerate(bar):
            if index < skip:
                continue
            current["batch"] = _to(batch, lm)
            lm.bridge.run_with_hooks(
                current["batch"].input_ids,
                fwd_hooks=hooks,
                attention_mask=current["batch"].attention_mask,
                stop_at_layer=stop,
                return_type=None if stop is not None else "logits",
            )
            if after_batch is not None:
                after_batch(index + 1)


def _to(batch: Batch, lm: LoadedModel) -> Batch:
    dev = lm.device
    return Batch(
        batch.input_ids.to(dev),
        batch.attention_mask.to(dev),
        batch.positions.to(dev),
        batch.count_mask.to(dev),
    )


def capture(
    lm: LoadedModel, batch: Batch, sites: Sequence[Site]
) -> dict[Site, Float[Tensor, "batch pos head d_head"]]:
    """Full fp32 tensors for each site on one batch (small inputs only)."""
    store: dict[Site, Tensor] = {}

    class _Keep:
        def __init__(self) -> None:
            self.sites = list(sites)

        def update(self, site: Site, x: Tensor, batch: Batch) -> None:
            store[site] = x.clone().cpu()

    stream(lm, [batch], [_Keep()], progress=False)
    return store
