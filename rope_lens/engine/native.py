"""The native engine: analyses run inside the model's own attention call.

Every modern transformers decoder computes q / k / v, applies QK-norm and RoPE, then calls
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, query, key, value, mask, ...)``
with ``query`` ``[batch, head, pos, d_head]`` and ``key`` / ``value`` ``[batch, kv_head, pos,
d_head]`` (GQA not repeated), post-RoPE. We register our own implementation names
(``rope_lens_sdpa``, ``rope_lens_eager``, ``rope_lens_flash_attention_2``) whose function hands
an :class:`AttentionCall` to the analyses' taps and then calls the real kernel, so a forward
costs what a bare sdpa forward costs plus what the taps compute. This is the only module that
knows the attention interface.

Traps handled here (each has a test):

- A new implementation name needs its attention-mask function registered too, or no mask is
  built for it and Gemma 2/3 sliding windows silently vanish: each name registers the mask
  function of the kernel it wraps.
- ``use_cache=False``: the cache update runs before the attention call.
- Soft-capped models (Gemma 2) wrap the eager kernel (sdpa refuses ``softcap``); so do models
  whose class declares no sdpa support (gpt-oss: its learned sinks need its own eager kernel).
- The mask each call receives is the truth about which keys a query sees: when it is a tensor
  its pattern is read (causal, sliding window, chunks) and used by the analyses' kernels; a
  pattern they cannot express (an additive bias, a hole) is refused in one line.
- Learned sink logits reach the kernel as ``s_aux``: the call carries them, and every
  softmax the analyses compute includes them.
- Layers after the last one any tap reads are never computed: the call raises ``_Stop`` after
  the taps of that layer have run (and before its kernel), which ends the forward.

Outside a run the registered function is the wrapped kernel itself, so the model stays an
ordinary transformers model for anything else the user does with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from rope_lens.engine.kernels import (
    AttentionStats,
    allowed,
    attention_stats,
    per_query_head,
    visibility_of,
)
from rope_lens.inputs import Batch
from rope_lens.rope import RopeError, RopeSpec

PREFIX = "rope_lens_"
BASES = ("sdpa", "eager", "flash_attention_2")


class _Stop(Exception):
    """Raised inside the last layer a run needs: the rest of the forward is not computed."""


@dataclass
class AttentionCall:
    """One layer's attention inputs for one batch, as the model's kernel receives them.

    ``query`` / ``key`` are post-rotation (and post-QK-norm) ``[batch, head, pos, d_head]`` in
    the model's dtype; editors may replace them (and ``value``) before the kernel runs. Views
    for reducers come from :meth:`bphd`, always fp32 ``[batch, pos, head, d_head]``.
    """

    layer: int
    query: Tensor
    key: Tensor
    value: Tensor
    scaling: float
    softcap: float | None
    window: int | None
    batch: Batch
    spec: RopeSpec | None  # None only while the layout itself is being probed
    chunk: int | None = None  # chunked attention: keys in the query's chunk only
    sinks: Tensor | None = None  # one learned sink logit per query head (fp32), or None
    extra_kwargs: tuple[str, ...] = ()  # kernel keyword arguments the engine does not model
    needs_stats: bool = False
    needs_spread: bool = False
    stats: AttentionStats | None = None
    _cache: dict[str, Tensor] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        # Views computed from q / k / v are stale once an editor replaces one of them.
        if name in ("query", "key", "value") and "_cache" in self.__dict__:
            self._cache.clear()
        object.__setattr__(self, name, value)

    @property
    def n_heads(self) -> int:
        return self.query.shape[1]

    @property
    def group(self) -> int:
        return self.query.shape[1] // self.key.shape[1]

    def keys_per_query_head(self) -> Float[Tensor, "batch head pos d_head"]:
        """Keys repeated to the query heads (GQA), post-rotation, model dtype (computed once
        per call; replacing ``key`` clears it)."""
        if self.group == 1:
            return self.key
        if "k/per-head" not in self._cache:
            self._cache["k/per-head"] = per_query_head(self.key, self.n_heads)
        return self._cache["k/per-head"]

    def bphd(self, kind: str, stage: str) -> Float[Tensor, "batch pos head d_head"]:
        """fp32 ``[batch, pos, head, d_head]`` view of q / k / v; ``stage="pre"`` undoes the
        rotation with the layer's frequencies (fp32 angles, as transformers computes them)."""
        key = f"{kind}/{stage}"
        if key not in self._cache:
            x = {"q": self.query, "k": self.key, "v": self.value}[kind]
            x = x.transpose(1, 2).float()
            if stage == "pre" and kind != "v":
                assert self.spec is not None, "no RoPE layout yet"
                x = unrotate(x, self.batch.positions, self.spec)
            self._cache[key] = x
        return self._cache[key]


