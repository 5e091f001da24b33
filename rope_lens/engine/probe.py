"""Measure every attention layer's RoPE layout from the model's own behaviour.

Architecture-blind: nothing here reads a config key or knows a model family. One forward pass
(about 200 tokens) over short random texts, each repeated at several position offsets
(``position_ids`` shifted by ``s``), plus one text of a single repeated token, tells per layer:

- **whether the layer calls softmax attention at all**: layers that never reach transformers'
  attention interface (gated delta-net, short convolutions, Mamba) are listed, not analysed;
- **its rotation**: a relative-position model computes the same pre-rotation vectors at every
  offset, so the post-rotation queries and keys the kernel receives differ between offsets by
  RoPE's rotation alone. :mod:`rope_lens.engine.rotation_fit` reads from them which dims
  rotate, their pairing, each chunk's frequency (to ``sigma / s_max``), or that nothing rotates
  (**NoPE**), or refuses in one line when they change in some other way;
- **the attention scaling** (YaRN / LongRoPE's factor on cos and sin, invisible to shifts) from
  the ``position_embeddings`` the layer's attention module is handed, at position 0;
- **what its kernel gets**: head shapes, the window or chunk its mask applies, learned sink
  logits (``s_aux``), the score scale and soft-cap, keyword arguments nobody modelled;
- **norms and scales after rotation**: whether every received head vector has the same length
  (an RMS / L2 norm over the head, which commutes with the rotation and so is the same before
  or after it), and, on the repeated token (whose inputs are the same at every position when
  attention rows sum to one), whether q or k is scaled by a factor of the token's index
  (Llama 4's attention temperature on its NoPE layers).

Every attention output of a shifted copy is pinned to the unshifted text's (the other layers
are per token or know no position), so each layer's inputs are bit-identical at every shift and
its q / k differ by its own rotation and that rotation's rounding only, however deep the layer.
Tolerances scale with the model dtype's machine epsilon (:func:`noise_level`), so the same
probe reads fp32, bf16 and fp16 models. Shifts stay below the length where LongRoPE / dynamic
NTK / Llama-4-style scalings change regime (``max_position``, from the caller).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rope_lens.engine import native
from rope_lens.engine.rotation_fit import NotARotation, Rotation, read_rotation
from rope_lens.errors import CheckpointError
from rope_lens.inputs import Batch
from rope_lens.types import Pairing

PROBE_LEN = 16  # tokens per probe text
PROBE_TEXTS = 2  # random texts, each at every shift
SHIFT_RATIO = 16  # each shift at most this many times the last (no miscounted turn)


@dataclass(frozen=True)
class IndexScale:
    """How a layer's received q (or k) depends on the token's index, read from a text of one
    repeated token: ``"none"``, ``"scaled"`` (by up to ``factor`` over the probe's positions)
    or ``"not measured"`` (its inputs already differ by position, e.g. after a learned sink or
    a recurrent layer)."""

    kind: str
    factor: float = 1.0


@dataclass(frozen=True)
class ProbedLayer:
    """What one attention layer's kernel receives, measured.

    Attributes:
        rotation: the measured rotation, or None: the layer does not rotate (NoPE).
        attention_scaling: the factor on cos / sin at position 0 (None: the module is handed
            no ``position_embeddings``).
        handed_freq: rad/token per chunk of the ``position_embeddings`` the module is handed
            (exact fp32 of what it may rotate with; a NoPE layer is handed them too and does
            not use them), or None.
        n_heads, n_kv_heads, head_dim: shapes of the received q / k.
        window, chunk: what its mask applies (None: nothing the probe's length could see, or
            none).
        sinks: the kernel is handed learned sink logits.
        scaling, softcap: the score scale and tanh cap the kernel is handed.
        normed: per kind, the common length of every received head vector (an RMS / L2 norm
            over the head) or None.
        index_scale: per kind, see :class:`IndexScale`.
        extra_kwargs: kernel keyword arguments the engine does not model.
    """

    rotation: Rotation | None
    attention_scaling: float | None
    n_heads: int
    n_kv_heads: int
    head_dim: int
    window: int | None = None
    chunk: int | None = None
    sinks: bool = False
    scaling: float = 1.0
    softcap: float | None = None
    normed: dict[str, float | None] = field(default_factory=dict)
    index_scale: dict[str, IndexScale] = field(default_factory=dict)
    extra_kwargs: tuple[str, ...] = ()
    handed_freq: Tensor | None = None


@dataclass(frozen=True)
class Probe:
    """The measured layout: ``layers`` (attention layers only), ``skipped`` (layers that never
    call softmax attention), the shifts and the noise level used."""

    layers: dict[int, ProbedLayer]
    skipped: tuple[int, ...]
    shifts: tuple[int, ...]
    tol: float
    dtype: str

    @property
    def pairing(self) -> Pairing | None:
        """The pairing most rotating layers use (NoPE layers are cut in the same chunks)."""
        seen: list[Pairing] = [
            p.rotation.pairing for p in self.layers.values() if p.rotation is not None
        ]
        if not seen:
            return None
        return "interleaved" if seen.count("interleaved") > seen.count("half") else "half"


FP32_NOISE = 1e-5  # a floor: ~100 x fp32's epsilon (measured fits reach 6e-7)


def noise_level(dtype: torch.dtype) -> float:
    """Relative noise of the vectors a kernel receives in ``dtype`` when every position is
    shifted (inputs pinned, so only the rotation and its rounding differ): one rounding of the
    dtype (bf16: 2^-7, fp16: 2^-10), and at least ``FP32_NOISE``. fp32 angle rounding at large
    positions is added per shift (``rotation_fit.shift_tol``)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return max(eps, FP32_NOISE)


def shifts_for(max_position: int) -> tuple[int, ...]:
    """Shifts 0, 1, 16, 256, ... (each at most ``SHIFT_RATIO`` times the last), the largest
    one that keeps every probe position below ``max_position``."""
    top = max_position - PROBE_LEN
    if top < 1:
        raise CheckpointError(
            f"the model's context ({max_position} tokens) is shorter than the layout probe "
            f"({PROBE_LEN + 1} tokens)"
        )
    shifts = [0, 1]
    while shifts[-1] * SHIFT_RATIO <= top:
        shifts.append(shifts[-1] * SHIFT_RATIO)
    if top > shifts[-1]:
        shifts.append(top)
    return tuple(shifts)


class _Grab:
    """The probe's tap: every layer's received q / k and what its kernel is handed."""

    needs_stats: bool = False

    def __init__(self, layers: Sequence[int]) -> None:
        self.layers: Sequence[int] = list(layers)
        self.calls: dict[int, Any] = {}

    def edit(self, call) -> None:
        pass

    def observe(self, call) -> None:
        self.calls[call.layer] = (
            call.query.detach().float().cpu(),
            call.key.detach().float().cpu(),
            call,
        )


def probe(
    model: Any,
    n_layers: int,
    token_id: int,
    device: torch.device,
    max_position: int = 2048,
    vocab_size: int | None = None,
    prefer: Pairing | None = None,
) -> Probe:
    """Run the probe forward and read every layer's layout (see the module docstring).

    Raises:
        CheckpointError: no layer calls transformers' attention interface, or a layer's q / k
            change with the position in a way that is not a rotation (one line each, naming
            the layer and what was seen).
    """
    shifts = shifts_for(max_position)
    vocab = int(vocab_size or token_id + 1)
    gen = torch.Generator().manual_seed(0)
    low, high = max(1, vocab // 10), max(2, vocab // 2)
    texts = torch.randint(low, high, (PROBE_TEXTS, PROBE_LEN), generator=gen)
    rows = [texts] * len(shifts) + [torch.full((1, PROBE_LEN), int(token_id))]
    ids = torch.cat(rows)
    positions = torch.cat(
        [torch.arange(PROBE_LEN).expand(PROBE_TEXTS, -1) + s for s in shifts]
        + [torch.arange(PROBE_LEN)[None]]
    )
    ones = torch.ones_like(ids)
    batch = Batch(ids, ones, positions, ones.bool())

    modules = native.attention_modules(model)
    handed: dict[int, Any] = {}

    def grab(layer: int):
        def hook(module, args, kwargs):
            handed[layer] = kwargs.get("position_embeddings")

        return hook

    handles = [m.register_forward_pre_hook(grab(i), with_kwargs=True) for i, m in modules.items()]
    tap = _Grab(range(n_layers))
    try:
        native.run(
            model,
            [None] * n_layers,
            device,
            [batch],
            [tap],
            progress=False,
            pass_positions=True,
            pin_rows=_pins(len(shifts)),
        )
    finally:
        for h in handles:
            h.remove()
    if not tap.calls:
        raise CheckpointError(
            f"{type(model).__name__}: no layer calls transformers' attention interface (it "
            "computes attention its own way), so the native engine cannot see its queries and "
            "keys; try --backend tl"
        )
    dtype = next(iter(tap.calls.values()))[2].query.dtype
    tol = noise_level(dtype)
    layers = {}
    for layer in sorted(tap.calls):
        q, k, call = tap.calls[layer]
        if not (bool(torch.isfinite(q).all()) and bool(torch.isfinite(k).all())):
            raise CheckpointError(
                f"{type(model).__name__} layer {layer}: its attention receives non-finite values "
                "(NaN or inf) on ordinary text. The model's weights are likely corrupt: "
                "re-download or reconvert it (delete its cached folder), or try --dtype float32"
            )
        if call.extra_kwargs:
            raise CheckpointError(
                f"{type(model).__name__} layer {layer} hands its attention kernel "
                f"{', '.join(call.extra_kwargs)}, which rope-lens does not model, so it refuses "
                "rather than compute head scores without it; please report this model"
            )
        try:
            layers[layer] = _read_layer(q, k, call, shifts, tol, handed.get(layer), prefer)
        except NotARotation as err:
            raise CheckpointError(
                f"{type(model).__name__} layer {layer}: {err}; rope-lens cannot read its RoPE "
                "layout, so it refuses rather than mislabel its frequencies"
            ) from None
    skipped = tuple(i for i in range(n_layers) if i not in tap.calls)
    return Probe(layers, skipped, shifts, tol, str(dtype).replace("torch.", ""))


def _pins(n_shifts: int) -> tuple[Tensor, Tensor]:
    """Rows of every shifted copy of the texts, and the unshifted rows they copy: pinning
    their attention outputs to the unshifted ones keeps every layer's inputs bit-identical at
    every shift, so the only difference a layer's q / k show is its own rotation (without it,
    rounding differences compound with depth: several % by SmolLM2's middle layers in bf16)."""
    src = torch.arange(PROBE_TEXTS).repeat(n_shifts - 1)
    dst = torch.arange(PROBE_TEXTS, PROBE_TEXTS * n_shifts)
    return dst, src


def _read_layer(
    q: Tensor,
    k: Tensor,
    call: Any,
    shifts: Sequence[int],
    tol: float,
    handed: Any,
    prefer: Pairing | None,
) -> ProbedLayer:
    """One layer's layout from its received q / k ``[row, head, pos, d_head]`` (rows: the
    random texts at each shift, then the repeated token)."""
    d = q.shape[-1]
    n = PROBE_TEXTS

    def samples(x: Tensor, i: int) -> Tensor:  # the texts at shift index i, as [sample, d]
        return x[i * n : (i + 1) * n].reshape(-1, d)

    base = torch.cat([samples(q, 0), samples(k, 0)])
    moved = {s: torch.cat([samples(q, i), samples(k, i)]) for i, s in enumerate(shifts) if s}
    rotation = read_rotation(base, moved, tol, prefer=prefer, independent=PROBE_LEN)
    repeated = {"q": q[-1], "k": k[-1]}  # [head, pos, d_head]
    return ProbedLayer(
        rotation=rotation,
        attention_scaling=_handed_scaling(handed),
        handed_freq=_handed_freq(handed),
        n_heads=q.shape[1],
        n_kv_heads=k.shape[1],
        head_dim=d,
        window=call.window,
        chunk=call.chunk,
        sinks=call.sinks is not None,
        scaling=float(call.scaling),
        softcap=call.softcap,
        normed={kind: _common_length(samples(x, 0), tol) for kind, x in (("q", q), ("k", k))},
        index_scale={kind: _index_scale(x, rotation, tol) for kind, x in repeated.items()},
        extra_kwargs=tuple(call.extra_kwargs),
    )


def _handed_scaling(pe: Any) -> float | None:
    """The factor on cos / sin at position 0 of a module's ``position_embeddings``: a
    (cos, sin) pair (sin is 0 there, cos the factor) or a complex tensor (its modulus)."""
    if isinstance(pe, Tensor) and pe.is_complex():
        return float(pe.reshape(-1, pe.shape[-1])[0].abs().double().mean())
    if not (isinstance(pe, (tuple, list)) and len(pe) == 2):
        return None
    a, b = (t.detach().double().reshape(-1, t.shape[-1])[0] for t in pe)
    cos = b if a.abs().max() < b.abs().max() else a
    return float(cos.mean())


def _handed_freq(pe: Any) -> Tensor | None:
    """rad/token per chunk from a module's ``position_embeddings`` (positions 0 and 1 of the
    first text): ``atan2(sin, cos)`` of a (cos, sin) pair in rotate-half ([f, f]), interleaved
    ([f0, f0, f1, f1, ...]) or one-entry-per-chunk layout, or the angle of a complex tensor."""
    if isinstance(pe, Tensor) and pe.is_complex():
        angles = torch.angle(pe.reshape(-1, pe.shape[-1])[1].to(torch.complex128))
        return angles.clamp_min(0.0)
    if not (isinstance(pe, (tuple, list)) and len(pe) == 2 and isinstance(pe[0], Tensor)):
        return None
    if pe[0].dtype not in (torch.float32, torch.float64):
        return None  # rounded to the model's half precision: no better than the measurement
    a, b = (t.detach().double().reshape(-1, t.shape[-1])[:2] for t in pe)
    sin, cos = (a, b) if a[0].abs().max() < b[0].abs().max() else (b, a)
    entries = torch.atan2(sin[1], cos[1])
    n = entries.shape[0]
    if n % 2 == 0 and torch.allclose(entries[: n // 2], entries[n // 2 :], atol=1e-6, rtol=0):
        return entries[: n // 2].clamp_min(0.0)  # [f, f]: rotate-half layout
    if n % 2 == 0 and torch.allclose(entries[0::2], entries[1::2], atol=1e-6, rtol=0):
        return entries[0::2].clamp_min(0.0)  # [f0, f0, f1, f1, ...]: interleaved
    return entries.clamp_min(0.0)  # one entry per chunk (GPT-J)


def _common_length(x: Tensor, tol: float) -> float | None:
    """The length every head vector of ``x`` ``[sample, d_head]`` has, if they all have one."""
    lengths = torch.linalg.vector_norm(x.double(), dim=-1)
    mean = float(lengths.mean())
    if mean == 0 or float((lengths - mean).abs().max()) > 10 * tol * mean:
        return None
    return mean


def _index_scale(x: Tensor, rotation: Rotation | None, tol: float) -> IndexScale:
    """Un-rotate the repeated token's vectors ``[head, pos, d_head]``; equal vectors at every
    position: no index dependence; parallel ones of other lengths: a scale by the index."""
    from rope_lens.rope import chunk_dims, rotate_chunks

    v = x.double()
    if rotation is not None:
        idx = chunk_dims(v.shape[-1], rotation.rotary_dim, rotation.pairing)
        idx = idx.flip(-1) if rotation.clockwise else idx
        pos = torch.arange(v.shape[1], dtype=torch.float64)
        chunks = rotate_chunks(v[..., idx], -pos[None, :, None] * rotation.turning_freq())
        v = torch.empty_like(v)
        v[..., idx.reshape(-1)] = chunks.reshape(*chunks.shape[:-2], -1)
    ref = v[:, :1]
    lengths = torch.linalg.vector_norm(v, dim=-1)
    ref_len = lengths[:, :1].clamp_min(1e-30)
    cos = (v * ref).sum(-1) / (lengths * ref_len).clamp_min(1e-30)
    turned = (2 * (1 - cos).clamp_min(0)).sqrt()  # ~ the angle between them
    if float(turned.max()) > 10 * tol:
        return IndexScale("not measured")
    ratio = lengths / ref_len
    if float((ratio - 1).abs().max()) <= 10 * tol:
        return IndexScale("none")
    return IndexScale("scaled", float(ratio.max()))
