"""The RoPE logit in relative form, and the three encodings of Table 1 as frequency sets.

Everything in ``rope_lens.theory`` is built on one identity (paper Eq. 3): a query at position
``i`` and a key at position ``j = i - r`` score

    a(r) = (R^i q)^T (R^j k) = q^T R^{-r} k = sum_k (q^(k))^T rho(-r g_k) k^(k).

Frequencies and chunk layout come from :mod:`rope_lens.rope`, so "chunk k" means the same thing
here as in the model analyses. NoPE, RoPE and p-RoPE are all p-RoPE with p = 0, 1 and p
(the paper's p-RoPE, §6.1 and App. D), i.e. one frequency table in which NoPE chunks simply have frequency 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rope_lens.rope import RopeSpec, angles, p_rope_inv_freq, rotate, rotate_chunks, to_chunks

# The three families of Table 1 (training has more: ``rope_lens.train.encodings.Family``).
Family = Literal["nope", "rope", "p-rope"]
ENCODINGS: tuple[Family, ...] = ("nope", "rope", "p-rope")
LABELS = {"nope": "NoPE", "rope": "RoPE", "p-rope": "p-RoPE"}


def encoding_spec(
    encoding: Family, d_head: int, theta: float = 10_000.0, p: float = 0.75
) -> RopeSpec:
    """The frequency set of NoPE, RoPE or p-RoPE for one head.

    Args:
        encoding: ``"nope"`` (p = 0), ``"rope"`` (p = 1) or ``"p-rope"`` (keep the highest
            ``int(p * d_head / 2)`` standard frequencies, zero the rest).
        d_head: head dimension (even).
        theta: base wavelength.
        p: fraction kept by p-RoPE; ignored for the other two.

    Returns:
        A :class:`RopeSpec` whose ``rope_type`` is the encoding name.
    """
    fraction = {"nope": 0.0, "rope": 1.0, "p-rope": float(p)}[encoding]
    inv = p_rope_inv_freq(float(theta), d_head, fraction)
    return RopeSpec(
        head_dim=d_head, inv_freq=inv, rope_type=encoding, theta=float(theta), extra={"p": fraction}
    )


def relative_logits_per_chunk(
    q: Float[Tensor, "... d_head"],
    k: Float[Tensor, "... d_head"],
    distance: Float[Tensor, " ..."] | Int[Tensor, " ..."],
    spec: RopeSpec,
) -> Float[Tensor, "... chunk"]:
    """Each chunk's contribution to ``q^T R^{-r} k`` (fp64); leading axes broadcast.

    Args:
        q: query vectors (before rotation).
        k: key vectors (before rotation).
        distance: ``r = i - j``, how many tokens the key sits behind the query.
        spec: frequencies and chunk layout.

    Returns:
        Per-chunk logits; they sum to the attention logit (no 1/sqrt(d) factor).
    """
    qc = to_chunks(q.to(torch.float64), spec)  # (..., chunk, 2)
    kc = to_chunks(k.to(torch.float64), spec)
    # (R^r q)^T k = q^T R^{-r} k: turning the query forward is turning the key back.
    turned = rotate_chunks(qc, angles(distance, spec))
    return (turned * kc).sum(-1)


def relative_logits(
    q: Float[Tensor, "... d_head"],
    k: Float[Tensor, "... d_head"],
    distance: Float[Tensor, " ..."] | Int[Tensor, " ..."],
    spec: RopeSpec,
) -> Float[Tensor, " ..."]:
    """The RoPE logit ``q^T R^{-r} k`` of a key ``r`` tokens behind the query (fp64)."""
    return relative_logits_per_chunk(q, k, distance, spec).sum(-1)


def relative_rotation(spec: RopeSpec, distance: int) -> Float[Tensor, "d_head d_head"]:
    """The matrix ``M`` with ``q^T M k = q^T R^{-r} k``, for loops that score many q, k pairs."""
    eye = torch.eye(spec.head_dim, dtype=torch.float64)
    return relative_logits(eye[:, None, :], eye[None, :, :], torch.tensor(distance), spec)


def sequence_logits(
    q: Float[Tensor, "pos d_head"], k: Float[Tensor, "pos d_head"], spec: RopeSpec
) -> Float[Tensor, "pos key_pos"]:
    """Causal logit matrix of one head on a sequence, rotated by :func:`rope_lens.rope.rotate`.

    This goes through the toolkit's real rotation (absolute positions 0..n-1) rather than the
    relative identity, so the constructions are checked end to end. Future keys get ``-inf``.
    """
    n = q.shape[0]
    positions = torch.arange(n)[None]  # (1, pos)
    q_rot = rotate(q.to(torch.float64)[None, :, None, :], positions, spec)[0, :, 0]
    k_rot = rotate(k.to(torch.float64)[None, :, None, :], positions, spec)[0, :, 0]
    logits = q_rot @ k_rot.T  # (pos, key_pos)
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    return logits.masked_fill(future, -torch.inf)


def causal_attention(logits: Float[Tensor, "... pos key_pos"]) -> Float[Tensor, "... pos key_pos"]:
    """Softmax over keys of an already causally masked logit matrix."""
    return torch.softmax(logits, dim=-1)