def model_angles(positions: Tensor, spec: RopeSpec) -> Float[Tensor, "batch pos chunk"]:
    """Rotation angle of every chunk, computed in fp32 the way transformers' rotary modules do
    (``position.float() * inv_freq``), so un-rotating the model's vectors is exact."""
    spec.check_positions(positions)
    freq = spec.frequencies().to(positions.device, torch.float32)
    return positions.float()[..., None] * freq


def unrotate(
    x: Float[Tensor, "batch pos head d_head"], positions: Tensor, spec: RopeSpec
) -> Float[Tensor, "batch pos head d_head"]:
    """The pre-rotation vector of a post-rotation ``x`` (attention scaling divided out)."""
    theta = model_angles(positions, spec)[:, :, None, :]
    cos, sin = torch.cos(theta), torch.sin(theta)
    idx = spec.dims().to(x.device)
    a, b = x[..., idx[:, 0]], x[..., idx[:, 1]]
    out = torch.empty_like(x)
    out[..., idx[:, 0]] = a * cos + b * sin
    out[..., idx[:, 1]] = b * cos - a * sin
    return out / spec.attention_scaling


def rotate(
    x: Float[Tensor, "batch pos head d_head"], positions: Tensor, spec: RopeSpec
) -> Float[Tensor, "batch pos head d_head"]:
    """Inverse of :func:`unrotate` (attention scaling applied, fp32 model angles)."""
    theta = model_angles(positions, spec)[:, :, None, :]
    cos, sin = torch.cos(theta), torch.sin(theta)
    idx = spec.dims().to(x.device)
    a, b = x[..., idx[:, 0]], x[..., idx[:, 1]]
    out = torch.empty_like(x)
    out[..., idx[:, 0]] = a * cos - b * sin
    out[..., idx[:, 1]] = b * cos + a * sin
    return out * spec.attention_scaling


@runtime_checkable
class Tap(Protocol):
    """Something an analysis plugs into the attention calls of ``layers``.

    ``edit(call)`` may replace ``call.query`` / ``call.key`` / ``call.value`` before the kernel
    (ablations); ``observe(call)`` reads them afterwards (reducers). ``needs_stats`` asks the
    engine for ``call.stats`` (the log-sum-exp of the edited q / k); a tap that also sets
    ``needs_spread = True`` gets the weighted score and position sums (entropy, mean distance),
    at about a second attention's cost."""

    layers: Sequence[int]
    needs_stats: bool

    def edit(self, call: AttentionCall) -> None: ...

    def observe(self, call: AttentionCall) -> None: ...


