"""Theorem 5.3, quantitatively: how much norm a positional head needs, per frequency band.

For Thm 5.3's constructions with |psi|^2 = s split across chunks by weights w (sum 1), the
query in the last row of an n-token context scores the key m tokens back at

    s * sum_k w_k cos((m - t) g_k),       t = 0 (diagonal head) or 1 (previous-token head),

so with gap(m) = sum_k w_k (1 - cos((m - t) g_k)) >= 0 its target attention is
``1 / (1 + sum_{m != t} exp(-s gap(m)))``. The last row has the most competitors, so it is the
worst row. The smallest s with alpha >= 1 - eps solves a monotone equation in s, found by
bisection. With n = 2 (one neighbour) and a single frequency it has the closed form
``s = ln((1 - eps) / eps) / (1 - cos g)``, smallest for the highest frequency: the paper's
"high frequencies misalign fastest" argument. Over long contexts a *single* frequency comes back
close to its start (Lemma A.2, density), so bands of several chunks are the robust unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.rope import RopeSpec
from rope_lens.theory.constructions import TARGET_OFFSET, HeadKind


def alignment_gaps(
    freqs: Float[Tensor, " chunk"],
    weights: Float[Tensor, " chunk"],
    n_positions: int,
    kind: HeadKind,
) -> Float[Tensor, " _competitor"]:
    """``gap(m)`` for every competitor key m = 0..n-1, m != target, of the last query row."""
    t = TARGET_OFFSET[kind]
    m = torch.arange(n_positions, dtype=torch.float64)
    phase = (m - t)[:, None] * freqs.to(torch.float64)  # (m, chunk)
    gap = (weights.to(torch.float64) * (1 - torch.cos(phase))).sum(-1)
    return gap[m != t]


def required_norm_sq(
    freqs: Float[Tensor, " chunk"],
    weights: Float[Tensor, " chunk"],
    n_positions: int,
    eps: float,
    kind: HeadKind = "diagonal",
) -> float:
    """Smallest |psi|^2 with target attention >= 1 - eps in every row of an n-token context.

    Args:
        freqs: rad/token of each chunk.
        weights: share of |psi|^2 in each chunk (normalised here).
        n_positions: context length n (>= 2).
        eps: allowed attention outside the target, 0 < eps < 1/2.
        kind: diagonal (q = k = psi) or previous-token (q = psi, k = R psi).

    Returns:
        The norm squared (relative precision ~1e-12), or ``inf`` when some competitor is exactly
        as aligned as the target (no rotating chunk carries weight: NoPE).
    """
    w = weights / weights.sum()
    gap = alignment_gaps(freqs, w, n_positions, kind)
    smallest = float(gap.min())
    if smallest <= 1e-15:
        return math.inf
    log_budget = math.log(eps / (1 - eps))
    # The largest competitor alone, resp. all n-1 at the smallest gap, bracket the answer.
    lo = -log_budget / smallest
    hi = (math.log(len(gap)) - log_budget) / smallest
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(torch.logsumexp(-mid * gap, 0)) > log_budget:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return hi


def required_norm_by_band(
    spec: RopeSpec,
    n_positions: Sequence[int] = (2, 20, 8192),
    band_size: int = 1,
    eps: float = 0.01,
    kind: HeadKind = "diagonal",
) -> pd.DataFrame:
    """Required |psi|^2 when psi lives in one band of ``band_size`` adjacent chunks.

    Args:
        spec: frequencies; chunks of frequency 0 are skipped (they cannot be positional).
        n_positions: context lengths to evaluate.
        band_size: chunks per band (1 = single frequencies); |psi|^2 is split equally.
        eps: allowed attention outside the target.
        kind: diagonal or previous-token construction.

    Returns:
        Columns ``band, first_chunk, last_chunk, band_size, frequency, n_positions, kind, eps,
        required_norm_sq, worst_distance``; ``frequency`` is the band's highest and
        ``worst_distance`` the competitor key closest to the target's logit.
    """
    freqs = spec.frequencies()
    rotating = torch.nonzero(freqs > 0).flatten().tolist()
    rows = []
    for n in n_positions:
        for band, start in enumerate(range(0, len(rotating), band_size)):
            chunks = rotating[start : start + band_size]
            w = torch.zeros_like(freqs)
            w[chunks] = 1.0
            gap = alignment_gaps(freqs, w / w.sum(), n, kind)
            competitors = [m for m in range(n) if m != TARGET_OFFSET[kind]]
            rows.append(
                {
                    "band": band,
                    "first_chunk": chunks[0],
                    "last_chunk": chunks[-1],
                    "band_size": len(chunks),
                    "frequency": float(freqs[chunks[0]]),
                    "n_positions": n,
                    "kind": kind,
                    "eps": eps,
                    "required_norm_sq": required_norm_sq(freqs, w, n, eps, kind),
                    "worst_distance": competitors[int(gap.argmin())],
                }
            )
    return pd.DataFrame(rows).assign(theta=spec.theta, d_head=spec.head_dim)


def local_closed_form(freq: float, eps: float) -> float:
    """n = 2, one frequency: ``ln((1 - eps)/eps) / (1 - cos g)`` (one neighbour to beat)."""
    return math.log((1 - eps) / eps) / (1 - math.cos(freq))
