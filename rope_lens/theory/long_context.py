"""Theorem 6.1, quantitatively: how long a single-frequency semantic channel stays reliable.

Setting (d = 2, one frequency g, as in the paper's Thm 6.1, §6): the query sits at position i, the target
key at position 0 (distance i, e.g. BOS or a needle at the start) and a distractor key at every
position 1..i (distances 0..i-1, e.g. ordinary tokens). The *overtaking length* is the smallest
i at which some distractor's logit exceeds the target's: from there on this channel ranks a
wrong token first, so by Lemma A.3 it cannot give the target more than 1/2.

With equal norms, the target aligned with the query and the distractor at semantic phase phi
(logit |q||k| cos(phi - g r) at distance r), the closed form is

    0 <= phi <= pi:    N* = floor(phi / (2g) + 1/2) + 1     (distractor turns into alignment)
    pi < phi < 2 pi:   N* = floor((2 pi - phi) / g) + 1     (target turns below the distractor)

so for an anti-aligned distractor (phi = pi) N* ~ pi / (2g): the distance at which the
channel has turned a quarter circle, where a perfect match's contribution changes sign. Both
cases scale as 1/g, i.e. with the wavelength, so N* grows with theta and is infinite for a
zero-frequency (p-RoPE / NoPE) chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.rope import RopeSpec, default_inv_freq
from rope_lens.theory.kernel import relative_logits


def single_frequency_spec(freq: float) -> RopeSpec:
    """A d = 2 head rotating at ``freq`` rad/token (0 allowed: a NoPE channel)."""
    return RopeSpec(
        head_dim=2, inv_freq=torch.tensor([float(freq)], dtype=torch.float64), pairing="interleaved"
    )


def overtaking_length(
    freq: float,
    query: Float[Tensor, " 2"],
    target_key: Float[Tensor, " 2"],
    distractor_key: Float[Tensor, " 2"],
    max_positions: int,
) -> float:
    """Smallest query position i at which a distractor at distance < i out-scores the target at
    distance i; ``inf`` if it does not happen by ``max_positions``.
    """
    spec = single_frequency_spec(freq)
    r = torch.arange(max_positions + 1)
    target = relative_logits(query, target_key, r, spec)  # target[i]: target at distance i
    best = torch.cummax(relative_logits(query, distractor_key, r, spec), 0).values
    # At query position i the distractors sit at distances 0..i-1: compare best[i-1], target[i].
    overtaken = torch.nonzero(best[:-1] > target[1:]).flatten()
    return float(overtaken[0] + 1) if len(overtaken) else math.inf


def overtaking_closed_form(freq: float, distractor_phase: float) -> float:
    """The module docstring's closed form (equal norms, target aligned with the query)."""
    phi = distractor_phase % (2 * math.pi)
    if freq <= 0:
        return math.inf
    if phi <= math.pi:
        return float(math.floor(phi / (2 * freq) + 0.5) + 1)
    return float(math.floor((2 * math.pi - phi) / freq) + 1)


def phase_vector(phase: float, norm: float = 1.0) -> Float[Tensor, " 2"]:
    """``norm * (cos phase, sin phase)``: a key at a given semantic phase from the query (1, 0)."""
    return norm * torch.tensor([math.cos(phase), math.sin(phase)], dtype=torch.float64)


def overtaking_table(
    specs: Sequence[RopeSpec],
    distractor_phases: Sequence[float] = (math.pi,),
    max_positions: int = 20_000_000,
) -> pd.DataFrame:
    """Overtaking length of every chunk of each spec, simulated and closed form.

    Args:
        specs: frequency sets (e.g. RoPE at theta 10k and 500k, p-RoPE).
        distractor_phases: semantic phases phi of the distractor (radians).
        max_positions: cap on the simulated context (the scan stops after one full turn anyway).

    Returns:
        Columns ``encoding, theta, d_head, chunk, frequency, wavelength, distractor_phase,
        overtaking_length, closed_form``; both are ``inf`` for zero-frequency chunks.
    """
    query, target = phase_vector(0.0), phase_vector(0.0)
    rows = []
    for spec in specs:
        for chunk, g in enumerate(spec.frequencies().tolist()):
            for phi in distractor_phases:
                # One full turn plus a margin always contains the first overtaking.
                horizon = min(max_positions, math.ceil(2 * math.pi / g) + 2) if g > 0 else 16
                sim = overtaking_length(g, query, target, phase_vector(phi), horizon)
                rows.append(
                    {
                        "encoding": spec.rope_type,
                        "theta": spec.theta,
                        "d_head": spec.head_dim,
                        "chunk": chunk,
                        "frequency": g,
                        "wavelength": 2 * math.pi / g if g > 0 else math.inf,
                        "distractor_phase": float(phi),
                        "overtaking_length": sim,
                        "closed_form": overtaking_closed_form(g, phi),
                    }
                )
    return pd.DataFrame(rows)


