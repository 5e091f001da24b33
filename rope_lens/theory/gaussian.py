"""Proposition 3.2: Gaussian queries and keys have zero expected RoPE activation at every distance.

For q, k ~ N(0, I_d), rho(g_k) is orthogonal so R^{-r} k ~ N(0, I_d) again, and
E[q^T R^{-r} k] = sum_i E[q_i] E[(R^{-r} k)_i] = 0 for every r. The same isotropy gives
Var[q^T R^{-r} k] = d, which we also check (it fixes the width of Fig 2b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import pandas as pd
import torch

from rope_lens.rope import RopeSpec
from rope_lens.theory.kernel import relative_logits


def default_distances(max_distance: int = 5000) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, ... up to ``max_distance``: dense near 0, where RoPE acts most."""
    out, scale = [0], 1
    while scale <= max_distance:
        out += [m * scale for m in (1, 2, 5) if m * scale <= max_distance]
        scale *= 10
    return out if out[-1] == max_distance else out + [max_distance]


def gaussian_expectation(
    spec: RopeSpec,
    distances: Sequence[int],
    n_samples: int = 4000,
    confidence: float = 0.99,
    simultaneous: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Monte Carlo estimate of ``E[q^T R^{-r} k] / d`` with a confidence interval per distance.

    Args:
        spec: frequencies; ``spec.head_dim`` is d.
        distances: the distances r to estimate at.
        n_samples: Gaussian (q, k) pairs; the same pairs are reused at every distance.
        confidence: coverage of each interval (normal approximation, fine for n >= 100).
        simultaneous: Bonferroni-correct so that *all* intervals cover 0 jointly with
            probability ``confidence``; the property is "zero at every r", so this is the
            honest test.
        seed: seed of the draws.

    Returns:
        Columns ``distance, mean, std, ci_low, ci_high, z, n_samples, expected_std``;
        ``expected_std`` is the exact 1/sqrt(d) (the standard deviation of the normalised logit).
    """
    d = spec.head_dim
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, n_samples, d, generator=gen, dtype=torch.float64)
    r = torch.tensor(list(distances), dtype=torch.float64)
    # (sample, distance): every pair scored at every distance.
    act = relative_logits(q[:, None, :], k[:, None, :], r[None, :], spec) / d
    mean, std = act.mean(0), act.std(0)
    tail = (1 - confidence) / (len(r) if simultaneous else 1)
    z = NormalDist().inv_cdf(1 - tail / 2)
    half = z * std / math.sqrt(n_samples)
    return pd.DataFrame(
        {
            "distance": r.long().numpy(),
            "mean": mean.numpy(),
            "std": std.numpy(),
            "ci_low": (mean - half).numpy(),
            "ci_high": (mean + half).numpy(),
            "z": z,
            "n_samples": n_samples,
            "expected_std": 1 / math.sqrt(d),
        }
    )
