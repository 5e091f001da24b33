"""Read a model's RoPE layout from its own rotation: architecture-blind, no config parsing.

One forward pass over three copies of one token (positions 0, 1, 2) tells us, per layer:

- the ``position_embeddings`` its attention module receives (cos / sin, in whatever order and
  layout the architecture uses): the frequency of every rotated entry is ``atan2(sin, cos)`` at
  position 1, the attention scaling (YaRN / LongRoPE) is ``cos`` at position 0;
- the shapes of its post-rotation queries and keys (heads, KV heads, head size per layer);
- in layer 0, whose inputs are identical at the three positions (same token, no absolute
  position embedding), the model's *own rotation* of one vector: ``q(1) = R(g) q(0)``. Under the
  right pairing every 2-D chunk keeps its norm between positions; under the wrong one it does
  not. That fixes the pairing (rotate-half or interleaved) from the model's behaviour, not from
  a list of architecture names.

Nothing here knows an architecture; models that do not hand ``position_embeddings`` to their
attention module get ``None`` per layer and the caller falls back to the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rope_lens.engine import native
from rope_lens.errors import CheckpointError
from rope_lens.inputs import Batch
from rope_lens.types import Pairing


@dataclass(frozen=True)
class ProbedLayer:
    """What one layer's rotation looks like from the inside.

    Attributes:
        inv_freq: rad/token of each rotated chunk (``rotary_dim // 2`` entries, fp64), or None
            when the layer's attention module received no ``position_embeddings``.
        attention_scaling: the factor cos/sin carry (1 unless YaRN / LongRoPE).
        n_heads, n_kv_heads, head_dim: shapes of the post-rotation q / k.
        window: the sliding window its attention call masks with (None: full causal), as the
            kernel receives it: Mistral-style models slide in every layer without any
            "sliding" layer type.
    """

    inv_freq: Tensor | None
    attention_scaling: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    window: int | None = None


@dataclass(frozen=True)
class Probe:
    layers: dict[int, ProbedLayer]
    pairing: Pairing | None  # None: the layer-0 rotation could not tell (degenerate vectors)
    pairing_errors: dict[str, float]


class _ShapeTap:
    needs_stats: bool = False

    def __init__(self, layers) -> None:
        self.layers: Sequence[int] = list(layers)
        self.calls: dict[int, tuple[Tensor, Tensor]] = {}
        self.windows: dict[int, int | None] = {}

    def edit(self, call) -> None:
        pass

    def observe(self, call) -> None:
        self.calls[call.layer] = (call.query[0].float().clone(), call.key[0].float().clone())
        self.windows[call.layer] = call.window


def probe(model: Any, n_layers: int, token_id: int, device: torch.device) -> Probe:
    """Run the three-token forward and decode every layer's rotation."""
    modules = native.attention_modules(model)
    grabbed: dict[int, Any] = {}

    def grab(layer: int):
        def hook(module, args, kwargs):
            grabbed[layer] = kwargs.get("position_embeddings")

        return hook

    handles = [m.register_forward_pre_hook(grab(i), with_kwargs=True) for i, m in modules.items()]
    tap = _ShapeTap(range(n_layers))
    ids = torch.full((1, 3), int(token_id), dtype=torch.long)
    batch = Batch(ids, torch.ones_like(ids), torch.arange(3)[None], torch.ones_like(ids).bool())
    try:
        native.run(model, [None] * n_layers, device, [batch], [tap], progress=False)
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(range(n_layers)) - set(tap.calls))
    if missing:
        raise CheckpointError(
            f"{type(model).__name__}: layer {missing[0]} never called transformers' attention "
            "interface (it computes attention its own way), so the native engine cannot see "
            "its queries and keys; try --backend tl"
        )
    layers = {}
    for layer in range(n_layers):
        q, k = tap.calls[layer]
        inv, scaling = _decode(grabbed.get(layer))
        window = tap.windows.get(layer)
        layers[layer] = ProbedLayer(inv, scaling, q.shape[0], k.shape[0], q.shape[-1], window)
    pairing, errors = _pairing_from_rotation(tap.calls[0][0], layers[0])
    return Probe(layers, pairing, errors)


def _decode(pe: Any) -> tuple[Tensor | None, float]:
    """(inv_freq, attention_scaling) from a layer's ``position_embeddings``."""
    if not (isinstance(pe, (tuple, list)) and len(pe) == 2):
        return None, 1.0
    a, b = (t.detach().double().reshape(-1, t.shape[-1])[-3:] for t in pe)
    # sin is 0 at position 0; cos equals the attention scaling there.
    sin, cos = (a, b) if a[0].abs().max() < b[0].abs().max() else (b, a)
    scaling = float(cos[0].mean())
    entries = torch.atan2(sin[1], cos[1])
    n = entries.shape[0]
    tol = 1e-6
    if n % 2 == 0 and torch.allclose(entries[: n // 2], entries[n // 2 :], atol=tol, rtol=0):
        inv = entries[: n // 2]  # [f, f] (rotate-half layout of cos/sin)
    elif n % 2 == 0 and torch.allclose(entries[0::2], entries[1::2], atol=tol, rtol=0):
        inv = entries[0::2]  # [f0, f0, f1, f1, ...] (interleaved layout)
    else:
        inv = entries  # one entry per chunk (GPT-J)
    return inv.clamp_min(0.0), scaling


def _pairing_from_rotation(
    q: Tensor, layer: ProbedLayer
) -> tuple[Pairing | None, dict[str, float]]:
    """Which pairing keeps every chunk's norm between positions 0 and 1 of layer 0."""
    from rope_lens.rope import chunk_dims

    if layer.inv_freq is None:
        return None, {}
    rot = 2 * len(layer.inv_freq)
    moving = layer.inv_freq > 1e-3  # chunks that turn visibly between positions 0 and 1
    errors: dict[str, float] = {}
    for pairing in ("half", "interleaved"):
        idx = chunk_dims(layer.head_dim, rot, pairing)[: rot // 2]
        n0 = torch.hypot(q[:, 0, idx[:, 0]], q[:, 0, idx[:, 1]])
        n1 = torch.hypot(q[:, 1, idx[:, 0]], q[:, 1, idx[:, 1]])
        scale = n0.mean().clamp_min(1e-12)
        errors[pairing] = float(((n1 - n0).abs()[:, moving]).max() / scale) if moving.any() else 0.0
    good = [p for p, e in errors.items() if e < 1e-3]
    return (good[0] if len(good) == 1 else None), errors  # type: ignore[return-value]