# Fig 12 / App. E.1: Gemma 7B Layer 1 Head 10, chunk 119 (1-based), as printed in the paper.
APOSTROPHE_CHANNEL = {
    "query_not_bos": (-4.1, 11.3),
    "key_not_bos": (11.2, -3.5),
    "key_bos": (-2.5, 1.3),
}


def apostrophe_channel(
    thetas: Sequence[float] = (10_000.0, 500_000.0),
    chunk: int = 118,
    d_head: int = 256,
    orientations: Sequence[int] = (1, -1),
) -> pd.DataFrame:
    """When does the apostrophe head's low-frequency channel stop favouring BOS? (App. E.1)

    BOS is the target at position 0; every other position holds a non-BOS key (the distractor).
    This is the channel's contribution only, not the whole head's logit. ``orientation = -1``
    mirrors the 2-D coordinates (the paper does not say which coordinate comes first, and the
    mirror reverses the sense of rotation).

    Returns:
        Columns ``theta, chunk, frequency, orientation, logit_not_bos, logit_bos,
        rotation_over_8k, overtaking_length``; chunk is 0-based (118 is the paper's g_119).
    """
    q, k_n, k_b = (torch.tensor(v, dtype=torch.float64) for v in APOSTROPHE_CHANNEL.values())
    rows = []
    for theta in thetas:
        g = float(default_inv_freq(float(theta), d_head)[chunk])
        for sign in orientations:
            flip = torch.tensor([1.0, float(sign)], dtype=torch.float64)
            horizon = math.ceil(2 * math.pi / g) + 2
            rows.append(
                {
                    "theta": float(theta),
                    "chunk": chunk,
                    "frequency": g,
                    "orientation": sign,
                    "logit_not_bos": float(q @ k_n),
                    "logit_bos": float(q @ k_b),
                    "rotation_over_8k": 8000 * g,
                    "overtaking_length": overtaking_length(
                        g, q * flip, k_b * flip, k_n * flip, horizon
                    ),
                }
            )
    return pd.DataFrame(rows)


def paper_rotation_numbers() -> pd.DataFrame:
    """The §6 / App. E.1 back-of-envelope numbers, recomputed.

    Returns:
        Columns ``quantity, paper, computed, note``.
    """
    g_119 = float(default_inv_freq(10_000.0, 256)[118])
    turns = 2 * math.pi
    rows = [
        (
            "turns of slowest freq, θ=10k, 128k ctx (g≈1/θ)",
            2.04,
            128_000 / 10_000 / turns,
            "the paper's g_{d/2} ≈ 1/θ with 128k = 128,000",
        ),
        (
            "turns of slowest freq, θ=10k, 128k ctx, d=128",
            2.04,
            128_000 * float(default_inv_freq(10_000.0, 128)[-1]) / turns,
            "exact g_64 = 10000^(-126/128) for a 128-dim head (Llama 3)",
        ),
        (
            "turns of slowest freq, θ=10k, 131072 ctx, d=256",
            2.04,
            131_072 * float(default_inv_freq(10_000.0, 256)[-1]) / turns,
            "exact g_128, 2^17 tokens",
        ),
        ("g_119 of Gemma (d=256)", 2e-4, g_119, "10000^(-2*118/256)"),
        ("rotation of g_119 over 8k tokens (rad)", 1.64, 8000 * g_119, "8,000 tokens"),
        ("rotation of g_119 over 8192 tokens (rad)", 1.64, 8192 * g_119, "8,192 tokens"),
        (
            "slowest freq at θ=500k, d=128 (rad/token)",
            2e-6,
            float(default_inv_freq(500_000.0, 128)[-1]),
            "paper: ≈1/500,000",
        ),
    ]
    return pd.DataFrame(rows, columns=["quantity", "paper", "computed", "note"])
