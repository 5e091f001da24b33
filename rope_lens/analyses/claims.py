"""The paper's claims about how models use RoPE frequencies, as verdicts computed from tables.

Each function takes the frames of ``profiles`` (one row per head via ``profiles.per_head``)
and/or ``ablation`` (``ablation.loss_table``) and returns a ``Verdict``: "confirmed",
"contradicted" or "unclear", plus the numbers behind it. The rules are written here, before
looking at any model, so that a verdict is a property of the data, not of the reader:

1. ``positional_high`` (Figs 4-6, 14-16): positional heads (diagonal or previous-token class)
   sit high in the ranking of heads by high-frequency share (mean of q and k ``high_share``).
   Confirmed when the median percentile of positional heads is >= 0.75, contradicted when
   <= 0.5, unclear in between or when there is no positional head.
2. ``low_dominant`` (Fig 3): most heads put more norm in the lowest quarter of frequencies
   than in the highest, for q and for k. Confirmed when > 50% of heads do for both, and
   contradicted when < 50% do for both.
3. ``edge_layers_high`` (Fig 3): the first and the last layer use more high frequencies than
   the layers between. Confirmed when both exceed the 75th percentile of the middle layers'
   mean high share, contradicted when both are at or below their median.
4. ``semantic_low_bands`` (Figs 4, 18; §6): the low band carries content, not position.
   Replacing the lowest quarter by its mean (content removed, rotation kept; BOS spared when
   that run exists, so the BOS-sink role of the band is not what is measured) must cost more
   than making it rotation-free (position removed, content kept): confirmed when
   delta_mean >= 0.05 nats/token and >= 3 x delta_rotation_free, contradicted when
   delta_mean < 0.02 (the band's content is not needed), unclear otherwise.
5. ``truncation_harmless`` (Table 2, §6.1; at inference, without retraining): rotation-free on
   the lowest quarter of chunks in every layer (an inference-time 0.75-RoPE) changes the loss by
   < 0.02 nats/token (about 2% perplexity) -> confirmed; by > 0.1 -> contradicted.
6. ``apostrophe_head`` (Fig 7): some head is apostrophe-like (``apostrophe.py``: after_apos and
   others_sink both >= 1/2) -> confirmed. None found -> unclear, not contradicted: the paper
   shows one head in one larger model and does not claim every model has one.
7. ``diagonal_near_bound`` (Tables 3-4): in the strongest diagonal head, the diagonal logit
   q_i.k_i/sqrt(d) is close to its Cauchy-Schwarz bound ||q_i|| ||k_i||/sqrt(d) (q and k
   aligned, as in Thm 5.3's q = k = psi; the paper's ratios are 0.7-0.9). Median ratio over
   tokens i >= 1 of one prompt >= 0.5 -> confirmed, < 0.25 -> contradicted.
8. ``previous_dominates`` (Table 5): in the strongest previous-token head the previous-token
   logit exceeds the diagonal one at > 75% of tokens i >= 1 -> confirmed; at < 50% ->
   contradicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

POSITIONAL = ("diagonal", "previous-token")
HARMLESS_NATS = 0.02
HARMFUL_NATS = 0.1
CONTENT_NATS = 0.05


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str  # confirmed | contradicted | unclear
    evidence: str


def _high(ph: pd.DataFrame) -> pd.Series:
    return (ph.q_high_share + ph.k_high_share) / 2


def positional_high(ph: pd.DataFrame) -> Verdict:
    claim = "positional heads use the highest frequencies"
    pos = ph.head_class.isin(POSITIONAL)
    if not pos.any():
        return Verdict(claim, "unclear", "no diagonal or previous-token head was found")
    pct = _high(ph).rank(pct=True)[pos]
    med = float(pct.median())
    verdict = "confirmed" if med >= 0.75 else "contradicted" if med <= 0.5 else "unclear"
    heads = ", ".join(
        f"L{r.layer}H{r.head} ({r.head_class}, {p:.2f})" for r, p in zip(ph[pos].itertuples(), pct)
    )
    return Verdict(
        claim,
        verdict,
        f"percentile of high-frequency share among all {len(ph)} heads: {heads}; median {med:.2f}",
    )


def low_dominant(ph: pd.DataFrame) -> Verdict:
    claim = "most heads put most norm in the lowest frequencies"
    fq = float((ph.q_low_share > ph.q_high_share).mean())
    fk = float((ph.k_low_share > ph.k_high_share).mean())
    if fq > 0.5 and fk > 0.5:
        verdict = "confirmed"
    elif fq < 0.5 and fk < 0.5:
        verdict = "contradicted"
    else:
        verdict = "unclear"
    return Verdict(
        claim,
        verdict,
        f"heads with low-quarter share > high-quarter share: q {fq:.0%}, k {fk:.0%}; mean "
        f"low / high share: q {ph.q_low_share.mean():.2f} / {ph.q_high_share.mean():.2f}, "
        f"k {ph.k_low_share.mean():.2f} / {ph.k_high_share.mean():.2f} (flat: 0.25 / 0.25)",
    )


def layer_high_share(ph: pd.DataFrame) -> pd.Series:
    """Mean high-frequency share (q and k) per layer."""
    return _high(ph).groupby(ph.layer).mean()


def edge_layers_high(ph: pd.DataFrame) -> Verdict:
    claim = "high-frequency use is largest in the first and last layers"
    per_layer = layer_high_share(ph)
    first, last = float(per_layer.iloc[0]), float(per_layer.iloc[-1])
    middle = per_layer.iloc[1:-1]
    q75, q50 = float(middle.quantile(0.75)), float(middle.median())
    if first > q75 and last > q75:
        verdict = "confirmed"
    elif first <= q50 and last <= q50:
        verdict = "contradicted"
    else:
        verdict = "unclear"
    top = per_layer.sort_values(ascending=False).head(3)
    return Verdict(
        claim,
        verdict,
        f"mean high share: first layer {first:.3f}, last {last:.3f}; middle layers median "
        f"{q50:.3f}, 75th percentile {q75:.3f}; highest layers "
        + ", ".join(f"L{i} {v:.3f}" for i, v in top.items()),
    )


def _delta(losses: pd.DataFrame, kind: str, lo: int, hi: int, spare: bool = False) -> float:
    spared = losses.spare_first if "spare_first" in losses else False
    # The verdicts speak of a band ablated in every layer and head: other scopes don't count.
    everywhere = True
    for col in ("ablated_layers", "ablated_heads"):
        if col in losses:
            everywhere = everywhere & (losses[col] == "all")
    row = losses[
        (losses.ablation == kind)
        & (losses.band_lo == lo)
        & (losses.band_hi == hi)
        & (spared == spare)
        & everywhere
    ]
    return float(row.delta_loss.iloc[0]) if len(row) else float("nan")


def semantic_low_bands(losses: pd.DataFrame, n_chunks: int) -> Verdict:
    claim = "low-frequency bands carry semantic content (not position)"
    lo = n_chunks - n_chunks // 4
    d_all = _delta(losses, "mean", lo, n_chunks)
    d_spared = _delta(losses, "mean", lo, n_chunks, spare=True)
    # Prefer the BOS-spared mean ablation: it removes content without breaking the BOS sink.
    d_mean = d_spared if not np.isnan(d_spared) else d_all
    d_free = _delta(losses, "rotation-free", lo, n_chunks)
    d_zero = _delta(losses, "zero", lo, n_chunks)
    if np.isnan(d_mean) or np.isnan(d_free):
        return Verdict(claim, "unclear", "the needed ablations were not run")
    if d_mean >= CONTENT_NATS and d_mean >= 3 * max(d_free, 0.0):
        verdict = "confirmed"
    elif d_mean < HARMLESS_NATS:
        verdict = "contradicted"
    else:
        verdict = "unclear"
    # For scale: the same content removal on the highest quarter (not part of the rule).
    d_high_mean = _delta(losses, "mean", 0, n_chunks // 4)
    return Verdict(
        claim,
        verdict,
        f"lowest quarter (chunks {lo}:{n_chunks}), all layers: delta loss mean-replaced with "
        f"BOS spared {d_spared:+.3f}, mean-replaced everywhere {d_all:+.3f}, zeroed "
        f"{d_zero:+.3f}, rotation-free {d_free:+.3f} nats/token (highest quarter "
        f"mean-replaced: {d_high_mean:+.3f})",
    )


def truncation_harmless(losses: pd.DataFrame, n_chunks: int) -> Verdict:
    claim = "p-RoPE-style truncation of the lowest frequencies is harmless"
    lo = n_chunks - n_chunks // 4
    d_low = _delta(losses, "rotation-free", lo, n_chunks)
    d_high = _delta(losses, "rotation-free", 0, n_chunks // 4)
    if np.isnan(d_low):
        return Verdict(claim, "unclear", "the needed ablation was not run")
    verdict = (
        "confirmed"
        if abs(d_low) < HARMLESS_NATS
        else "contradicted"
        if d_low > HARMFUL_NATS
        else "unclear"
    )
    return Verdict(
        claim,
        verdict,
        f"rotation-free lowest quarter (chunks {lo}:{n_chunks}) in every layer, no retraining: "
        f"delta loss {d_low:+.4f} nats/token; highest quarter: {d_high:+.4f}",
    )


def apostrophe_head(apos: pd.DataFrame) -> Verdict:
    """``apos``: the apostrophe table (best first)."""
    claim = "a semantic apostrophe head exists (Fig 7)"
    best = apos.iloc[0]
    found = apos[apos.apostrophe_like]
    verdict = "confirmed" if len(found) else "unclear"
    what = (
        ", ".join(f"L{r.layer}H{r.head}" for r in found.itertuples()) + " apostrophe-like"
        if len(found)
        else "no head is apostrophe-like"
    )
    return Verdict(
        claim,
        verdict,
        f"{what}; best L{best.layer}H{best['head']}: after_apos {best.after_apos:.2f}, "
        f"others_sink {best.others_sink:.2f} (both must reach 0.5) over "
        f"{int(best.n_after)} queries after an apostrophe",
    )


def _strongest(ph: pd.DataFrame, cls: str, score: str) -> pd.Series | None:
    heads = ph[ph.head_class == cls]
    return None if heads.empty else heads.sort_values(score).iloc[-1]


def _head_rows(cs: pd.DataFrame, head: pd.Series) -> pd.DataFrame:
    rows = cs[(cs.layer == head.layer) & (cs["head"] == head["head"])]
    return rows[rows.pos >= 1]


def diagonal_near_bound(cs: pd.DataFrame, ph: pd.DataFrame) -> Verdict:
    """``cs``: Cauchy-Schwarz rows (``per_token.cs_table``) that include the strongest
    diagonal head; ``ph``: ``profiles.per_head``."""
    claim = "diagonal heads' logits sit near the Cauchy-Schwarz bound (q ~ k; Tables 3-4)"
    head = _strongest(ph, "diagonal", "diag_score")
    rows = pd.DataFrame() if head is None else _head_rows(cs, head)
    if rows.empty:
        return Verdict(claim, "unclear", "no diagonal head (or no table for it)")
    assert head is not None  # rows is empty whenever head is None
    ratio = float((rows.diag_logit / rows.upper_bound).median())
    verdict = "confirmed" if ratio >= 0.5 else "contradicted" if ratio < 0.25 else "unclear"
    return Verdict(
        claim,
        verdict,
        f"L{head.layer}H{head['head']}: median diagonal logit / bound {ratio:.2f} over "
        f"{len(rows)} tokens (paper: 0.7-0.9)",
    )


def previous_dominates(cs: pd.DataFrame, ph: pd.DataFrame) -> Verdict:
    """As :func:`diagonal_near_bound`, for the strongest previous-token head."""
    claim = "previous-token heads: previous-token logit >> diagonal logit (Table 5)"
    head = _strongest(ph, "previous-token", "prev_score")
    rows = pd.DataFrame() if head is None else _head_rows(cs, head)
    if rows.empty:
        return Verdict(claim, "unclear", "no previous-token head (or no table for it)")
    assert head is not None  # rows is empty whenever head is None
    frac = float((rows.prev_logit > rows.diag_logit).mean())
    verdict = "confirmed" if frac > 0.75 else "contradicted" if frac < 0.5 else "unclear"
    return Verdict(
        claim,
        verdict,
        f"L{head.layer}H{head['head']}: previous-token logit > diagonal logit at {frac:.0%} of "
        f"{len(rows)} tokens; medians {rows.prev_logit.median():+.2f} vs "
        f"{rows.diag_logit.median():+.2f}, median prev logit / its bound "
        f"{float((rows.prev_logit / rows.prev_bound).median()):.2f}",
    )
