"""Prop 3.1 and Thm 5.3: RoPE heads that peak at a chosen distance, and the norm they need."""

import math

import numpy as np
import pytest
import torch

from rope_lens.theory import (
    distance_argmax,
    encoding_spec,
    local_closed_form,
    positional_head,
    positional_sharpness,
    required_norm_by_band,
    required_norm_sq,
    target_attention,
)
from rope_lens.theory.long_context import single_frequency_spec
from rope_lens.theory.table1 import spread_psi

EPS = 0.01


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class TestProp31:
    """k = R^r q puts the logit's unique maximum exactly r tokens back."""

    @pytest.mark.parametrize("encoding", ["rope", "p-rope"])
    def test_argmax_is_target(self, encoding):
        targets = [0, 1, 7, 100, 999]
        summary, profiles = distance_argmax(encoding_spec(encoding, 64), targets, max_distance=1000)
        assert summary["argmax_distance"].tolist() == targets
        assert (summary["margin"] > 1e-3).all()  # a strict maximum (Lemma A.1)
        assert len(profiles) == len(targets) * 1001

    def test_nope_has_no_preferred_distance(self):
        summary, _ = distance_argmax(encoding_spec("nope", 64), [5], max_distance=50)
        assert summary["margin"].iloc[0] < 1e-12


class TestThm53Sharpness:
    """Diagonal (q = k = psi) and previous-token (k = R psi) heads sharpen to 1 with |psi|."""

    NORMS = [float(4.0**k) for k in range(-1, 6)]

    @pytest.mark.parametrize("encoding", ["rope", "p-rope"])
    def test_alpha_increases_to_one(self, encoding):
        frame = positional_sharpness(encoding_spec(encoding, 32), self.NORMS, n_positions=48)
        for _, part in frame.groupby("kind"):
            alpha = part.sort_values("norm_sq")["min_alpha"].to_numpy()
            step = np.diff(alpha)
            assert np.all(step >= 0), alpha
            # Strictly increasing until fp64 saturates at 1.
            assert np.all(step[alpha[:-1] < 1 - 1e-9] > 0), alpha
            assert alpha[-1] > 1 - 1e-6

    def test_nope_stays_uniform(self):
        frame = positional_sharpness(encoding_spec("nope", 32), self.NORMS, n_positions=48)
        np.testing.assert_allclose(frame["min_alpha"], 1 / 48, rtol=1e-12)

    def test_matches_the_papers_d2_formula(self):
        """alpha_ii = 1 / (1 + sum_{k<i} exp(|psi|^2 (cos((k - i) g) - 1))) (App. A.2)."""
        g, s, n = 0.7, 9.0, 12
        psi = torch.tensor([math.sqrt(s), 0.0], dtype=torch.float64)
        alpha = target_attention(
            positional_head(psi, single_frequency_spec(g), "diagonal", n), "diagonal"
        )
        for i in range(n):
            formula = 1 / (1 + sum(math.exp(s * (math.cos((k - i) * g) - 1)) for k in range(i)))
            assert float(alpha[i]) == pytest.approx(formula, rel=1e-12)


class TestRequiredNorm:
    """The norm for alpha >= 1 - eps: highest frequencies are cheapest (locally, and per band)."""

    def test_local_closed_form_and_monotone(self):
        spec = encoding_spec("rope", 32)
        frame = required_norm_by_band(spec, n_positions=(2,), band_size=1, eps=EPS)
        expected = [local_closed_form(g, EPS) for g in frame["frequency"]]
        np.testing.assert_allclose(frame["required_norm_sq"], expected, rtol=1e-9)
        assert np.all(np.diff(frame["required_norm_sq"]) > 0)  # frequency falls, cost rises

    @pytest.mark.parametrize("kind", ["diagonal", "previous"])
    def test_monotone_where_no_chunk_wraps(self, kind):
        """Chunks that turn less than pi over the context: cost rises as frequency falls."""
        n = 64
        frame = required_norm_by_band(encoding_spec("rope", 32), (n,), band_size=1, kind=kind)
        slow = frame[frame["frequency"] * (n - 1) <= math.pi]
        assert len(slow) >= 8
        assert np.all(np.diff(slow["required_norm_sq"]) > 0)

    def test_bands_monotone_over_long_context(self):
        frame = required_norm_by_band(encoding_spec("rope", 32), (4096,), band_size=4, eps=EPS)
        assert np.all(np.diff(frame["required_norm_sq"]) > 0), frame["required_norm_sq"]

    def test_single_frequency_fails_over_long_context(self):
        """Near-returns (Lemma A.2) make the fastest single chunk costly beyond ~700 tokens."""
        frame = required_norm_by_band(encoding_spec("rope", 32), (2, 4096), band_size=1)
        fastest = frame[frame["first_chunk"] == 0].set_index("n_positions")["required_norm_sq"]
        assert fastest[4096] > 1e4 * fastest[2]
        assert (
            frame[(frame["n_positions"] == 4096) & (frame["first_chunk"] == 0)][
                "worst_distance"
            ].item()
            == 710
        )  # 710 rad = 113 turns - 6e-5 (355/113 ~ pi)

    @pytest.mark.parametrize("kind", ["diagonal", "previous"])
    def test_threshold_is_exact_on_the_built_head(self, kind):
        spec = encoding_spec("rope", 16)
        freqs = spec.frequencies()
        n = 40
        s = required_norm_sq(freqs, torch.ones_like(freqs), n, EPS, kind)
        at = target_attention(positional_head(spread_psi(spec, s), spec, kind, n), kind).min()
        below = target_attention(
            positional_head(spread_psi(spec, 0.9 * s), spec, kind, n), kind
        ).min()
        assert float(at) == pytest.approx(1 - EPS, abs=1e-9)
        assert float(below) < 1 - EPS

    def test_no_rotation_needs_infinite_norm(self):
        freqs = torch.zeros(4, dtype=torch.float64)
        assert math.isinf(required_norm_sq(freqs, torch.ones(4, dtype=torch.float64), 10, EPS))
