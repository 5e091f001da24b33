"""Frequency math against transformers' own rope utilities and RoPE's defining properties."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from rope_lens import rope
from rope_lens.rope import RopeError, RopeSpec


def _hf_inv_freq(params: dict, head_dim: int = 64) -> tuple[torch.Tensor, float]:
    cfg = LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        rope_parameters=params,
        max_position_embeddings=32768,
    )
    if params["rope_type"] == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        return LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    return ROPE_INIT_FUNCTIONS[params["rope_type"]](cfg)


class TestInvFreqMatchesTransformers:
    """Our pure-torch formulas equal transformers 5.x for every rope type we support."""

    @pytest.mark.parametrize(
        "params",
        [
            {"rope_type": "default", "rope_theta": 10_000.0},
            {"rope_type": "linear", "rope_theta": 10_000.0, "factor": 4.0},
            {
                "rope_type": "llama3",
                "rope_theta": 500_000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            {
                "rope_type": "yarn",
                "rope_theta": 1_000_000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 4096,
            },
            {"rope_type": "proportional", "rope_theta": 1_000_000.0, "partial_rotary_factor": 0.25},
            {"rope_type": "proportional", "rope_theta": 10_000.0, "partial_rotary_factor": 0.75},
        ],
        ids=lambda p: f"{p['rope_type']}-{p.get('partial_rotary_factor', '')}",
    )
    def test_matches(self, params):
        ref, ref_scaling = _hf_inv_freq(dict(params))
        spec = rope.spec_from_rope_parameters(params, head_dim=64, max_position_embeddings=32768)
        ours = spec.frequencies()[: len(ref)]
        torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-6, atol=0)
        assert spec.attention_scaling == pytest.approx(ref_scaling)

    def test_llama3_changes_only_low_frequencies(self):
        """llama3 scaling keeps short wavelengths and divides long ones by the factor."""
        base = rope.default_inv_freq(500_000.0, 128)
        scaled = rope.llama3_inv_freq(500_000.0, 128, 8.0, 1.0, 4.0, 8192)
        wl = 2 * math.pi / base
        assert torch.equal(scaled[wl < 8192 / 4], base[wl < 8192 / 4])
        torch.testing.assert_close(scaled[wl > 8192], base[wl > 8192] / 8)


class TestPRope:
    """p-RoPE and its variants exactly as the paper defines them (§6.1, App. D, Table 2)."""

    def test_075_at_head_dim_256(self):
        freq = rope.p_rope_inv_freq(10_000.0, 256, 0.75)
        assert (freq > 0).sum() == 96 and (freq[96:] == 0).all()
        # kept frequencies are standard RoPE's highest, not re-spaced
        torch.testing.assert_close(freq[:96], rope.default_inv_freq(10_000.0, 256)[:96])
        assert freq[95].item() == pytest.approx(10_000.0 ** (-190 / 256))

    def test_p_zero_is_nope_and_one_is_rope(self):
        assert (rope.p_rope_inv_freq(10_000.0, 64, 0.0) == 0).all()
        torch.testing.assert_close(
            rope.p_rope_inv_freq(10_000.0, 64, 1.0), rope.default_inv_freq(10_000.0, 64)
        )

    def test_reversed(self):
        freq = rope.reversed_p_rope_inv_freq(10_000.0, 256, 0.75)
        assert (freq[:32] == 0).all() and (freq[32:] > 0).all()

    def test_partial_keeps_lowest_frequency(self):
        dim = rope.partial_rotary_dim(256, 0.75)
        freq = rope.default_inv_freq(10_000.0, dim)
        assert dim == 192 and len(freq) == 96
        assert freq[-1].item() == pytest.approx(10_000.0 ** (-190 / 192))  # ~1/theta

    def test_proportional_equals_p_rope(self):
        """transformers' proportional rope type is the paper's p-RoPE (same frequency set)."""
        for p in (0.25, 0.5, 0.75):
            ref, _ = _hf_inv_freq(
                {"rope_type": "proportional", "rope_theta": 10_000.0, "partial_rotary_factor": p},
                head_dim=256,
            )
            torch.testing.assert_close(
                rope.p_rope_inv_freq(10_000.0, 256, p).float(), ref.float(), rtol=1e-6, atol=0
            )

    @pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
    def test_invalid_p(self, p):
        with pytest.raises(RopeError, match="p must be"):
            rope.p_rope_inv_freq(10_000.0, 64, p)

    def test_odd_head_dim(self):
        with pytest.raises(RopeError, match="even"):
            RopeSpec(head_dim=63, inv_freq=torch.ones(3))


class TestRotation:
    """Rotation properties that any correct RoPE must have."""

    @pytest.fixture(params=["half", "interleaved"])
    def spec(self, request):
        return RopeSpec(
            head_dim=16, inv_freq=rope.default_inv_freq(100.0, 16), pairing=request.param
        )

    def test_chunk_norms_are_rotation_invariant(self, spec):
        x = torch.randn(2, 5, 3, 16, dtype=torch.float64)
        pos = torch.arange(5).expand(2, 5) + 7
        torch.testing.assert_close(
            rope.chunk_norms(rope.rotate(x, pos, spec), spec), rope.chunk_norms(x, spec)
        )

    def test_relative_position_property(self, spec):
        """<R^i q, R^j k> depends only on j - i (Eq. 3)."""
        q, k = (
            torch.randn(1, 1, 1, 16, dtype=torch.float64),
            torch.randn(1, 1, 1, 16, dtype=torch.float64),
        )

        def logit(i, j):
            qi = rope.rotate(q, torch.tensor([[i]]), spec)
            kj = rope.rotate(k, torch.tensor([[j]]), spec)
            return (qi * kj).sum()

        torch.testing.assert_close(logit(3, 10), logit(103, 110))

    def test_unrotate_inverts(self, spec):
        x = torch.randn(1, 4, 2, 16, dtype=torch.float64)
        pos = torch.arange(4)[None]
        torch.testing.assert_close(rope.unrotate(rope.rotate(x, pos, spec), pos, spec), x)

    def test_chunk_roundtrip(self, spec):
        x = torch.randn(3, 16)
        assert torch.equal(rope.from_chunks(rope.to_chunks(x, spec), spec), x)

    def test_half_and_interleaved_agree_up_to_permutation(self):
        """The two layouts are the same rotation on permuted dims."""
        inv = rope.default_inv_freq(100.0, 8)
        half = RopeSpec(head_dim=8, inv_freq=inv, pairing="half")
        inter = RopeSpec(head_dim=8, inv_freq=inv, pairing="interleaved")
        perm = rope.chunk_dims(8, 8, "half").reshape(-1)  # half-layout dims in interleaved order
        x = torch.randn(1, 3, 1, 8, dtype=torch.float64)
        pos = torch.arange(3)[None]
        torch.testing.assert_close(
            rope.rotate(x, pos, half)[..., perm], rope.rotate(x[..., perm], pos, inter)
        )

    def test_matches_hf_rotate_half(self):
        """Our "half" rotation equals transformers' apply_rotary_pos_emb."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        spec = RopeSpec(head_dim=16, inv_freq=rope.default_inv_freq(10_000.0, 16))
        x = torch.randn(2, 6, 3, 16)
        pos = torch.arange(6).expand(2, 6)
        freqs = pos[..., None].float() * spec.inv_freq.float()
        emb = torch.cat([freqs, freqs], -1)
        ref, _ = apply_rotary_pos_emb(x, x, emb.cos(), emb.sin(), unsqueeze_dim=2)
        torch.testing.assert_close(rope.rotate(x, pos, spec), ref, atol=1e-6, rtol=1e-5)

    def test_partial_rotary_leaves_tail_unrotated(self):
        spec = RopeSpec(head_dim=16, inv_freq=rope.default_inv_freq(100.0, 8))
        x = torch.randn(1, 3, 1, 16)
        out = rope.rotate(x, torch.arange(3)[None] + 5, spec)
        assert torch.equal(out[..., 8:], x[..., 8:])
        assert spec.frequencies()[4:].eq(0).all() and torch.isinf(spec.wavelengths()[4:]).all()
