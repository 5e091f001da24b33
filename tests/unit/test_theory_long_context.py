"""Thm 6.1: a single-frequency semantic channel is overtaken after ~phi/(2g) tokens."""

import math

import numpy as np
import pytest

from rope_lens.theory import (
    apostrophe_channel,
    encoding_spec,
    overtaking_closed_form,
    overtaking_length,
    overtaking_table,
    paper_rotation_numbers,
)
from rope_lens.theory.long_context import phase_vector

PHASES = (math.pi, math.pi / 2, 3 * math.pi / 2, 2.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def table():
    specs = [
        encoding_spec("rope", 8, 10_000.0),
        encoding_spec("rope", 8, 500_000.0),
        encoding_spec("p-rope", 8, 10_000.0, p=0.75),
    ]
    return overtaking_table(specs, distractor_phases=PHASES)


class TestOvertaking:
    def test_simulation_matches_closed_form(self, table):
        np.testing.assert_array_equal(table["overtaking_length"], table["closed_form"])

    def test_decreases_with_frequency(self, table):
        """Lower frequency (higher chunk index) -> longer reliable context."""
        for _, part in table[table["frequency"] > 0].groupby(
            ["encoding", "theta", "distractor_phase"]
        ):
            lengths = part.sort_values("chunk")["overtaking_length"].to_numpy()
            assert np.all(np.diff(lengths) >= 0)
            assert lengths[-1] > 10 * lengths[0]

    def test_increases_with_theta(self, table):
        rope = table[table["encoding"] == "rope"]
        wide = rope.pivot_table(
            index=["chunk", "distractor_phase"], columns="theta", values="overtaking_length"
        )
        assert (wide[500_000.0] >= wide[10_000.0]).all()
        assert (wide[500_000.0] > wide[10_000.0]).mean() > 0.7

    def test_zero_frequency_is_never_overtaken(self, table):
        static = table[table["frequency"] == 0]
        assert len(static) == len(PHASES)  # int(0.75 * 4) = 3 of 4 chunks rotate
        assert np.isinf(static["overtaking_length"]).all()

    def test_quarter_turn_scaling(self, table):
        """Anti-aligned distractor: N* = pi/(2g) + O(1), the sign flip of a matched key."""
        part = table[(table["distractor_phase"] == math.pi) & (table["frequency"] > 0)]
        quarter = math.pi / (2 * part["frequency"])
        assert (abs(part["overtaking_length"] - quarter) <= 1.5).all()

    def test_identical_key_nearer_wins_at_once(self):
        """phi = 0: the same key one token closer already beats the target (N* = 1)."""
        q = phase_vector(0.0)
        assert overtaking_length(0.01, q, q, q, 2000) == overtaking_closed_form(0.01, 0.0) == 1
        assert math.isinf(overtaking_length(0.0, q, q, phase_vector(1.0), 2000))


class TestPaperNumbers:
    def test_back_of_envelope(self):
        frame = paper_rotation_numbers().set_index("quantity")["computed"]
        assert frame.iloc[0] == pytest.approx(2.04, abs=0.005)  # 128k tokens at g = 1/theta
        assert frame["rotation of g_119 over 8k tokens (rad)"] == pytest.approx(1.64, abs=0.005)
        assert frame["g_119 of Gemma (d=256)"] == pytest.approx(2.05e-4, rel=0.01)

    def test_apostrophe_channel(self):
        frame = apostrophe_channel(thetas=(10_000.0, 100_000.0))
        assert frame["logit_not_bos"].iloc[0] == pytest.approx(-85.5, abs=0.05)
        assert frame["logit_bos"].iloc[0] == pytest.approx(24.9, abs=0.05)
        wide = frame.pivot(index="orientation", columns="theta", values="overtaking_length")
        assert (wide[100_000.0] > 5 * wide[10_000.0]).all()
        # In the HF/JAX orientation the channel survives Gemma's 8k context (App. E.1).
        assert wide.loc[1, 10_000.0] > 8192
