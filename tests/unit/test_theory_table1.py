"""Table 1 computed from frequency sets equals the paper's table."""

import math

import pytest

from rope_lens.theory import PAPER_TABLE1, table1, table1_markdown

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize(
    "d_head, theta, p", [(64, 10_000.0, 0.75), (16, 500_000.0, 0.25), (128, 10_000.0, 0.5)]
)
def test_matches_paper(d_head, theta, p):
    frame = table1(d_head=d_head, theta=theta, p=p, n_positions=32).set_index("encoding")
    for encoding, expected in PAPER_TABLE1.items():
        assert bool(frame.loc[encoding, "positional"]) == expected["positional"], encoding
        assert bool(frame.loc[encoding, "semantic"]) == expected["semantic"], encoding


def test_evidence_columns():
    frame = table1(d_head=32, n_positions=32, eps=0.01).set_index("encoding")
    for encoding in ("rope", "p-rope"):
        for kind in ("diagonal", "previous"):
            assert math.isfinite(frame.loc[encoding, f"{kind}_norm_sq"])
            assert frame.loc[encoding, f"{kind}_alpha"] >= 0.99 - 1e-9
    # NoPE: no finite norm, and the built head stays at the uniform 1/n.
    assert math.isinf(frame.loc["nope", "diagonal_norm_sq"])
    assert frame.loc["nope", "diagonal_alpha"] == pytest.approx(1 / 32)
    # RoPE's most robust channel flips after ~pi/(2 g_min) tokens; p-RoPE's never does.
    assert 1e3 < frame.loc["rope", "semantic_horizon_tokens"] < 1e5
    assert math.isinf(frame.loc["p-rope", "semantic_horizon_tokens"])


def test_markdown_layout():
    text = table1_markdown(table1(d_head=16, n_positions=16))
    assert text.splitlines() == [
        "| Encoding | NoPE | RoPE | p-RoPE |",
        "|---|---|---|---|",
        "| Positional | ✗ | ✓ | ✓ |",
        "| Semantic | ✓ | ✗ | ✓ |",
    ]
