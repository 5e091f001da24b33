"""The third packaged real model, Qwen2.5-Coder-0.5B-Instruct (six PyPI parts), offline.

Slow: a first conversion takes ~2 min on 2 cores (then ~2 s per load, plus the bridge).
"""

import pytest
import torch

from rope_lens.models import load_model, packaged
from rope_lens.models.registry import REGISTRY

pytestmark = pytest.mark.slow

ENTRY = REGISTRY["qwen2.5-coder-0.5b"]


@pytest.fixture(scope="module")
def qwen():
    if not packaged.package_installed(ENTRY):
        pytest.skip(f"Qwen parts not installed: {packaged._install_hint(ENTRY)}")
    return load_model(ENTRY.name, device="cpu")


def test_layout_is_qwen2(qwen):
    assert (qwen.n_layers, qwen.n_heads, qwen.n_kv_heads, qwen.head_dim) == (24, 14, 2, 64)
    assert {s.theta for s in qwen.rope.layer_specs} == {1e6}
    attn = qwen.hf_model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None
    assert packaged.cache_fingerprint(ENTRY)


def test_it_writes_fibonacci(qwen):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(qwen.folder, dtype=torch.float32).eval()
    ids = qwen.tokenizer("def fibonacci(n):\n", return_tensors="pt").input_ids
    out = plain.generate(ids, max_new_tokens=40, do_sample=False)
    text = qwen.tokenizer.decode(out[0])
    assert "return" in text and "n == 1" in text
