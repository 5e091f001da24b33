"""Critical chunks (wavelength > trained context) against the closed form."""

import math

import numpy as np
import pytest

from rope_lens.analyses import critical
from rope_lens.errors import InputError
from rope_lens.rope import RopeSpec, default_inv_freq


@pytest.mark.parametrize(
    "theta,dim,context,expected",
    [
        # Worked by hand: (r/2) log_theta(L / 2pi), floor, + 1.
        (1e4, 256, 512, 62),  # 128 * ln(81.49) / ln(1e4) = 61.18
        (1e5, 64, 8192, 20),  # 32 * ln(1303.8) / ln(1e5) = 19.94
        (1e6, 64, 32768, 20),  # 32 * ln(5215.2) / ln(1e6) = 19.83
        (1e4, 64, 4, 0),  # context shorter than the fastest wavelength: all critical
        (10.0, 8, 10**9, 4),  # tiny theta, huge context: none
    ],
)
def test_first_critical_chunk_closed_form(theta, dim, context, expected):
    assert critical.first_critical_chunk(theta, dim, context) == expected


@pytest.mark.parametrize("theta,dim,context", [(1e4, 256, 512), (1e5, 64, 8192), (5e5, 128, 2048)])
def test_table_matches_closed_form_and_brute_force(theta, dim, context):
    spec = RopeSpec(head_dim=dim, inv_freq=default_inv_freq(theta, dim), theta=theta)
    df = critical.critical_table("m", spec, "full_attention", [0, 1], context)
    k0 = critical.first_critical_chunk(theta, dim, context)
    assert (df.critical.to_numpy() == (df.chunk.to_numpy() >= k0)).all()
    # Brute force: walk the distances 0..L-1 of each chunk and see if the angle reaches 2 pi.
    for row in df.itertuples():
        g = theta ** (-2 * row.chunk / dim)
        full_turn = any(g * d >= 2 * math.pi for d in range(context))
        # wavelength > L  <=>  no distance d <= L-1 reaches a full turn (d integer, g*L>2pi
        # may still leave g*(L-1) < 2pi: the definition is on the wavelength, so allow it)
        if row.critical:
            assert not full_turn
        else:
            assert g * context >= 2 * math.pi
        half = all(g * d < math.pi for d in range(context))
        assert row.under_half_turn == half
    assert np.allclose(df.turns_over_context, df.frequency * (context - 1) / (2 * math.pi))


def test_unrotated_chunks_are_critical():
    inv = default_inv_freq(1e4, 16)
    spec = RopeSpec(head_dim=32, inv_freq=inv)  # 8 rotated chunks, 8 at frequency 0
    df = critical.critical_table("m", spec, "full_attention", [0], 4096)
    assert df[~df.rotating].critical.all() and (~df.rotating).sum() == 8
    assert np.isinf(df[~df.rotating].wavelength).all()


def test_on_models_sliding_layers_use_their_window(tiny_lm):
    lm = tiny_lm("gemma3")  # 2 sliding (window 8, theta 1e4) + 1 full layer (theta 1e6)
    df = critical.run(lm)
    assert set(df.layer_type) == {"sliding_attention", "full_attention"}
    sliding = df[df.layer_type == "sliding_attention"]
    assert (sliding.context == 8).all() and (sliding.context_source == "sliding_window").all()
    assert sliding.layers.iloc[0] == "0,1"
    full = df[df.layer_type == "full_attention"]
    assert (full.context == lm.max_context).all()
    for sub in (sliding, full):
        r = sub.iloc[0]
        k0 = critical.first_critical_chunk(r.theta, lm.head_dim, int(r.context))
        assert (sub.critical.to_numpy() == (sub.chunk.to_numpy() >= k0)).all()
    # --context overrides the full layers (never widens a sliding window).
    df2 = critical.analyze(lm, None, [0, 2], {"context": 4})
    assert (df2.context == 4).all()
    text = critical.summarize(df)
    assert "sliding_attention" in text and "critical chunks" in text


def test_scaled_models_use_the_original_context(tiny_lm):
    lm = tiny_lm("llama3")  # llama3 scaling with original_max_position_embeddings 64
    df = critical.run(lm)
    assert (df.context == 64).all()
    assert (df.context_source == "original_max_position_embeddings").all()
    # llama3 scaling: wavelength from the *scaled* frequencies the model really uses.
    spec = lm.rope.layer_specs[0]
    assert np.allclose(df.frequency, spec.frequencies().numpy())


def test_bad_context_is_one_line(tiny_lm):
    with pytest.raises(InputError, match="--context"):
        critical.analyze(tiny_lm("llama"), None, [0], {"context": "lots"})
    with pytest.raises(InputError, match="at least 2"):
        critical.analyze(tiny_lm("llama"), None, [0], {"context": 1})


def test_mark_critical_joins_on_layer_type_and_chunk(tiny_lm):
    import pandas as pd

    lm = tiny_lm("llama")
    crit = critical.run(lm, context=16)
    other = pd.DataFrame({"layer_type": "full_attention", "chunk": [0, 7], "x": [1.0, 2.0]})
    out = critical.mark_critical(other, crit)
    assert list(out.critical) == list(crit.set_index("chunk").critical.loc[[0, 7]])