class _KernelView:
    """The attention module as the kernel should see it after an editor expanded keys and
    values to one per query head: no further GQA repetition."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.num_key_value_groups = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


# Keyword arguments of the attention interface whose effect the engine models (or that do not
# change the attention of one forward without a cache): anything else is recorded on the call
# and refused by the layout probe, so no table is computed under an effect nobody modelled.
KNOWN_KWARGS = frozenset(
    {
        "sliding_window",  # the window (also read from the mask)
        "softcap",  # Gemma 2's tanh cap
        "s_aux",  # learned sink logits (gpt-oss)
        "position_ids",
        "use_cache",
        "cache_position",
        "output_attentions",
        "output_router_logits",
        "is_causal",
        "cu_seq_lens_q",
        "cu_seq_lens_k",
        "max_length_q",
        "max_length_k",
    }
)


class _Run:
    """State of one forward pass: the taps by layer, the batch, where to stop."""

    def __init__(
        self,
        specs: Sequence[RopeSpec | None],
        taps: Sequence[Tap],
        batch: Batch,
        stop_after: int | None,
        chunks: Sequence[int | None] = (),
        pin_rows: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.specs = specs
        self.chunks = chunks
        self.pin_rows = pin_rows
        self.batch = batch
        self.stop_after = stop_after
        self.by_layer: dict[int, list[Tap]] = {}
        for tap in taps:
            for layer in tap.layers:
                self.by_layer.setdefault(layer, []).append(tap)

    def attend(self, base: Callable, module: Any, query, key, value, mask, scaling, dropout, kw):
        layer = int(module.layer_idx)
        taps = self.by_layer.get(layer, ())
        kernel_module = module
        if taps:
            if scaling is None:
                scaling = query.shape[-1] ** -0.5
            window = kw.get("sliding_window", getattr(module, "sliding_window", None))
            window = int(window) if window else None
            chunk = self.chunks[layer] if layer < len(self.chunks) else None
            window, chunk = _visibility(mask, self.batch, window, chunk, layer)
            sinks = kw.get("s_aux")
            call = AttentionCall(
                layer=layer,
                query=query,
                key=key,
                value=value,
                scaling=float(scaling),
                softcap=kw.get("softcap"),
                window=window,
                batch=self.batch,
                spec=self.specs[layer],
                chunk=chunk,
                sinks=sinks.detach().float() if isinstance(sinks, Tensor) else None,
                extra_kwargs=tuple(sorted(set(kw) - KNOWN_KWARGS)),
                needs_stats=any(t.needs_stats for t in taps),
                needs_spread=any(getattr(t, "needs_spread", False) for t in taps),
            )
            kv_heads = key.shape[1]
            for tap in taps:
                tap.edit(call)
            output = None
            if call.needs_stats and not getattr(module, "is_causal", True):
                # The stats kernels are causal; a bidirectional layer would get wrong scores.
                raise RopeError(
                    f"layer {layer} attends bidirectionally: head scores need causal attention"
                )
            if call.needs_stats:
                # The stats kernel also computes this layer's output (one softmax, not two):
                # in the model's dtype for the log-sum-exp alone, in fp32 with the spread
                # (so only for fp32 models on CPU). Elsewhere the model's kernel runs after.
                spread_ok = query.device.type == "cpu" and call.query.dtype == torch.float32
                fuse = (
                    (spread_ok or not call.needs_spread)
                    and not dropout
                    and not (self.stop_after is not None and layer >= self.stop_after)
                )
                call.stats, output = attention_stats(
                    call.query,
                    call.key,
                    call.scaling,
                    call.softcap,
                    call.window,
                    value=call.value if fuse else None,
                    spread=call.needs_spread,
                    chunk=call.chunk,
                    sinks=call.sinks,
                )
            for tap in taps:
                tap.observe(call)
            if self.stop_after is not None and layer >= self.stop_after:
                raise _Stop
            if output is not None:
                return self._pinned(output.transpose(1, 2).contiguous()), None
            query, key, value = call.query, call.key, call.value
            if key.shape[1] != kv_heads and key.shape[1] == query.shape[1]:
                kernel_module = _KernelView(module)
        if self.stop_after is not None and layer >= self.stop_after:
            raise _Stop
        out, weights = base(
            kernel_module, query, key, value, mask, scaling=scaling, dropout=dropout, **kw
        )
        return self._pinned(out), weights

    def _pinned(self, out: Tensor) -> Tensor:
        """``out`` ``[batch, pos, ...]`` with rows ``pin_rows[0]`` replaced by rows
        ``pin_rows[1]`` (the layout probe keeps shifted copies of a text bit-identical to it
        downstream, so each layer sees exactly the same inputs at every shift)."""
        if self.pin_rows is None:
            return out
        dst, src = self.pin_rows
        out = out.clone()
        out[dst.to(out.device)] = out[src.to(out.device)]
        return out


def _visibility(
    mask: Any, batch: Batch, window: int | None, chunk: int | None, layer: int
) -> tuple[int | None, int | None]:
    """The (window, chunk) this call masks with. The declared ones (the call's keyword, the
    module's attribute, the layout) are checked against the mask the kernel receives when it
    is a tensor (sdpa and eager materialise one whenever it is not plain causal): where they
    differ, the mask is what the kernel uses, so its pattern wins. None (no tensor) means the
    kernel masks causally itself, with the window it was handed (flash)."""
    if not isinstance(mask, Tensor) or mask.dim() != 4:
        return window, chunk
    row = int(batch.attention_mask.sum(1).argmax())
    n = int(batch.attention_mask[row].sum())
    m = mask[row, 0, :n, :n]
    if m.dtype == torch.bool:
        visible = m
    else:  # additive: 0 where visible, a large negative number where not
        visible = m > torch.finfo(m.dtype).min / 2
        if bool((m[visible] != 0).any()):
            raise RopeError(
                f"layer {layer} adds a bias to its attention scores through the mask (e.g. "
                "ALiBi): rope-lens does not model it, so its head scores would be wrong"
            )
    pos = torch.arange(n, device=m.device)
    if torch.equal(allowed(pos[:, None], pos[None, :], window, chunk), visible):
        return window, chunk
    read = visibility_of(visible)
    if read is None:
        raise RopeError(
            f"layer {layer} masks its keys in a pattern rope-lens does not model (not causal "
            "with a sliding window or chunks): its head scores would be wrong"
        )
    return read


_CURRENT: list[_Run] = []  # the run in progress (a stack: nested runs are not supported)


def _base_kernel(base: str, module: Any) -> Callable:
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    if base == "flash_attention_2":
        from transformers.integrations.flash_attention import flash_attention_forward

        return flash_attention_forward
    # eager: each model file has its own eager function (softcap, sinks, ...)
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(f"{type(module).__name__} has no eager_attention_forward")
    return fn


def _make_attention(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        kernel = _base_kernel(base, module)
        if not _CURRENT:
            return kernel(
                module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kw
            )
        return _CURRENT[-1].attend(
            kernel, module, query, key, value, attention_mask, scaling, dropout, kw
        )

    return attention


_REGISTERED: set[str] = set()


def register(base: str = "sdpa") -> str:
    """Register the wrapping implementation for ``base`` (and its mask function); returns the
    implementation name to give the model."""
    from transformers import AttentionInterface
    from transformers import masking_utils as mu

    if base not in BASES:
        raise ValueError(f"unknown attention kernel {base!r}; choose from {', '.join(BASES)}")
    name = PREFIX + base
    if name not in _REGISTERED:
        masks = {
            "sdpa": mu.sdpa_mask,
            "eager": mu.eager_mask,
            "flash_attention_2": mu.flash_attention_mask,
        }
        AttentionInterface.register(name, _make_attention(base))
        mu.AttentionMaskInterface.register(name, masks[base])
        _REGISTERED.add(name)
    return name


def base_kernel_for(model: Any, device: str) -> str:
    """sdpa, except eager for soft-capped attention (sdpa refuses ``softcap``; flash would do
    on a GPU with flash-attn installed) and for models whose class declares no sdpa support
    (gpt-oss: its learned sinks are in its own eager kernel)."""
    config = model.config
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    import importlib.util

    has_flash = importlib.util.find_spec("flash_attn") is not None
    flash_ok = has_flash and device.startswith("cuda") and getattr(model, "_supports_flash_attn", 0)
    if getattr(cfg, "attn_logit_softcapping", None) or not getattr(model, "_supports_sdpa", True):
        return "flash_attention_2" if flash_ok else "eager"
    return "sdpa"


def install(model: Any, base: str) -> None:
    """Point ``model`` at the wrapping implementation of ``base``."""
    name = register(base)
    model.set_attn_implementation(name)


def attention_modules(model: Any) -> dict[int, Any]:
    """The decoder's attention modules by ``layer_idx`` (text tower only)."""
    out: dict[int, Any] = {}
    for name, module in model.named_modules():
        if any(part in name for part in ("vision", "audio", "visual")):
            continue
        if hasattr(module, "layer_idx") and "attention" in type(module).__name__.lower():
            out.setdefault(int(module.layer_idx), module)
    return out


def run(
    model: Any,
    specs: Sequence[RopeSpec | None],
    device: torch.device,
    batch_iter: Iterable[Batch],
    taps: Sequence[Tap],
    on_logits: Callable[[Tensor, Batch], None] | None = None,
    last_layer: int | None = None,
    total: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    skip: int = 0,
    after_batch: Callable[[int], None] | None = None,
    chunks: Sequence[int | None] = (),
    pass_positions: bool = False,
    pin_rows: tuple[Tensor, Tensor] | None = None,
) -> None:
    """Run every batch once with ``taps`` in the attention calls.

    Without ``on_logits`` the forward ends inside the last layer a tap reads (default: the
    last layer), so neither the later layers nor the unembedding are computed. ``chunks``:
    each layer's attention chunk (Llama 4), checked against its mask. ``pass_positions``
    hands the model ``batch.positions`` as ``position_ids`` (the layout probe shifts them);
    otherwise the model numbers the slots itself, as in any ordinary forward. ``pin_rows``
    (``dst``, ``src``): every attention output of rows ``dst`` is replaced by that of rows
    ``src`` (the probe's shifted copies of a text stay bit-identical to it downstream).
    """
    n_layers = len(specs)
    if on_logits is None:
        deepest = max((layer for t in taps for layer in t.layers), default=n_layers - 1)
        stop = deepest if last_layer is None else max(deepest, last_layer)
    else:
        stop = None
    bar = tqdm(batch_iter, total=total, disable=not progress, unit="batch", desc=desc)
    with torch.inference_mode():
        for index, batch in enumerate(bar):
            if index < skip:
                continue
            batch = _batch_to(batch, device)
            _CURRENT.append(_Run(specs, taps, batch, stop, chunks, pin_rows))
            extra = {"position_ids": batch.positions} if pass_positions else {}
            try:
                out = model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    use_cache=False,
                    **extra,
                )
            except _Stop:
                out = None
            finally:
                _CURRENT.pop()
            if on_logits is not None:
                assert out is not None  # no stop when the logits are wanted
                on_logits(out.logits, batch)
            if after_batch is not None:
                after_batch(index + 1)


def _batch_to(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        batch.input_ids.to(device),
        batch.attention_mask.to(device),
        batch.positions.to(device),
        batch.count_mask.to(device),
    )
