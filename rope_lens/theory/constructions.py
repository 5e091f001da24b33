"""Proposition 3.1 and Theorem 5.3: RoPE heads that attend to a chosen relative distance.

- Prop 3.1: for any non-zero q and any r >= 0, the key k = R^r q gives
  ``q^T R^{-m} k = sum_k |q^(k)|^2 cos((r - m) g_k)``, largest exactly at m = r (Lemma A.1:
  no frequency returns to 0 mod 2 pi at a non-zero integer distance).
- Thm 5.3: with q = k = psi (diagonal head) or q = psi, k = R psi (previous-token head), the
  target attention tends to 1 as |psi| grows. We build these heads on a sequence and run them
  through :func:`rope_lens.rope.rotate`, so the check covers the toolkit's real rotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.rope import RopeSpec, angles, from_chunks, rotate_chunks, to_chunks
from rope_lens.theory.kernel import causal_attention, relative_logits, sequence_logits

HeadKind = Literal["diagonal", "previous"]
TARGET_OFFSET = {"diagonal": 0, "previous": 1}


def key_for_distance(
    q: Float[Tensor, "... d_head"], distance: int, spec: RopeSpec
) -> Float[Tensor, "... d_head"]:
    """Prop 3.1's key ``k = R^r q``: the logit of q against k peaks ``distance`` tokens back."""
    turned = rotate_chunks(
        to_chunks(q.to(torch.float64), spec), angles(torch.tensor(distance), spec)
    )
    return from_chunks(turned, spec)


def logit_profile(
    q: Float[Tensor, " d_head"], k: Float[Tensor, " d_head"], spec: RopeSpec, max_distance: int
) -> Float[Tensor, " pos"]:
    """``q^T R^{-m} k`` for the key m = 0..max_distance tokens behind the query."""
    return relative_logits(q, k, torch.arange(max_distance + 1), spec)


def distance_argmax(
    spec: RopeSpec,
    target_distances: Sequence[int],
    max_distance: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prop 3.1 for a random Gaussian query: where does the constructed key's logit peak?

    Args:
        spec: frequencies of the head.
        target_distances: the distances r to build keys for (0 <= r <= max_distance).
        max_distance: the causal window searched for the argmax.
        seed: seed of the query.

    Returns:
        ``(summary, profiles)``. ``summary`` has one row per target: ``target_distance,
        argmax_distance, max_logit, runner_up_logit, margin`` (logits divided by |q|^2, so the
        peak is 1 when every chunk rotates). ``profiles`` has ``target_distance, distance,
        logit`` for plotting.
    """
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(spec.head_dim, generator=gen, dtype=torch.float64)
    summary, profiles = [], []
    for r in target_distances:
        k = key_for_distance(q, int(r), spec)
        logit = logit_profile(q, k, spec, max_distance) / q.square().sum()
        top2 = torch.topk(logit, 2)
        summary.append(
            {
                "target_distance": int(r),
                "argmax_distance": int(top2.indices[0]),
                "max_logit": float(top2.values[0]),
                "runner_up_logit": float(top2.values[1]),
                "margin": float(top2.values[0] - top2.values[1]),
            }
        )
        profiles.append(
            pd.DataFrame(
                {"target_distance": int(r), "distance": range(max_distance + 1), "logit": logit}
            )
        )
    return pd.DataFrame(summary), pd.concat(profiles, ignore_index=True)


def positional_head(
    psi: Float[Tensor, " d_head"], spec: RopeSpec, kind: HeadKind, n_positions: int
) -> Float[Tensor, "pos key_pos"]:
    """Attention matrix of Thm 5.3's construction on ``n_positions`` tokens.

    Every token has the same query psi and the same key (psi for the diagonal head, R psi for
    the previous-token head), so any structure in the attention comes from RoPE alone.
    """
    k = key_for_distance(psi, TARGET_OFFSET[kind], spec)
    q_seq = psi.to(torch.float64).expand(n_positions, -1)
    k_seq = k.expand(n_positions, -1)
    return causal_attention(sequence_logits(q_seq, k_seq, spec))


def target_attention(
    attention: Float[Tensor, "pos key_pos"], kind: HeadKind
) -> Float[Tensor, " _row"]:
    """alpha_{i,i} (diagonal) or alpha_{i,i-1} (previous, rows i >= 1) of every query row."""
    t = TARGET_OFFSET[kind]
    return torch.diagonal(attention, offset=-t)


def positional_sharpness(
    spec: RopeSpec,
    norms_sq: Sequence[float],
    kinds: Sequence[HeadKind] = ("diagonal", "previous"),
    n_positions: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Thm 5.3: target attention of the constructed heads as |psi|^2 grows.

    Args:
        spec: frequencies of the head (NoPE gives the uniform 1/(i+1) whatever the norm).
        norms_sq: values of |psi|^2 to try.
        kinds: which constructions.
        n_positions: sequence length.
        seed: seed of psi's direction (a Gaussian vector, normalised).

    Returns:
        Columns ``encoding, kind, norm_sq, min_alpha, mean_alpha, n_positions``; ``min_alpha``
        is the worst row, the quantity Definition 5.1 bounds.
    """
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(spec.head_dim, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm()
    rows = []
    for kind in kinds:
        for s in norms_sq:
            psi = direction * float(s) ** 0.5
            alpha = target_attention(positional_head(psi, spec, kind, n_positions), kind)
            rows.append(
                {
                    "encoding": spec.rope_type,
                    "kind": kind,
                    "norm_sq": float(s),
                    "min_alpha": float(alpha.min()),
                    "mean_alpha": float(alpha.mean()),
                    "n_positions": n_positions,
                }
            )
    return pd.DataFrame(rows)
