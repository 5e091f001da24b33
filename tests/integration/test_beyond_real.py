"""The beyond-the-paper analyses on the packaged real models (slow: loads each model)."""

import pytest

from rope_lens.analyses import critical
from rope_lens.models import load_model

pytestmark = pytest.mark.slow

# (model, layer type) -> (theta, trained context, first critical chunk), as docs/analyses/critical.md
EXPECTED = {
    ("smollm2-135m", "full_attention"): (1e5, 8192, 20),
    ("qwen2.5-coder-0.5b", "full_attention"): (1e6, 32768, 20),
    ("gemma3-270m", "sliding_attention"): (1e4, 512, 62),
    ("gemma3-270m", "full_attention"): (1e6, 32768, 80),
}


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"])
def test_critical_chunks_of_the_packaged_models(name):
    lm = load_model(name, device="cpu")
    df = critical.run(lm)
    for layer_type, sub in df.groupby("layer_type"):
        theta, context, first = EXPECTED[(name, layer_type)]
        assert sub.theta.iloc[0] == theta and sub.context.iloc[0] == context
        assert sub[sub.critical].chunk.min() == first
        assert first == critical.first_critical_chunk(theta, lm.head_dim, context)
