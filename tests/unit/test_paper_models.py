"""RoPE layouts of the paper's models, from their public configs (no weights needed)."""

import math

import pytest
from transformers import GemmaConfig, LlamaConfig

from rope_lens.models.rope_config import rope_layout

GEMMA_7B = dict(
    hidden_size=3072,
    num_attention_heads=16,
    num_key_value_heads=16,
    head_dim=256,
    num_hidden_layers=28,
    rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
    max_position_embeddings=8192,
)
LLAMA_31_8B = dict(
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    num_hidden_layers=32,
    max_position_embeddings=131072,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500_000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)


def test_gemma_7b():
    """128 chunks; the apostrophe head's g_119 (chunk 118) is ~2.05e-4 and turns ~pi/2 in 8k."""
    layout = rope_layout(GemmaConfig(**GEMMA_7B), has_qk_norm=False)
    freq = layout.layer_specs[0].frequencies()
    assert (layout.n_layers, layout.n_heads, len(freq)) == (28, 16, 128)
    assert freq[118].item() == pytest.approx(2.05e-4, rel=0.01)
    assert 8000 * freq[118].item() == pytest.approx(1.64, abs=0.01)
    # Fig 10's Gemma comparison point 10000^-0.8 is chunk ~102 of 128
    assert freq[102].item() == pytest.approx(10_000**-0.8, rel=0.05)


def test_llama_31_8b_llama3_scaling():
    """GQA 32/8, 64 chunks; llama3 scaling leaves the fast chunks and divides slow ones by 8.

    The paper's Fig 10 remark uses 500000^(-40/64) = 2.7e-4 for chunk 40; with the llama3
    scaling Llama 3.1 actually applies, that chunk's wavelength (~23k tokens > 8192) is
    interpolated to 1/8 of it.
    """
    layout = rope_layout(LlamaConfig(**LLAMA_31_8B), has_qk_norm=False)
    spec = layout.layer_specs[0]
    freq = spec.frequencies()
    assert (layout.n_heads, layout.n_kv_heads, len(freq)) == (32, 8, 64)
    assert spec.rope_type == "llama3" and freq[0].item() == 1.0
    plain_40 = 500_000 ** (-80 / 128)
    assert plain_40 == pytest.approx(2.7e-4, rel=0.02)
    assert freq[40].item() == pytest.approx(plain_40 / 8, rel=1e-6)
    assert 2 * math.pi / freq[-1].item() > 1e6  # slowest chunk: over a million tokens per turn


def test_qk_norm_after_rope_is_refused():
    """HunYuan-style configs norm *after* rotation: the "_normed" hook would be post-rotation."""
    from rope_lens.rope import RopeError

    cfg = LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2)
    assert rope_layout(cfg, has_qk_norm=False).layer_specs[0].head_dim == 16
    cfg.qk_norm_after_rope = True
    with pytest.raises(RopeError, match="after RoPE is not supported"):
        rope_layout(cfg, has_qk_norm=True)
