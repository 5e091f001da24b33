"""Prop 5.2: on [bos, x, x] no NoPE head gives either copy of x more than 1/2 attention."""

import numpy as np
import pytest

from rope_lens.theory import adversarial_search, encoding_spec, random_weight_search

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class TestRandomHeads:
    """2000 random heads, logits from ~0.1 to saturating."""

    def test_nope_bound_and_identity(self):
        frame = random_weight_search(encoding_spec("nope", 8), n_draws=2000)
        logits = frame[["logit_3_1", "logit_3_2", "logit_3_3"]].abs().to_numpy()
        assert logits.max() > 50  # the draws do reach the saturated regime
        # The exact identity a_{3,3} = a_{3,2}, up to fp64 round-off.
        assert (frame["identity_gap"] <= 1e-12 * (1 + logits.max(axis=1))).all()
        assert (frame[["alpha_3_2", "alpha_3_3"]] <= 0.5).all().all()
        # Strictly below 1/2: the margin is positive and representable for every draw.
        assert (frame[["margin_3_2", "margin_3_3"]] > 0).all().all()
        np.testing.assert_allclose(frame["alpha_3_2"], frame["alpha_3_3"], rtol=1e-12)

    @pytest.mark.parametrize("encoding", ["rope", "p-rope"])
    def test_rope_breaks_the_tie(self, encoding):
        """Control: with positions the same random heads often exceed 1/2."""
        frame = random_weight_search(encoding_spec(encoding, 8), n_draws=2000)
        assert (frame["alpha_3_3"] > 0.5).mean() > 0.1
        assert (frame["alpha_3_2"] > 0.5).mean() > 0.1


class TestAdversary:
    """Gradient ascent on alpha over all weights: NoPE creeps up to 1/2, RoPE reaches ~1."""

    @pytest.mark.parametrize("target", ["diagonal", "previous"])
    def test_nope_never_passes_half(self, target):
        frame = adversarial_search(encoding_spec("nope", 8), target, steps=150, restarts=4)
        assert (frame["alpha"] <= 0.5).all()
        assert (frame["margin"] > 0).all()
        assert frame["alpha"].iloc[-1] > 0.49  # the bound is tight

    @pytest.mark.parametrize("target", ["diagonal", "previous"])
    def test_rope_gets_close_to_one(self, target):
        frame = adversarial_search(encoding_spec("rope", 8), target, steps=150, restarts=4)
        assert frame["alpha"].iloc[-1] > 0.99
