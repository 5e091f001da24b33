"""Per-head frequency profiles: statistics, the band-norm join, and planted positional heads."""

import numpy as np
import pytest

from rope_lens.analyses import band_norms, profiles
from tests.heads_helpers import make_batches, planted_qwen2


def test_spectrum_stats_on_known_spectra():
    """Flat spectra give 1/4 shares; all norm in chunk 0 gives high share 1 and log10 freq 0."""
    freq = 10.0 ** -np.arange(8, dtype=float)
    flat = profiles.spectrum_stats(np.ones(8), freq)
    assert flat["high_share"] == pytest.approx(0.25) and flat["low_share"] == pytest.approx(0.25)
    assert flat["mean_log10_freq"] == pytest.approx(-3.5)
    top = profiles.spectrum_stats(np.eye(8)[0], freq)
    assert (top["high_share"], top["low_share"], top["mean_log10_freq"]) == (1.0, 0.0, 0.0)
    assert top["peak_chunk"] == 0


def test_unrotated_chunks_are_left_out():
    """Frequency-0 chunks (p-RoPE tails) do not enter the shares or the mean log-frequency."""
    freq = np.array([1.0, 0.1, 0.01, 0.001, 0.0, 0.0])
    s = profiles.spectrum_stats(np.array([1.0, 1.0, 1.0, 1.0, 50.0, 50.0]), freq)
    assert s["high_share"] == pytest.approx(0.25) and s["mean_log10_freq"] == pytest.approx(-1.5)
    assert s["peak_chunk"] == 0  # the big unrotated chunks 4, 5 are not a frequency's peak
    reversed_ = profiles.spectrum_stats(np.array([50.0, 1.0, 3.0]), np.array([0.0, 0.1, 0.01]))
    assert reversed_["peak_chunk"] == 2
    nope = profiles.spectrum_stats(np.ones(4), np.zeros(4))
    assert np.isnan(nope["high_share"]) and nope["peak_chunk"] == -1


def test_join_matches_band_norms_and_broadcasts_kv(tiny_lm):
    """q spectra equal band-norm's; each query head carries its GQA group's k spectrum."""
    lm = tiny_lm("llama")
    df = profiles.run(lm, make_batches(lm)(), [0, 1], progress=False)
    bands = band_norms.run(lm, make_batches(lm)(), [0, 1], kinds="qk", progress=False)
    group = lm.n_heads // lm.n_kv_heads
    for kind in "qk":
        got = df[(df.kind == kind)].sort_values(["layer", "head", "chunk"])
        want = bands[bands.kind == kind].set_index(["layer", "head", "chunk"]).mean_norm
        lookup_head = got["head"] if kind == "q" else got["head"] // group
        ref = want.loc[list(zip(got.layer, lookup_head, got.chunk))].to_numpy()
        np.testing.assert_allclose(got.mean_norm.to_numpy(), ref, rtol=1e-6)
    assert len(df) == 2 * lm.n_heads * 2 * (lm.head_dim // 2)
    assert len(profiles.per_head(df)) == 2 * lm.n_heads


def test_planted_positional_heads_use_high_frequencies(tmp_path):
    """Heads built from psi in chunks 0-2 show it: 2/3 of the norm in the top quarter (0-1)."""
    lm = planted_qwen2(tmp_path)
    ph = profiles.per_head(profiles.run(lm, make_batches(lm)(), [0], progress=False))
    ph = ph.set_index("head")
    for head in (0, 2):  # diagonal, previous-token
        for kind in "qk":
            assert ph.loc[head, f"{kind}_high_share"] == pytest.approx(2 / 3, abs=1e-3)
            assert ph.loc[head, f"{kind}_low_share"] < 1e-3
        assert ph.loc[head, "q_mean_log10_freq"] > -1.0
    assert ph.loc[1, "q_low_share"] > 0.99  # the BOS-sink head reads the lowest chunk
    table = profiles.class_table(profiles.run(lm, make_batches(lm)(), [0], progress=False))
    assert table.loc["diagonal", "q_high_share"] > table.loc["sink", "q_high_share"]
