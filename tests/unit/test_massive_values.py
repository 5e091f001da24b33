"""Massive values: detection on planted outliers against an independent numpy computation of
Jin et al.'s criterion, and the mean-replacement disruption against weight surgery."""

import numpy as np
import pytest
import torch

from rope_lens.analyses import critical
from rope_lens.analyses import massive_values as mv
from rope_lens.analyses.ablation import LossMeter
from rope_lens.errors import InputError
from rope_lens.extract import Site, capture
from rope_lens.rope import rotate
from tests.helpers import one_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Massive values sit in a few dims of the queries and keys!",
]
HEAD, DIMS = 1, (3, 11)  # chunk 3 of a head_dim-16 head: dims 3 and 3 + 8


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    """A tiny Qwen2 (q/k/v biases) whose head 1 has a huge constant in dims 3 and 11 of q and
    of its KV head's k: a planted massive value in chunk 3."""
    from transformers import AutoModelForCausalLM

    from rope_lens.models.tiny import tiny_model_dir

    folder = tiny_model_dir("qwen2", tmp_path_factory.mktemp("planted"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    attn = model.model.layers[0].self_attn
    d = 16
    kv = HEAD // 2  # 4 query heads, 2 KV heads
    with torch.no_grad():
        for dim in DIMS:
            attn.q_proj.bias[HEAD * d + dim] = 40.0
            attn.k_proj.bias[kv * d + dim] = -30.0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["native", "tl"])
def planted(planted_dir, request):
    from rope_lens.models import load_model

    return load_model(str(planted_dir), device="cpu", backend=request.param)


def _batches(lm):
    batch = one_batch(lm, TEXTS)
    return lambda: iter([batch])


def test_planted_dims_are_found_and_match_numpy(planted):
    df = mv.run(planted, _batches(planted), [0, 1], disruption=False, progress=False)
    dims = mv.dims_table(df)
    hit = dims[dims.massive]
    # Exactly the planted dims, in layer 0, in q (head 1) and k (its KV head 0).
    got = set(zip(hit.layer, hit.kind, hit["head"], hit.dim))
    assert got == {(0, "q", HEAD, d) for d in DIMS} | {(0, "k", HEAD // 2, d) for d in DIMS}
    assert set(hit.chunk) == {3} and not dims[(dims.kind == "v")].massive.any()
    crit = critical.run(planted)  # the critical flag is the closed-form table's, chunk by chunk
    want = dict(zip(crit.chunk, crit.critical))
    assert (dims.critical == dims.chunk.map(want)).all()

    # Independent: Jin's M_d from the full captured tensors, in numpy.
    batch = one_batch(planted, TEXTS)
    sites = [Site(layer, kind, "pre") for layer in (0, 1) for kind in "qkv"]
    acts = capture(planted, batch, sites)
    count = batch.count_mask.numpy()
    for site, x in acts.items():
        x = x.numpy()[count]  # (tokens, head, d_head), counted tokens only
        m = np.sqrt((x**2).sum(0))
        ratio = m / m.mean(-1, keepdims=True)
        tok = (np.abs(x) > 5 * np.abs(x).mean(-1, keepdims=True)).mean(0)
        sub = dims[(dims.layer == site.layer) & (dims.kind == site.kind)]
        sub = sub.sort_values(["head", "dim"])
        assert np.allclose(sub.ratio_to_mean.to_numpy(), ratio.reshape(-1), rtol=1e-5)
        assert np.allclose(sub.token_fraction.to_numpy(), tok.reshape(-1))
        assert np.allclose(sub.max_abs.to_numpy(), np.abs(x).max(0).reshape(-1), rtol=1e-5)
        assert (sub.massive.to_numpy() == (ratio.reshape(-1) > 5)).all()
    text = mv.summarize(df)
    assert "q: jin 2/" in text and "k: jin 2/" in text


def test_replace_dims_rotated_equals_rotating_the_edited_vector(planted):
    spec = planted.rope.layer_specs[0]
    torch.manual_seed(0)
    pre = torch.randn(2, 7, 4, 16, dtype=torch.float64)
    pos = torch.arange(7).expand(2, 7)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[1, 3] = mask[2, 15] = True  # single dims: one half of a chunk
    values = torch.randn(4, 16, dtype=torch.float64)
    edited = pre.clone()
    edited[..., mask] = values[mask]
    out = mv.replace_dims_rotated(rotate(pre, pos, spec), pos, spec, mask, values)
    assert torch.allclose(out, rotate(edited, pos, spec), atol=1e-12)


def test_disruption_equals_weight_surgery(planted):
    """Mean-replacing the massive dims equals a model whose q/k projections output exactly
    the mean in those dims (zero weight rows, bias = mean): an independent forward."""
    from transformers import AutoModelForCausalLM

    make = _batches(planted)
    df = mv.run(planted, make, [0, 1], probe_n=2, probe_len=48, progress=False)
    dis = mv.disruption_table(df).set_index("condition")
    assert dis.loc["massive", "n_dims_edited"] == 4 == dis.loc["control", "n_dims_edited"]
    assert dis.loc["baseline", "delta_loss"] == 0

    reducer = mv.MassiveReducer(planted, [0, 1])
    from rope_lens.extract import stream

    stream(planted, make(), [reducer], progress=False)
    means = reducer.means()
    surgery = AutoModelForCausalLM.from_pretrained(planted.folder, dtype=torch.float32).eval()
    attn = surgery.model.layers[0].self_attn
    with torch.no_grad():
        for kind, proj, head in (("q", attn.q_proj, HEAD), ("k", attn.k_proj, HEAD // 2)):
            for dim in DIMS:
                row = head * 16 + dim
                proj.weight[row] = 0
                proj.bias[row] = means[Site(0, kind, "pre")][head, dim]
    batch = next(make())
    meter = LossMeter()
    with torch.no_grad():
        meter(surgery(batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    assert meter.loss == pytest.approx(dis.loc["massive", "loss"], abs=1e-4)
    assert meter.loss != pytest.approx(dis.loc["baseline", "loss"], abs=1e-3)


def test_control_dims_are_non_massive_and_in_the_same_heads(planted):
    df = mv.run(planted, _batches(planted), [0], disruption=False, progress=False)
    dims = mv.dims_table(df)
    massive, control = mv.select_dims(dims, seed=3)
    for key, m in massive.items():
        c = control[key]
        assert (m.sum(1) == c.sum(1)).all() and not (m & c).any()


def test_bad_options_are_one_line(planted):
    with pytest.raises(InputError, match="massive-lambda"):
        mv.analyze(planted, _batches(planted), [0], {"massive_lambda": "big"})
    with pytest.raises(InputError, match="positive"):
        mv.analyze(planted, _batches(planted), [0], {"massive_lambda": 0})
    with pytest.raises(InputError, match="probe"):
        mv.analyze(planted, _batches(planted), [0], {"probe_len": 3})
