"""Verdict rules of ``claims``: each flips with the data it is given (synthetic tables)."""

import numpy as np
import pandas as pd

from rope_lens.analyses import claims


def _heads(high, low, classes, layers=None):
    n = len(high)
    return pd.DataFrame(
        {
            "layer": layers if layers is not None else np.arange(n),
            "head": np.zeros(n, dtype=int),
            "head_class": classes,
            "q_high_share": high,
            "k_high_share": high,
            "q_low_share": low,
            "k_low_share": low,
        }
    )


def test_positional_high_follows_the_ranking():
    """Positional heads at the top of the high-share ranking confirm; at the bottom contradict."""
    high = np.linspace(0.1, 0.5, 10)
    classes = ["other"] * 8 + ["diagonal", "previous-token"]
    assert claims.positional_high(_heads(high, 0.2, classes)).verdict == "confirmed"
    assert claims.positional_high(_heads(high[::-1], 0.2, classes)).verdict == "contradicted"
    none = _heads(high, 0.2, ["other"] * 10)
    assert claims.positional_high(none).verdict == "unclear"


def test_low_dominant_counts_heads():
    low_heavy = _heads(np.full(4, 0.1), np.full(4, 0.4), ["other"] * 4)
    high_heavy = _heads(np.full(4, 0.4), np.full(4, 0.1), ["other"] * 4)
    assert claims.low_dominant(low_heavy).verdict == "confirmed"
    assert claims.low_dominant(high_heavy).verdict == "contradicted"


def test_edge_layers_high():
    shares = np.array([0.5, 0.1, 0.2, 0.15, 0.12, 0.5])
    df = _heads(shares, 0.2, ["other"] * 6)
    assert claims.edge_layers_high(df).verdict == "confirmed"
    df = _heads(np.array([0.05, 0.1, 0.2, 0.15, 0.12, 0.05]), 0.2, ["other"] * 6)
    assert claims.edge_layers_high(df).verdict == "contradicted"


def _losses(rows):
    return pd.DataFrame(
        rows, columns=["ablation", "band_lo", "band_hi", "spare_first", "delta_loss"]
    )


def test_ablation_claims_use_the_thresholds():
    """Truncation: < 0.02 harmless, > 0.1 harmful; semantic: mean >> rotation-free."""
    n = 32
    ok = _losses(
        [
            ("rotation-free", 24, 32, False, 0.005),
            ("rotation-free", 0, 8, False, 2.0),
            ("mean", 24, 32, True, 1.0),
            ("mean", 24, 32, False, 3.0),
            ("zero", 24, 32, False, 3.0),
        ]
    )
    assert claims.truncation_harmless(ok, n).verdict == "confirmed"
    assert claims.semantic_low_bands(ok, n).verdict == "confirmed"
    bad = ok.assign(delta_loss=[0.5, 2.0, 0.01, 0.01, 0.01])
    assert claims.truncation_harmless(bad, n).verdict == "contradicted"
    assert claims.semantic_low_bands(bad, n).verdict == "contradicted"
    assert claims.truncation_harmless(ok.iloc[1:], n).verdict == "unclear"  # not run
    # A band ablated in one layer only says nothing about "every layer": not evidence.
    one_layer = ok.assign(ablated_layers="3", ablated_heads="all")
    assert claims.truncation_harmless(one_layer, n).verdict == "unclear"
    assert claims.truncation_harmless(ok.assign(ablated_layers="all"), n).verdict == "confirmed"


def test_apostrophe_head_found_or_not():
    apos = pd.DataFrame(
        {
            "layer": [3, 1],
            "head": [2, 0],
            "after_apos": [0.8, 0.1],
            "others_sink": [0.6, 0.9],
            "n_after": [12, 12],
        }
    )
    apos["apostrophe_like"] = apos[["after_apos", "others_sink"]].min(axis=1) >= 0.5
    assert claims.apostrophe_head(apos).verdict == "confirmed"
    assert "L3H2" in claims.apostrophe_head(apos).evidence
    weak = apos.assign(after_apos=[0.4, 0.1])
    weak["apostrophe_like"] = False
    assert claims.apostrophe_head(weak).verdict == "unclear"


def _cs(diag, prev, bound, layer=0, head=0):
    n = len(diag)
    return pd.DataFrame(
        {
            "layer": layer,
            "head": head,
            "pos": np.arange(n),
            "diag_logit": diag,
            "upper_bound": bound,
            "prev_logit": [np.nan, *prev[1:]],
            "prev_bound": bound,
        }
    )


def test_cauchy_schwarz_claims():
    """Diagonal logits near the bound confirm; far below contradict. Same for prev > diag."""
    ph = pd.DataFrame(
        {
            "layer": [0, 1],
            "head": [0, 0],
            "head_class": ["diagonal", "previous-token"],
            "diag_score": [0.9, 0.1],
            "prev_score": [0.1, 0.9],
        }
    )
    bound = np.full(5, 10.0)
    near = _cs(np.full(5, 8.0), np.full(5, 1.0), bound)
    far = _cs(np.full(5, 1.0), np.full(5, 1.0), bound)
    assert claims.diagonal_near_bound(near, ph).verdict == "confirmed"
    assert claims.diagonal_near_bound(far, ph).verdict == "contradicted"
    prev_wins = _cs(np.full(5, -1.0), np.full(5, 3.0), bound, layer=1)
    diag_wins = _cs(np.full(5, 3.0), np.full(5, -1.0), bound, layer=1)
    assert claims.previous_dominates(prev_wins, ph).verdict == "confirmed"
    assert claims.previous_dominates(diag_wins, ph).verdict == "contradicted"
    assert claims.previous_dominates(near, ph).verdict == "unclear"  # no table for L1H0
