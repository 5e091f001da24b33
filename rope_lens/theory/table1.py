"""Table 1, computed: which encodings can be positional, which can be semantic.

Both columns are derived from an encoding's frequency set, not looked up:

- **Positional** (Def. 5.1, Thm 5.3 vs Prop 5.2): Thm 5.3's diagonal and previous-token
  constructions, with |psi|^2 spread equally over the rotating chunks, reach alpha >= 1 - eps in
  every row of an n-token context at a finite norm. We find that norm
  (:func:`~rope_lens.theory.required_norm.required_norm_sq`) and then build both heads at it and
  check the achieved attention through the real rotation. With no rotating chunk the norm is
  infinite and the built head stays at the NoPE value 1/n.
- **Semantic** (Thm 6.1): some channel keeps a matched key's score at every distance, i.e. its
  semantic horizon (distance to turn ``angle`` radians, ``angle / g``) is infinite. Any g > 0
  fails for a long enough context, so this needs a zero-frequency chunk.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_lens.rope import RopeSpec, from_chunks
from rope_lens.theory.constructions import positional_head, target_attention
from rope_lens.theory.kernel import ENCODINGS, LABELS, encoding_spec
from rope_lens.theory.required_norm import required_norm_sq

# The paper's Table 1, for comparison only; table1() never reads it.
PAPER_TABLE1 = {
    "nope": {"positional": False, "semantic": True},
    "rope": {"positional": True, "semantic": False},
    "p-rope": {"positional": True, "semantic": True},
}

# Norm used to show that a head with no rotating chunk stays flat however large psi is.
_NOPE_PROBE_NORM_SQ = 1e6


def spread_psi(spec: RopeSpec, norm_sq: float) -> Float[Tensor, " d_head"]:
    """psi with |psi|^2 = norm_sq split equally over the rotating chunks (all chunks if none)."""
    freqs = spec.frequencies()
    mask = freqs > 0 if bool((freqs > 0).any()) else torch.ones_like(freqs, dtype=torch.bool)
    per_chunk = torch.zeros(spec.n_chunks, 2, dtype=torch.float64)
    per_chunk[mask, 0] = math.sqrt(norm_sq / int(mask.sum()))
    return from_chunks(per_chunk, spec)


def encoding_properties(
    spec: RopeSpec, n_positions: int = 64, eps: float = 0.01, angle: float = math.pi / 2
) -> dict[str, object]:
    """Both Table 1 properties of one frequency set, with the evidence behind them."""
    freqs = spec.frequencies()
    rotating = freqs > 0
    weights = rotating.to(torch.float64)
    row: dict[str, object] = {
        "encoding": spec.rope_type,
        "n_rotating_chunks": int(rotating.sum()),
        "n_static_chunks": int((~rotating).sum()),
    }
    positional = True
    for kind in ("diagonal", "previous"):
        need = (
            required_norm_sq(freqs, weights, n_positions, eps, kind) if rotating.any() else math.inf
        )
        probe = need if math.isfinite(need) else _NOPE_PROBE_NORM_SQ
        attention = positional_head(spread_psi(spec, probe * (1 + 1e-9)), spec, kind, n_positions)
        achieved = float(target_attention(attention, kind).min())
        row[f"{kind}_norm_sq"] = need
        row[f"{kind}_alpha"] = achieved
        # Achieved is recomputed through rotate(), so allow fp64 round-off at the threshold.
        positional &= math.isfinite(need) and achieved >= 1 - eps - 1e-9
    horizons = [angle / g if g > 0 else math.inf for g in freqs.tolist()]
    row["semantic_horizon_tokens"] = max(horizons)
    row["positional"] = positional
    row["semantic"] = math.isinf(max(horizons))
    return row


def table1(
    d_head: int = 64,
    theta: float = 10_000.0,
    p: float = 0.75,
    n_positions: int = 64,
    eps: float = 0.01,
) -> pd.DataFrame:
    """Table 1 for NoPE, RoPE and p-RoPE at one head size and base wavelength.

    Returns:
        One row per encoding: ``encoding, n_rotating_chunks, n_static_chunks,
        diagonal_norm_sq, diagonal_alpha, previous_norm_sq, previous_alpha,
        semantic_horizon_tokens, positional, semantic`` plus the parameters used.
    """
    rows = [
        encoding_properties(encoding_spec(e, d_head, theta, p), n_positions, eps) for e in ENCODINGS
    ]
    return pd.DataFrame(rows).assign(d_head=d_head, theta=float(theta), p=p, eps=eps)


def table1_markdown(frame: pd.DataFrame) -> str:
    """The paper's layout (rows Positional / Semantic, columns NoPE / RoPE / p-RoPE), ✓ / ✗."""
    encodings = [str(e) for e in frame["encoding"]]
    lines = [
        "| Encoding | " + " | ".join(LABELS.get(e, e) for e in encodings) + " |",
        "|---|" + "---|" * len(encodings),
    ]
    for prop in ("positional", "semantic"):
        marks = ["✓" if v else "✗" for v in frame[prop]]
        lines.append(f"| {prop.capitalize()} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"
