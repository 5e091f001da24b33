"""Each training encoding's frequency set and rotation, exactly as the paper defines them
(§6.1, App. D)."""

import pytest
import torch

from rope_lens import rope
from rope_lens.errors import CheckpointError, InputError
from rope_lens.rope import RopeSpec
from rope_lens.train.encodings import TABLE2_ENCODINGS, apply_inv_freq, get_encoding

THETA = 10_000.0


class TestFrequencySets:
    """The seven Table 2 rows at Gemma 2B's head_dim 256."""

    def test_075_rope_keeps_96_highest(self):
        f = get_encoding("0.75-rope").inv_freq(256)
        assert f.shape == (128,) and (f[:96] > 0).all() and (f[96:] == 0).all()
        torch.testing.assert_close(f[:96], rope.default_inv_freq(THETA, 256)[:96])  # not re-spaced

    def test_025_rope_keeps_32_highest(self):
        f = get_encoding("0.25-rope").inv_freq(256)
        assert (f > 0).sum() == 32 and (f[32:] == 0).all()

    def test_reversed_removes_32_highest(self):
        f = get_encoding("0.75-RoPE_reversed").inv_freq(256)
        assert (f[:32] == 0).all()
        torch.testing.assert_close(f[32:], rope.default_inv_freq(THETA, 256)[32:])

    def test_partial_recomputes_over_192_dims(self):
        f = get_encoding("0.75-rope-partial").inv_freq(256)
        torch.testing.assert_close(f[:96], rope.default_inv_freq(THETA, 192))
        assert (f[96:] == 0).all()
        assert f[95].item() == pytest.approx(THETA ** (-190 / 192))  # keeps ~1/θ, unlike p-RoPE

    def test_nope_and_rope(self):
        assert (get_encoding("nope").inv_freq(256) == 0).all()
        torch.testing.assert_close(
            get_encoding("rope").inv_freq(256), rope.default_inv_freq(THETA, 256)
        )
        f = get_encoding("rope-500k").inv_freq(256)
        torch.testing.assert_close(f, rope.default_inv_freq(500_000.0, 256))
        assert get_encoding("rope-500k").theta == 500_000.0

    def test_p_one_is_rope_and_zero_is_nope(self):
        torch.testing.assert_close(
            get_encoding("1-rope").inv_freq(64), get_encoding("rope").inv_freq(64)
        )
        assert (get_encoding("0-rope").inv_freq(64) == 0).all()

    def test_table_names_are_canonical(self):
        assert [get_encoding(n).name for n, _ in TABLE2_ENCODINGS] == [
            n for n, _ in TABLE2_ENCODINGS
        ]


class TestBadInput:
    """Unknown names, p outside [0, 1] and odd head_dim are InputErrors."""

    @pytest.mark.parametrize("name", ["alibi", "rope-x", "0.75-rope-sideways", "", "p-rope"])
    def test_unknown(self, name):
        with pytest.raises(InputError, match="encoding"):
            get_encoding(name)

    @pytest.mark.parametrize("name", ["1.5-rope", "-0.1-rope", "2-rope-partial", "1e3-rope"])
    def test_p_out_of_range(self, name):
        with pytest.raises(InputError, match=r"p must be in \[0, 1\]"):
            get_encoding(name)

    @pytest.mark.parametrize("head_dim", [255, 1, 0])
    def test_odd_head_dim(self, head_dim):
        with pytest.raises(InputError, match="even"):
            get_encoding("0.75-rope").inv_freq(head_dim)


class TestHFEquivalence:
    """transformers' rope_type="proportional" is the paper's p-RoPE, so p-RoPE checkpoints load
    correctly even without rope_lens; the frequencies then drive HF's own rotation."""

    @pytest.mark.parametrize("p", [0.0, 0.25, 0.75, 1.0])
    def test_proportional_equals_p_rope(self, p):
        from transformers import GemmaConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        enc = get_encoding(f"{p}-rope")
        cfg = GemmaConfig(
            head_dim=256,
            hidden_size=512,
            num_attention_heads=2,
            rope_parameters=enc.hf_rope_parameters(),
        )
        ref, scaling = ROPE_INIT_FUNCTIONS["proportional"](cfg)
        torch.testing.assert_close(ref.double(), enc.inv_freq(256), rtol=1e-6, atol=0)
        assert scaling == 1.0

    @pytest.mark.parametrize("name", ["0.75-rope-reversed", "0.75-rope-partial", "nope"])
    def test_patched_hf_rotation_matches_rope_rotate(self, name):
        """After apply_inv_freq, HF's rotary embedding + rotate_half equals rope.rotate."""
        from transformers import GemmaConfig
        from transformers.models.gemma.modeling_gemma import GemmaModel, apply_rotary_pos_emb

        enc = get_encoding(name)
        cfg = GemmaConfig(
            vocab_size=16,
            hidden_size=32,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
        )
        model = GemmaModel(cfg)
        apply_inv_freq(model, enc.inv_freq(32))
        x = torch.randn(2, 7, 3, 32)  # (batch, pos, head, d_head)
        pos = torch.arange(7).expand(2, 7) + 3
        cos, sin = model.rotary_emb(x, pos)
        hf, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)
        torch.testing.assert_close(hf, rope.rotate(x, pos, enc.rope_spec(32)), atol=2e-5, rtol=1e-5)

    def test_wrong_length_is_a_checkpoint_error(self):
        from transformers import GemmaConfig
        from transformers.models.gemma.modeling_gemma import GemmaModel

        cfg = GemmaConfig(
            vocab_size=16,
            hidden_size=32,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
        )
        with pytest.raises(CheckpointError, match="16"):
            apply_inv_freq(GemmaModel(cfg), torch.ones(8))


