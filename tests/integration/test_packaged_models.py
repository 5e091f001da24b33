"""The real packaged models (SmolLM2-135M, Gemma-3-270M), offline, end to end.

Slow-ish (a first conversion takes ~20-60 s per model on 2 cores; then ~2 s per load).
"""

import pytest
import torch

from rope_lens import rope
from rope_lens.extract import Site, capture
from rope_lens.models import load_model
from tests.helpers import one_batch

pytestmark = pytest.mark.slow

TEXTS = ["I'm sure it's the book you'd like", "The capital of France is Paris."]


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def real_lm(request):
    return load_model(request.param, device="cpu")


def test_real_rope_parameters(real_lm):
    """Frequencies come from the real config: SmolLM2 theta 1e5; Gemma 3 1e4 sliding / 1e6 full."""
    thetas = {k: s.theta for s, k in zip(real_lm.rope.layer_specs, real_lm.rope.layer_types)}
    if real_lm.name == "smollm2-135m":
        assert thetas == {"full_attention": 100_000.0}
        assert (real_lm.n_heads, real_lm.n_kv_heads, real_lm.head_dim) == (9, 3, 64)
    else:
        assert thetas == {"sliding_attention": 10_000.0, "full_attention": 1_000_000.0}
        assert real_lm.rope.qk_norm and real_lm.head_dim == 256


def test_rotation_reproduces_hooks(real_lm):
    """Rotating the pre-rotation vectors reproduces hook_rot_q/k in every checked layer (on
    the TransformerLens backend, whose pre-rotation hooks do not depend on our layout; the
    native engine's vectors are compared with these in test_backends_real.py)."""
    real_lm = load_model(real_lm.name, device="cpu", backend="tl")
    batch = one_batch(real_lm, TEXTS)
    layers = sorted({0, 5, real_lm.n_layers - 1})
    sites = [
        Site(layer, kind, stage) for layer in layers for kind in "qk" for stage in ("pre", "rot")
    ]
    acts = capture(real_lm, batch, sites)
    for layer in layers:
        spec = real_lm.rope.layer_specs[layer]
        for kind in "qk":
            pre, rot = acts[Site(layer, kind, "pre")], acts[Site(layer, kind, "rot")]
            scale = rot.abs().max()
            err = (rope.rotate(pre.double(), batch.positions, spec) - rot.double()).abs().max()
            assert err <= 1e-5 * max(1.0, float(scale)), (layer, kind, float(err))


def test_native_logits_equal_plain_transformers(real_lm):
    """The model with rope-lens' attention wrapper computes the logits of a plain HF eager
    forward (outside a run the wrapper is the model's own kernel)."""
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(
        real_lm.folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    batch = one_batch(real_lm, TEXTS)
    with torch.no_grad():
        ours = real_lm.hf_model(batch.input_ids, attention_mask=batch.attention_mask).logits
        ref = plain(batch.input_ids, attention_mask=batch.attention_mask).logits
    mask = batch.attention_mask.bool()
    assert (ours[mask] - ref[mask]).abs().max() < 1e-3


def test_cli_runs_offline(real_lm, tmp_path, capsys):
    """`rope-lens analyze --model NAME` runs end to end on the packaged model."""
    from rope_lens import cli
    from rope_lens.io import load_table

    code = cli.main(
        [
            "analyze",
            "--model",
            real_lm.name,
            "--out",
            str(tmp_path),
            "--no-progress",
            "--limit",
            "3",
        ]
    )
    assert code == 0
    df, meta = load_table(tmp_path / "band_norm.parquet")
    assert df.layer.nunique() == real_lm.n_layers and meta["model"] == real_lm.name
    assert "largest-norm chunks by band" in capsys.readouterr().out
