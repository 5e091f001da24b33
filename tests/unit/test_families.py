"""Every tiny family (``rope_lens.models.tiny.FAMILIES``): its measured layout is the one its
modeling code implements (``tests/families.py``, written by hand), and its band norms and head
scores equal a reference computed here, on every attention layer, from the model's own eager
attention: the q / k / v its eager kernel receives and the attention probabilities it returns
(learned sinks, windows and chunks as the model applies them).

The reference never goes through rope-lens' engine: it patches the model file's own
``eager_attention_forward`` to record its inputs and outputs, cuts vectors into chunks with the
pairing written in ``EXPECTED`` (not the measured one), and divides by the attention scaling
written there.
"""

import pytest
import torch

from rope_lens import inputs
from rope_lens.analyses import band_norms, heads
from rope_lens.extract import Site, capture
from rope_lens.models.tiny import FAMILIES
from tests.families import EXPECTED
from tests.helpers import record_eager

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "It's a truth universally acknowledged, that a single man in possession",
    "To be, or not to be",
    "Now is the winter of our discontent made glorious summer",
]
NAMES = sorted(FAMILIES)


def test_every_family_has_an_expected_layout():
    assert sorted(EXPECTED) == NAMES


def _batches(lm):
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 64)
    return list(inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, lm.bos_token_id is not None))


