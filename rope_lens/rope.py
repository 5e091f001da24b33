"""Pure RoPE frequency math: inverse frequencies, chunk views, rotation, and p-RoPE variants.

No model access here. Everything is plain torch so that the theory, training and analysis
code share one definition of "frequency chunk k".

Conventions (see ``rope_lens.types``):

- A head vector of size ``d_head`` splits into ``d_head // 2`` two-dimensional chunks.
- Chunk 0 is the highest frequency (1 rad/token for standard RoPE); the last rotated chunk is
  the lowest (~1/theta). The paper's 1-based ``g_k`` is chunk ``k - 1`` here.
- ``pairing="half"`` (HF ``rotate_half``; JAX Gemma, the paper's own p-RoPE listing): chunk k is
  dims ``(k, k + r/2)`` of the first ``r = rotary_dim`` dims. ``pairing="interleaved"``: dims
  ``(2k, 2k + 1)``.
- Dims beyond ``rotary_dim`` (GPT-NeoX style partial rotary) form extra chunks of frequency 0,
  paired the same way among themselves, so every dim belongs to exactly one chunk.

References: Su et al. (RoFormer); transformers 5.23 ``modeling_rope_utils`` (linear, llama3,
yarn, proportional); for p-RoPE, Barbero et al., "Round and Round We Go! What makes Rotary
Positional Encodings useful?" (ICLR 2025), §6.1 and the JAX listing in its App. D.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rope_lens.errors import RopeLensError
from rope_lens.types import Pairing


class RopeError(RopeLensError, ValueError):
    """Raised for an impossible RoPE specification (odd head_dim, p outside [0, 1], ...)."""


@dataclass(frozen=True, eq=False)
class RopeSpec:
    """How one attention layer rotates its queries and keys.

    Attributes:
        head_dim: size of each head vector.
        inv_freq: rad/token of each rotated chunk, shape ``[rotary_dim // 2]``, highest first.
            Zeros mean "not rotated" (p-RoPE / proportional RoPE).
        pairing: chunk layout, ``"half"`` or ``"interleaved"``.
        attention_scaling: factor HF multiplies cos and sin by (YaRN's mscale; 1 otherwise).
        rope_type: name of the scaling rule that produced ``inv_freq`` (for reports).
        theta: the base wavelength.
        valid_positions: sequence length up to which the model rotates with ``inv_freq``;
            None when it always does. LongRoPE switches to its long factors, and dynamic NTK
            raises its base, for longer sequences: rotating or un-rotating with these
            frequencies past that length would be silently wrong, so it is refused.
        clockwise: the model turns each chunk from its second dim towards its first
            (nanochat); :meth:`dims` then lists each chunk's dims in the order that turns
            counter-clockwise, so every rotation here keeps one convention.
    """

    head_dim: int
    inv_freq: Float[Tensor, " rot_chunk"]
    pairing: Pairing = "half"
    attention_scaling: float = 1.0
    rope_type: str = "default"
    theta: float = 10_000.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    valid_positions: int | None = None
    clockwise: bool = False

    def __post_init__(self) -> None:
        if self.head_dim < 2 or self.head_dim % 2:
            raise RopeError(f"head_dim must be even and >= 2, got {self.head_dim}")
        if self.pairing not in ("half", "interleaved"):
            raise RopeError(f"pairing must be 'half' or 'interleaved', got {self.pairing!r}")
        if 2 * len(self.inv_freq) > self.head_dim:
            raise RopeError(
                f"{len(self.inv_freq)} frequencies do not fit in head_dim {self.head_dim}"
            )
        object.__setattr__(self, "inv_freq", self.inv_freq.detach().to("cpu", torch.float64))

    @property
    def rotary_dim(self) -> int:
        return 2 * len(self.inv_freq)

    def dims(self) -> Int[Tensor, "chunk 2"]:
        """The two dims of every chunk, in the order the model turns them counter-clockwise
        (:func:`chunk_dims`, each pair reversed for a clockwise model)."""
        idx = chunk_dims(self.head_dim, self.rotary_dim, self.pairing)
        return idx.flip(-1) if self.clockwise else idx

    @property
    def n_chunks(self) -> int:
        return self.head_dim // 2

    def frequencies(self) -> Float[Tensor, " chunk"]:
        """rad/token per chunk over the whole head (0 for unrotated chunks)."""
        tail = torch.zeros(self.n_chunks - len(self.inv_freq), dtype=torch.float64)
        return torch.cat([self.inv_freq, tail])

    def wavelengths(self) -> Float[Tensor, " chunk"]:
        """Tokens per full turn, 2π/frequency (inf for unrotated chunks)."""
        return wavelengths(self.frequencies())

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (for sidecars and reports)."""
        freq = self.frequencies()
        rotating = freq[freq > 0]
        return {
            "rope_type": self.rope_type,
            "theta": self.theta,
            "head_dim": self.head_dim,
            "rotary_dim": self.rotary_dim,
            "pairing": self.pairing,
            **({"turns": "clockwise"} if self.clockwise else {}),
            "attention_scaling": self.attention_scaling,
            "n_rotating_chunks": int(len(rotating)),
            "highest_frequency": float(rotating.max()) if len(rotating) else 0.0,
            "lowest_frequency": float(rotating.min()) if len(rotating) else 0.0,
            **(
                {"frequencies_valid_to_tokens": self.valid_positions}
                if self.valid_positions
                else {}
            ),
            **{k: v for k, v in self.extra.items()},
        }

    def check_positions(self, positions: Tensor) -> None:
        """Refuse positions whose rotation these frequencies do not describe (see
        ``valid_positions``), in one line that says what to do."""
        if self.valid_positions is None or positions.numel() == 0:
            return
        length = int(positions.max()) + 1
        if length > self.valid_positions:
            raise RopeError(
                f"{self.rope_type} RoPE changes its frequencies past {self.valid_positions} "
                f"tokens (this batch has {length}): views before rotation and rotation "
                f"ablations need --max-len {self.valid_positions} or less (band norms and "
                "head scores do not)"
            )


# ---------------------------------------------------------------------------------------------
# Inverse frequencies for each rope type
# ---------------------------------------------------------------------------------------------


def default_inv_freq(theta: float, dim: int) -> Float[Tensor, " rot_chunk"]:
    """Standard RoPE: g_k = theta^(-2k/dim), k = 0 .. dim/2 - 1 (highest first)."""
    if dim < 2 or dim % 2:
        raise RopeError(f"rotary dim must be even and >= 2, got {dim}")
    if theta <= 1:
        raise RopeError(f"theta must be > 1, got {theta}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return 1.0 / (theta**exponents)


def linear_inv_freq(theta: float, dim: int, factor: float) -> Float[Tensor, " rot_chunk"]:
    """Position interpolation: every frequency divided by ``factor``."""
    return default_inv_freq(theta, dim) / factor


def llama3_inv_freq(
    theta: float,
    dim: int,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
) -> Float[Tensor, " rot_chunk"]:
    """Llama 3.1's frequency-dependent scaling (NTK-by-parts with a smooth ramp)."""
    inv_freq = default_inv_freq(theta, dim)
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = original_max_position_embeddings / low_freq_factor
    high_freq_wavelen = original_max_position_embeddings / high_freq_factor
    # Long wavelengths are interpolated, short ones kept, the middle blended.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, blended, scaled)


def yarn_inv_freq(
    theta: float,
    dim: int,
    factor: float,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    truncate: bool = True,
    attention_factor: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
) -> tuple[Float[Tensor, " rot_chunk"], float]:
    """YaRN (Peng et al. 2023) as in transformers: returns (inv_freq, attention_scaling)."""

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = get_mscale(factor)

    def correction_dim(n_rot: float) -> float:
        return (dim * math.log(original_max_position_embeddings / (n_rot * 2 * math.pi))) / (
            2 * math.log(theta)
        )

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp, as transformers does
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrapolation = default_inv_freq(theta, dim)
    interpolation = extrapolation / factor
    keep = 1 - ramp  # 1 for high frequencies (kept), 0 for low ones (interpolated)
    return interpolation * (1 - keep) + extrapolation * keep, float(attention_factor)


def p_rope_inv_freq(theta: float, head_dim: int, p: float) -> Float[Tensor, " chunk"]:
    """p-RoPE (the paper's §6.1 and App. D): keep the highest ``int(p * head_dim / 2)``
    standard frequencies, make the lowest ones rotation-free (frequency 0). p = 1 is RoPE,
    p = 0 is NoPE.

    The kept frequencies are not re-spaced: they are exactly standard RoPE's ``g_1 .. g_m``.
    """
    _check_fraction(p)
    n_rotating = int(p * head_dim / 2)
    freq = default_inv_freq(theta, head_dim)
    freq[n_rotating:] = 0.0
    return freq


def reversed_p_rope_inv_freq(theta: float, head_dim: int, p: float) -> Float[Tensor, " chunk"]:
    """p-RoPE_reversed: keep the *lowest* fraction p, make the highest ``1 - p`` rotation-free.

    For p = 0.75 and head_dim 256 the 32 highest chunks are NoPE and chunks 32..127 rotate
    (the paper's Table 2 row "0.75-RoPE_reversed", §6.1: "removing the highest frequencies").
    """
    _check_fraction(p)
    n_fixed = head_dim // 2 - int(p * head_dim / 2)
    freq = default_inv_freq(theta, head_dim)
    freq[:n_fixed] = 0.0
    return freq


def partial_rotary_dim(head_dim: int, fraction: float) -> int:
    """GPT-NeoX-style partial rotary: how many leading dims rotate (even, as transformers)."""
    _check_fraction(fraction)
    dim = int(head_dim * fraction)
    return dim - dim % 2


def _check_fraction(p: float) -> None:
    if not (isinstance(p, int | float) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise RopeError(f"p must be a number in [0, 1], got {p!r}")


def spec_from_rope_parameters(
    params: Mapping[str, Any],
    head_dim: int,
    pairing: Pairing = "half",
    max_position_embeddings: int | None = None,
) -> RopeSpec:
    """Build a RopeSpec from an HF-style ``rope_parameters`` dict (one layer type).

    Supports rope types default, linear, dynamic (at its base length), llama3, yarn and
    proportional, with ``partial_rotary_factor`` handled as transformers does: proportional
    RoPE keeps the full head and zeroes the tail frequencies (p-RoPE), every other type rotates
    only the first ``head_dim * factor`` dims with frequencies recomputed over them (NeoX).
    """
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    if "rope_theta" not in params:
        raise RopeError(f"rope_parameters has no rope_theta: {dict(params)}")
    theta = float(params["rope_theta"])
    fraction = float(params.get("partial_rotary_factor", 1.0) or 1.0)
    extra: dict[str, Any] = {}
    scaling = 1.0
    if rope_type == "proportional":
        inv = p_rope_inv_freq(theta, head_dim, fraction) / float(params.get("factor", 1.0))
        extra["p"] = fraction
    else:
        dim = partial_rotary_dim(head_dim, fraction)
        if rope_type in ("default", "dynamic"):
            # "dynamic" NTK only changes theta past the training length; at or below it the
            # frequencies are the default ones, which is what an analysis sees.
            inv = default_inv_freq(theta, dim)
        elif rope_type == "linear":
            inv = linear_inv_freq(theta, dim, float(params["factor"]))
        elif rope_type == "llama3":
            inv = llama3_inv_freq(
                theta,
                dim,
                float(params["factor"]),
                float(params["low_freq_factor"]),
                float(params["high_freq_factor"]),
                int(params["original_max_position_embeddings"]),
            )
        elif rope_type == "yarn":
            factor = params.get("factor")
            orig = int(params["original_max_position_embeddings"])
            if factor is None:
                if max_position_embeddings is None:
                    raise RopeError("yarn without factor needs max_position_embeddings")
                factor = max_position_embeddings / orig
            inv, scaling = yarn_inv_freq(
                theta,
                dim,
                float(factor),
                orig,
                beta_fast=float(params.get("beta_fast") or 32),
                beta_slow=float(params.get("beta_slow") or 1),
                truncate=bool(params.get("truncate", True)),
                attention_factor=params.get("attention_factor"),
                mscale=params.get("mscale"),
                mscale_all_dim=params.get("mscale_all_dim"),
            )
        else:
            raise RopeError(
                f"rope_type {rope_type!r} is not supported; supported: default, dynamic, "
                "linear, llama3, yarn, proportional"
            )
        for key in ("factor", "low_freq_factor", "high_freq_factor"):
            if key in params and params[key] is not None:
                extra[key] = float(params[key])
        if fraction != 1.0:
            extra["partial_rotary_factor"] = fraction
    return RopeSpec(
        head_dim=head_dim,
        inv_freq=inv,
        pairing=pairing,
        attention_scaling=scaling,
        rope_type=rope_type,
        theta=theta,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# Chunk views and rotation
# ---------------------------------------------------------------------------------------------


def wavelengths(freq: Float[Tensor, " chunk"]) -> Float[Tensor, " chunk"]:
    """Tokens per full turn, 2π / frequency; inf where the frequency is 0."""
    freq = freq.double()
    return torch.where(freq > 0, 2 * math.pi / freq.clamp_min(1e-300), torch.inf)


def chunk_dims(head_dim: int, rotary_dim: int, pairing: Pairing) -> Int[Tensor, "chunk 2"]:
    """Index of the two dims of every chunk: rotated chunks first (highest frequency first),
    then the unrotated tail beyond ``rotary_dim`` paired the same way."""

    def pairs(start: int, width: int) -> Tensor:
        k = torch.arange(width // 2)
        if pairing == "half":
            return torch.stack([start + k, start + k + width // 2], dim=-1)
        return torch.stack([start + 2 * k, start + 2 * k + 1], dim=-1)

    parts = [pairs(0, rotary_dim)]
    if head_dim > rotary_dim:
        parts.append(pairs(rotary_dim, head_dim - rotary_dim))
    return torch.cat(parts)


def to_chunks(x: Float[Tensor, "... d_head"], spec: RopeSpec) -> Float[Tensor, "... chunk 2"]:
    """View the last axis of ``x`` as ``[chunk, 2]`` in the spec's pairing."""
    _check_head_dim(x, spec)
    idx = spec.dims().to(x.device)
    return x[..., idx]  # (..., chunk, 2)


def from_chunks(c: Float[Tensor, "... chunk 2"], spec: RopeSpec) -> Float[Tensor, "... d_head"]:
    """Inverse of :func:`to_chunks`."""
    idx = spec.dims().to(c.device)
    out = c.new_empty(*c.shape[:-2], spec.head_dim)
    out[..., idx.reshape(-1)] = c.reshape(*c.shape[:-2], -1)
    return out


def chunk_norms(x: Float[Tensor, "... d_head"], spec: RopeSpec) -> Float[Tensor, "... chunk"]:
    """2-norm of every frequency chunk (rotation leaves it unchanged)."""
    # Elementwise hypot, not linalg.vector_norm over a size-2 dim: the strided reduction kernel
    # cost as much as the model's own matmuls (profiled on SmolLM2, CPU).
    if spec.pairing == "half" and spec.rotary_dim == spec.head_dim:
        # Fast path, no gather copy: dims (k, k + d/2) are the two halves of the head.
        _check_head_dim(x, spec)
        return torch.hypot(x[..., : spec.n_chunks], x[..., spec.n_chunks :])
    c = to_chunks(x, spec)
    return torch.hypot(c[..., 0], c[..., 1])


def angles(
    positions: Int[Tensor, " *batch"] | Float[Tensor, " *batch"], spec: RopeSpec
) -> Float[Tensor, "... chunk"]:
    """Rotation angle of every chunk at each position (fp64 for exactness at long range)."""
    spec.check_positions(positions)
    freq = spec.frequencies().to(positions.device)
    return positions.to(torch.float64)[..., None] * freq


def rotate_chunks(
    c: Float[Tensor, "... chunk 2"], theta: Float[Tensor, "... chunk"]
) -> Float[Tensor, "... chunk 2"]:
    """Rotate each 2-D chunk counter-clockwise by its angle: rho(theta) @ c."""
    cos, sin = torch.cos(theta).to(c.dtype), torch.sin(theta).to(c.dtype)
    a, b = c[..., 0], c[..., 1]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1)


def rotate(
    x: Float[Tensor, "batch pos head d_head"],
    positions: Int[Tensor, "batch pos"],
    spec: RopeSpec,
) -> Float[Tensor, "batch pos head d_head"]:
    """Apply RoPE: chunk k of the vector at position t turns by ``t * freq_k`` (then the
    YaRN attention scaling, as HF folds it into cos/sin)."""
    theta = angles(positions, spec)[:, :, None, :]  # (batch, pos, 1, chunk)
    rotated = rotate_chunks(to_chunks(x, spec), theta)
    return from_chunks(rotated, spec) * spec.attention_scaling


def unrotate(
    x: Float[Tensor, "batch pos head d_head"],
    positions: Int[Tensor, "batch pos"],
    spec: RopeSpec,
) -> Float[Tensor, "batch pos head d_head"]:
    """Inverse of :func:`rotate`."""
    theta = -angles(positions, spec)[:, :, None, :]
    return from_chunks(rotate_chunks(to_chunks(x, spec), theta), spec) / spec.attention_scaling


def _check_head_dim(x: Tensor, spec: RopeSpec) -> None:
    if x.shape[-1] != spec.head_dim:
        raise RopeError(f"last axis has size {x.shape[-1]}, spec expects {spec.head_dim}")
