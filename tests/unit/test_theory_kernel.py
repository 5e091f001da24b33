"""The relative RoPE kernel used by the theory module agrees with the toolkit's real rotation."""

import pytest
import torch

from rope_lens.rope import rotate
from rope_lens.theory import encoding_spec, relative_logits, sequence_logits
from rope_lens.theory.kernel import relative_rotation

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class TestEncodingSpecs:
    """NoPE, RoPE and p-RoPE are p-RoPE with p = 0, 1 and p (the paper's §6.1, App. D)."""

    def test_frequency_sets(self):
        nope = encoding_spec("nope", 64).frequencies()
        rope = encoding_spec("rope", 64).frequencies()
        prope = encoding_spec("p-rope", 64, p=0.75).frequencies()
        assert torch.all(nope == 0)
        assert torch.all(rope > 0) and rope[0] == 1.0
        assert int((prope > 0).sum()) == 24
        # p-RoPE keeps standard RoPE's highest frequencies, not re-spaced ones.
        assert torch.equal(prope[:24], rope[:24])


class TestRelativeKernel:
    """q^T R^{-r} k equals the dot product of the absolutely rotated vectors at i and i - r."""

    @pytest.mark.parametrize("encoding", ["rope", "p-rope", "nope"])
    def test_matches_rotate(self, encoding):
        spec = encoding_spec(encoding, 16, 500.0)
        gen = torch.Generator().manual_seed(0)
        q, k = torch.randn(2, 16, generator=gen, dtype=torch.float64)
        i, j = 37, 11
        pos = torch.tensor([[i, j]])
        rot = rotate(torch.stack([q, k])[None, :, None, :], pos, spec)[0, :, 0]
        expected = rot[0] @ rot[1]
        got = relative_logits(q, k, torch.tensor(i - j), spec)
        assert float(got) == pytest.approx(float(expected), rel=1e-12, abs=1e-12)

    def test_rotation_matrix_and_sequence_logits(self):
        spec = encoding_spec("rope", 8, 100.0)
        gen = torch.Generator().manual_seed(1)
        q, k = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
        logits = sequence_logits(q, k, spec)
        assert torch.isinf(logits[0, 1]) and logits[0, 1] < 0  # causal mask
        for i in range(5):
            for j in range(i + 1):
                via_matrix = q[i] @ relative_rotation(spec, i - j) @ k[j]
                assert float(logits[i, j]) == pytest.approx(float(via_matrix), rel=1e-12, abs=1e-12)