def _pairs(head_dim: int, rotary: int, pairing: str, clockwise: bool) -> torch.Tensor:
    """Chunk k's two dims as HF's rotation pairs them (the test's own reading of the code)."""
    if pairing == "interleaved":
        pairs = [(2 * k, 2 * k + 1) for k in range(head_dim // 2)]
    else:
        tail = head_dim - rotary
        pairs = [(k, k + rotary // 2) for k in range(rotary // 2)]
        pairs += [(rotary + k, rotary + k + tail // 2) for k in range(tail // 2)]
    out = torch.tensor(pairs)
    return out.flip(-1) if clockwise else out


def _expected_rotary(e, layer: int) -> int:
    return e.head_dims.get(layer, e.rotary_dim)


@pytest.mark.parametrize("name", NAMES)
def test_measured_layout_is_the_one_the_code_implements(family, name):
    """Pairing, rotary dims, turning chunks, NoPE layers, layers without attention, windows,
    chunks, learned sinks and index-scaled queries, per layer."""
    _, lm = family(name)
    e = EXPECTED[name]
    rope = lm.rope
    assert dict(rope.skipped) == e.skipped
    assert list(rope.attention_layers) == [i for i in range(lm.n_layers) if i not in e.skipped]
    for layer in rope.attention_layers:
        spec = rope.layer_specs[layer]
        turning = int((spec.frequencies() > 0).sum())
        facts = rope.layer_facts[layer]
        assert spec.head_dim == e.head_dims.get(layer, 16), layer
        if layer in e.nope:
            assert turning == 0 and rope.layer_types[layer].endswith("_nope"), layer
            assert facts["encoding"] == "nope"
            continue
        rotary = _expected_rotary(e, layer)
        assert not rope.layer_types[layer].endswith("_nope"), layer
        assert (spec.pairing, spec.clockwise) == (e.pairing, e.clockwise), layer
        pairs = _pairs(spec.head_dim, rotary, e.pairing, e.clockwise)
        assert torch.equal(spec.dims()[: len(pairs)], pairs), layer
        assert turning == e.turning.get(layer, rotary // 2), layer
        assert spec.attention_scaling == pytest.approx(e.scaling, rel=1e-5), layer
        assert rope.window(layer) == e.window.get(layer), layer
        assert rope.chunk(layer) == e.chunk.get(layer), layer
        assert facts.get("learned_sinks", False) == e.sinks, layer
        scaled = "q" in facts.get("scaled_by_token_index", {})
        assert scaled == (layer in e.index_scaled), layer
    for layer in e.index_scaled:
        assert "q" in rope.layer_facts[layer]["scaled_by_token_index"]
    assert set(rope.describe()["layer_types"]) == set(rope.layer_types)


def _reference(lm, folder, monkeypatch, name):
    """Band norms and head scores of every attention layer from the eager model's own calls."""
    e = EXPECTED[name]
    model, seen = record_eager(folder, monkeypatch)
    norms: dict[tuple[int, str], torch.Tensor] = {}
    scores: dict[int, torch.Tensor] = {}
    n_tok = n_prev = 0
    with torch.no_grad():
        for batch in _batches(lm):
            seen.clear()
            model(batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            assert sorted(seen) == list(lm.rope.attention_layers)
            w = batch.count_mask.double()  # (batch, pos)
            n_tok += int(w.sum())
            n_prev += int(w[:, 1:].sum())
            for layer, got in seen.items():
                d = got["q"].shape[-1]
                rotary = d if layer in e.nope else _expected_rotary(e, layer)
                pairs = _pairs(d, rotary, e.pairing, e.clockwise)
                for kind in "qkv":
                    x = got[kind].double()  # (batch, head, pos, d)
                    c = torch.hypot(x[..., pairs[:, 0]], x[..., pairs[:, 1]])
                    if kind != "v":
                        c = c / e.scaling
                    total = (c * w[:, None, :, None]).sum((0, 2))  # (head, chunk)
                    key = (layer, kind)
                    norms[key] = norms[key] + total if key in norms else total
                p = got["p"].double()  # (batch, head, pos, pos), the model's own weights
                pos = torch.arange(p.shape[-1], dtype=p.dtype)
                parts = [
                    (p.diagonal(0, -2, -1) * w[:, None]).sum((0, 2)),
                    (p.diagonal(-1, -2, -1) * w[:, None, 1:]).sum((0, 2)),
                    (p[..., 0] * w[:, None]).sum((0, 2)),
                    (((pos[:, None] - pos[None, :]).clamp_min(0) * p).sum(-1) * w[:, None]).sum(
                        (0, 2)
                    ),
                    ((-torch.special.xlogy(p, p)).sum(-1) * w[:, None]).sum((0, 2)),
                ]
                total = torch.stack(parts)
                scores[layer] = scores[layer] + total if layer in scores else total
    norms = {key: t / n_tok for key, t in norms.items()}
    divisors = torch.tensor([n_tok, n_prev, n_tok, n_tok, n_tok], dtype=torch.float64)[:, None]
    return norms, {layer: t / divisors for layer, t in scores.items()}


@pytest.mark.parametrize("name", NAMES)
def test_band_norms_and_head_scores_equal_the_models_own_attention(family, monkeypatch, name):
    """Every attention layer: band norms (q, k, v) to 1e-4 relative, and diag / prev / sink
    scores (the default run, the model's own kernel's log-sum-exp) plus the spread columns to
    1e-4, against the reference from the eager model's own calls."""
    folder, lm = family(name)
    layers = list(lm.rope.attention_layers)
    ref_norms, ref_scores = _reference(lm, folder, monkeypatch, name)
    table = band_norms.run(lm, iter(_batches(lm)), layers, progress=False)
    assert set(table.layer) == set(layers)
    for (layer, kind), want in ref_norms.items():
        got = table[(table.layer == layer) & (table.kind == kind)].sort_values(["head", "chunk"])
        got = torch.tensor(got.mean_norm.to_numpy()).reshape(want.shape)
        err = float(((got - want).abs() / want.abs().clamp_min(1.0)).max())
        assert err < 1e-4, (name, layer, kind, err)
    positional = heads.run(lm, iter(_batches(lm)), layers, progress=False)
    spread = heads.run(lm, iter(_batches(lm)), layers, progress=False, spread=True)
    for layer, want in ref_scores.items():
        for frame, cols in ((positional, heads.POSITIONAL), (spread, heads.SCORES)):
            sub = frame[frame.layer == layer].sort_values("head")
            for i, col in enumerate(cols):
                err = float((torch.tensor(sub[col].to_numpy()) - want[i]).abs().max())
                assert err < 1e-4, (name, layer, col, err)


@pytest.mark.parametrize("name", NAMES)
def test_pre_rotation_vectors_do_not_depend_on_the_position(family, name):
    """On a text of one repeated token a layer whose input is the same at every position (the
    eager model's hidden states say from which position on: a convolution before it differs
    for its first few) computes the same pre-rotation vector at those positions: un-rotating
    with the measured layout must undo the model's rotation exactly (frequencies, pairing,
    direction). Queries scaled by the token index are compared by direction. Every family but
    the recurrent hybrids has such layers (layer 0 always is one)."""
    from transformers import AutoModelForCausalLM

    folder, lm = family(name)
    e = EXPECTED[name]
    n = 24
    ids = torch.full((1, n), 40)
    batch = inputs.Batch(ids, torch.ones_like(ids), torch.arange(n)[None], ids > 0)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    starts, spread = {}, {}
    for layer in lm.rope.attention_layers:
        h = hidden[layer][0]
        size = max(1.0, float(h.abs().max()))
        for start in range(n - 8):
            dev = float((h[start:] - h[start]).abs().max()) / size
            if dev <= 1e-5:  # the same input, up to rounding upstream (amplified below)
                starts[layer], spread[layer] = start, dev
                break
    if not e.skipped:
        assert starts.get(0) == 0
    if "linear_attention" not in e.skipped.values():
        assert starts, name
    sites = [Site(layer, kind, "pre") for layer in starts for kind in "qk"]
    acts = capture(lm, batch, sites) if sites else {}
    for site in sites:
        x = acts[site][0, starts[site.layer] :]  # (pos, head, d_head)
        if site.kind == "q" and site.layer in e.index_scaled:
            x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        tol = (2e-5 + 100 * spread[site.layer]) * max(1.0, float(x.abs().max()))
        assert torch.allclose(x, x[:1].expand_as(x), atol=tol), (name, site)
