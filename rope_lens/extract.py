"""Record queries, keys and values from a ``LoadedModel``, on either backend.

On the ``native`` backend (default) the vectors come from inside the model's own attention
call (``rope_lens.engine.native``); on ``tl`` from TransformerLens hooks (this module and
``attention.py`` are the only ones that know TransformerLens hook names).

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
    """Validate layer indices (negative ones count from the end); None means every layer
    that calls softmax attention (hybrids: not their linear-attention / conv layers)."""
    attention = list(lm.rope.attention_layers)
    if layers is None:
        return attention
    out = []
    for layer in layers:
        idx = layer + lm.n_layers if layer < 0 else layer
        if not 0 <= idx < lm.n_layers:
            raise InputError(
                f"layer {layer} is out of range: {lm.name} has layers 0..{lm.n_layers - 1}"
            )
        if idx in lm.rope.skipped:
            shown = ", ".join(map(str, attention[:12])) + (", ..." if len(attention) > 12 else "")
            raise InputError(
                f"layer {idx} of {lm.name} is a {lm.rope.skipped[idx]} layer, not softmax "
                f"attention: there is nothing to analyse there; its attention layers are {shown}"
            )
        out.append(idx)
    return sorted(set(out))


def heads_of(lm: LoadedModel, kind: str, layer: int) -> int:
    return lm.n_heads if kind == "q" else lm.rope.kv_heads(layer)


@runtime_checkable
class Reducer(Protocol):
    """Consumes vectors batch by batch; owns its accumulators."""

    sites: Sequence[Site]

    def update(
        self, site: Site, x: Float[Tensor, "batch pos head d_head"], batch: Batch
    ) -> None: ...


# A hook body: receives the activation and the current batch; returning a tensor replaces it.
HookFn = Callable[[Tensor, Batch], Tensor | None]


def batch_to(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        batch.input_ids.to(device),
        batch.attention_mask.to(device),
        batch.positions.to(device),
        batch.count_mask.to(device),
    )


def reducer_hooks(lm: LoadedModel, reducers: Sequence[Reducer]) -> list[tuple[str, HookFn]]:
    """Hooks that hand each reducer its sites' vectors as fp32 ``[batch, pos, head, d_head]``
    (reductions always in fp32, whatever the model's dtype)."""
    out = []
    for reducer in reducers:
        for site in reducer.sites:
            name = hook_name(lm, site)

            def fn(x: Tensor, batch: Batch, reducer=reducer, site=site, name=name) -> None:
                reducer.update(
                    site,
                    to_bphd(name, x.detach(), heads_of(lm, site.kind, site.layer)).float(),
                    batch,
                )

            out.append((name, fn))
    return out


class SiteTap:
    """Native-backend tap that hands reducers their sites' vectors from the attention call."""

    needs_stats = False

    def __init__(self, reducers: Sequence[Reducer]) -> None:
        self.by_layer: dict[int, list[tuple[Reducer, Site]]] = {}
        for reducer in reducers:
            for site in reducer.sites:
                self.by_layer.setdefault(site.layer, []).append((reducer, site))
        self.layers = sorted(self.by_layer)

    def edit(self, call) -> None:
        pass

    def observe(self, call) -> None:
        for reducer, site in self.by_layer[call.layer]:
            reducer.update(site, call.bphd(site.kind, site.stage), call.batch)


def run_batches(
    lm: LoadedModel,
    batch_iter: Iterable[Batch],
    hooks: Sequence[tuple[str, HookFn]] = (),
    on_logits: Callable[[Float[Tensor, "batch pos vocab"], Batch], None] | None = None,
    last_layer: int | None = None,
    total: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    skip: int = 0,
    after_batch: Callable[[int], None] | None = None,
    taps: Sequence = (),
    merge: Sequence = (),
) -> None:
    """Run every batch once with ``hooks`` (``tl``) or ``taps`` (``native``); hand the logits to
    ``on_logits`` when given.

    Args:
        hooks: TransformerLens backend: ``(hook name, fn(activation, batch))``; several fns may
            share a name and run in order (a replacement made by one is seen by the next hook
            point, not by them).
        taps: native backend: ``rope_lens.engine.native.Tap`` objects, handed every attention
            call of their layers.
        on_logits: called with each batch's logits; without it the unembedding is skipped and
            blocks after ``last_layer`` are not computed.
        last_layer: the deepest layer any hook reads (default: the last layer).
        skip: batches at the start to pass over (already reduced by a resumed run).
        after_batch: called with the count of finished batches after each one (checkpoints).
        merge: resumable reducers fed by ``hooks`` (data-parallel runs; see below).

    Data-parallel (``rope_lens.distributed``, under torchrun / accelerate launch): when every
    consumer of the batches can be merged, each process runs only its shard of the batches
    (``skip`` / ``after_batch`` then count this rank's batches, for its own checkpoint) and the
    reducers are summed over all processes after the loop. Otherwise every process runs all
    batches. A one-process run is unchanged.
    """
    # --- data-parallel (additive): shard the batches, merge the reducers after the loop ---
    from rope_lens import distributed

    parts = distributed.mergeable(taps, hooks, on_logits, merge)
    if parts is not None:
        batch_iter, total = distributed.shard(batch_iter), distributed.shard_total(total)
        progress = progress and distributed.is_main()
    # --- end data-parallel ---
    # One bar, in real tokens (rope_lens.progress: off under --quiet, off the TTY, off rank != 0);
    # the engine below gets progress=False so it does not draw a second one in batches.
    from rope_lens.progress import track

    batch_iter = track(batch_iter, desc or lm.name, total_batches=total, skip=skip, show=progress)
    if lm.backend == "native":
        if hooks:
            raise InputError("TransformerLens hooks need the tl backend (--backend tl)")
        from rope_lens.engine import native

        native.run(
            lm.hf_model,
            lm.rope.layer_specs,
            lm.device,
            batch_iter,
            taps,
            chunks=lm.rope.layer_chunks,
            on_logits=on_logits,
            last_layer=last_layer,
            total=total,
            progress=False,  # the token bar above is the one bar
            desc=desc or lm.name,
            skip=skip,
            after_batch=after_batch,
        )
        if parts is not None:  # data-parallel: every rank now holds the one-process sums
            distributed.merge(parts)
        return
    if taps:
        raise InputError("native taps need the native backend")
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
    with torch.inference_mode():
        for index, batch in enumerate(batch_iter):
            if index < skip:
                continue
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
            if after_batch is not None:
                after_batch(index + 1)
    if parts is not None:  # data-parallel: every rank now holds the one-process sums
        distributed.merge(parts)


def stream(
    lm: LoadedModel,
    batch_iter: Iterable[Batch],
    reducers: Sequence[Reducer],
    total: int | None = None,
    progress: bool = True,
    skip: int = 0,
    after_batch: Callable[[int], None] | None = None,
) -> None:
    """Run every batch once, feeding the reducers from inside the hooks; layers after the
    last one a reducer reads are never computed. ``skip`` / ``after_batch`` as in
    :func:`run_batches`."""
    if not any(r.sites for r in reducers):
        raise InputError("nothing to extract: no layers/sites selected")
    last_layer = max(site.layer for r in reducers for site in r.sites)
    native = lm.backend == "native"
    run_batches(
        lm,
        batch_iter,
        [] if native else reducer_hooks(lm, reducers),
        taps=[SiteTap(reducers)] if native else (),
        last_layer=last_layer,
        total=total,
        progress=progress,
        skip=skip,
        after_batch=after_batch,
        merge=reducers,  # data-parallel: these are all the hooks feed (sharded if resumable)
    )


def capture(
    lm: LoadedModel, batch: Batch, sites: Sequence[Site]
) -> dict[Site, Float[Tensor, "batch pos head d_head"]]:
    """Full fp32 tensors for each site on one batch (small inputs only)."""
    store: dict[Site, Tensor] = {}

    class _Keep:
        def __init__(self) -> None:
            self.sites: Sequence[Site] = list(sites)

        def update(self, site: Site, x: Tensor, batch: Batch) -> None:
            store[site] = x.clone().cpu()

    stream(lm, [batch], [_Keep()], progress=False)
    return store
