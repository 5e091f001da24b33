"""Native engine vs TransformerLens bridge on the real packaged models: the same tables.

The bridge's pre-rotation hooks are independent of the layout the native engine reads from
the model's rotation, so agreement checks that layout (frequencies, pairing, QK-norm, GQA) on
real checkpoints, and every analysis path of the native engine (no [T, T] head scores, q/k
edits before the kernel) against the bridge's eager attention.
"""

import pytest

from rope_lens import inputs
from rope_lens.analyses import ablation, band_norms, heads, profiles
from rope_lens.extract import Site, capture
from rope_lens.models import load_model
from tests.helpers import one_batch

pytestmark = pytest.mark.slow

TEXTS = [
    "It's a truth universally acknowledged, that a single man in possession of a good fortune",
    "To be, or not to be, that is the question",
    "The capital of France is Paris, and the capital of Italy is Rome.",
]


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def pair(request):
    return (
        load_model(request.param, device="cpu"),
        load_model(request.param, device="cpu", backend="tl"),
    )


def _make(lm):
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 48)
    return lambda: inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, True)


def _close(a, b, tol=1e-4):
    num = [c for c in a.select_dtypes("number").columns]
    scale = max(1.0, float(b[num].abs().max().max()))
    err = float((a[num] - b[num]).abs().max().max())
    assert err < tol * scale, err


def test_native_vectors_equal_the_bridge_hooks(pair):
    native, tl = pair
    batch = one_batch(native, TEXTS[:2], window=48)
    layers = [0, native.n_layers // 2, native.n_layers - 1]
    sites = [Site(L, k, s) for L in layers for k in "qk" for s in ("pre", "rot")]
    ours, ref = capture(native, batch, sites), capture(tl, batch, sites)
    real = batch.attention_mask.bool()
    for site in sites:
        scale = max(1.0, float(ref[site].abs().max()))
        assert (ours[site][real] - ref[site][real]).abs().max() < 1e-4 * scale, site


def test_backends_agree_on_the_streaming_analyses(pair):
    native, tl = pair
    make = _make(native)
    layers = [0, 1, native.n_layers - 1]
    for module in (band_norms, heads, profiles):
        _close(
            module.run(native, make(), layers, progress=False),
            module.run(tl, make(), layers, progress=False),
        )
    n = native.head_dim // 2
    configs = [
        ablation.Ablation("rotation-free", n - n // 4, n, (0, 1)),
        ablation.Ablation("mean", 0, n // 4, (1,), (2,)),
    ]
    _close(
        ablation.run_ablations(native, make, configs, score_layers=layers, progress=False),
        ablation.run_ablations(tl, make, configs, score_layers=layers, progress=False),
    )