def _paper_rotation(x, pos, head_dim, slots_inf, theta=THETA):
    """The paper's App. D JAX recipe, transcribed independently of rope_lens.rope: timescale
    θ^(2j/d) per slot j, ∞ on the slots in ``slots_inf`` (angle 0), rotate-half application."""
    half = head_dim // 2
    timescale = theta ** (2 * torch.arange(half, dtype=torch.float64) / head_dim)
    timescale[slots_inf] = float("inf")
    angle = pos[..., None].double() / timescale  # (batch, pos, slot)
    sin, cos = angle.sin()[:, :, None], angle.cos()[:, :, None]  # broadcast over heads
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], -1)


class TestPaperRecipe:
    """The model the trainer builds rotates q/k exactly as the paper's p-RoPE listing says, at
    Gemma 2B's head_dim 256 (0.75-RoPE: 96 rotating slots, 32 fixed; reversed: the 32 highest
    fixed; 0.25-RoPE: 32 rotating; NoPE: none; RoPE: all)."""

    @pytest.mark.parametrize(
        ("name", "slots_inf"),
        [
            ("0.75-rope", slice(96, 128)),
            ("0.25-rope", slice(32, 128)),
            ("0.75-rope-reversed", slice(0, 32)),
            ("nope", slice(0, 128)),
            ("rope", slice(0, 0)),
        ],
    )
    def test_built_model_rotation(self, name, slots_inf):
        from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

        from rope_lens.train.config import ModelConfig
        from rope_lens.train.model import build_model

        cfg = ModelConfig(
            vocab_size=16, d_model=32, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=256, d_ff=8
        )
        model = build_model(cfg, get_encoding(name), 8192).double()
        x = torch.randn(1, 6, 2, 256, dtype=torch.float64)  # (batch, pos, head, d_head)
        pos = torch.tensor([[0, 1, 7, 100, 4000, 8191]])
        cos, sin = model.model.rotary_emb(x, pos)
        hf, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)
        # HF keeps inv_freq and computes angles in fp32: ~1e-3 rad of error at position 8191.
        # A wrong slot would be off by O(1) there.
        torch.testing.assert_close(hf, _paper_rotation(x, pos, 256, slots_inf), atol=5e-3, rtol=0)
        fixed = torch.zeros(128, dtype=torch.bool)
        fixed[slots_inf] = True
        assert torch.equal(get_encoding(name).inv_freq(256) == 0, fixed)
        dims = torch.cat([torch.arange(128)[fixed], torch.arange(128)[fixed] + 128])
        assert torch.equal(hf[..., dims], x[..., dims])  # fixed slots: exactly the identity


class TestPartialIsPermutedNeoX:
    """0.75-RoPE_partial as a full rotate-half head with [g(θ, 0.75d), 0...] is GPT-NeoX partial
    rotary up to a fixed permutation of head coordinates (absorbed by W_Q, W_K when training)."""

    @pytest.mark.parametrize("head_dim", [16, 256])
    def test_permutation(self, head_dim):
        enc = get_encoding("0.75-rope-partial")
        full = enc.rope_spec(head_dim)  # rotate-half over the whole head, tail frequencies 0
        r = rope.partial_rotary_dim(head_dim, 0.75)
        neox = RopeSpec(head_dim=head_dim, inv_freq=rope.default_inv_freq(THETA, r))
        # chunk k in each layout -> its two dims; lining the chunks up gives the permutation
        perm = torch.empty(head_dim, dtype=torch.long)
        perm[rope.chunk_dims(head_dim, r, "half").reshape(-1)] = rope.chunk_dims(
            head_dim, head_dim, "half"
        ).reshape(-1)
        x = torch.randn(2, 9, 2, head_dim, dtype=torch.float64)
        pos = torch.arange(9).expand(2, 9) * 37
        torch.testing.assert_close(
            rope.rotate(x, pos, full)[..., perm], rope.rotate(x[..., perm], pos, neox)
        )

    def test_neox_reference(self):
        """Independent NeoX formula: rotate_half on the first r dims, pass the rest through."""
        from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

        d, r = 16, rope.partial_rotary_dim(16, 0.75)
        inv = rope.default_inv_freq(THETA, r).float()
        x = torch.randn(1, 5, 1, d)
        pos = torch.arange(5)[None]
        ang = pos[..., None].float() * inv
        emb = torch.cat([ang, ang], -1)
        rot, _ = apply_rotary_pos_emb(x[..., :r], x[..., :r], emb.cos(), emb.sin(), unsqueeze_dim=2)
        ref = torch.cat([rot, x[..., r:]], -1)
        neox = RopeSpec(head_dim=d, inv_freq=rope.default_inv_freq(THETA, r))
        torch.testing.assert_close(rope.rotate(x, pos, neox), ref, atol=1e-5, rtol=1e-5)
