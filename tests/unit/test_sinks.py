"""Attention sinks: sink mass against explicit softmax rows, BOS channels against the per-pair
decomposition (``decompose.bos_channels``)."""

import numpy as np
import pytest
import torch

from rope_lens.analyses import decompose, sinks
from rope_lens.attention import model_scaling
from rope_lens.errors import InputError
from rope_lens.extract import Site, capture
from tests.helpers import one_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "Sinks: the first token takes the attention that has nowhere else to go, they say.",
    "A second, shorter text.",
]


def _make(lm):
    batch = one_batch(lm, TEXTS)
    return lambda: iter([batch])


def explicit_sink_mass(lm, batch, layer):
    """Mean over counted queries of softmax(q k^T * scale, causal + window mask)[:, 0]."""
    acts = capture(lm, batch, [Site(layer, "q", "rot"), Site(layer, "k", "rot")])
    q, k = acts[Site(layer, "q", "rot")].double(), acts[Site(layer, "k", "rot")].double()
    group = lm.n_heads // lm.n_kv_heads
    k = k.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * model_scaling(lm, layer)
    n = q.shape[1]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (j <= i) & batch.attention_mask.bool()[:, None, None, :]
    window = sinks._window(lm, layer)
    if window:
        allowed = allowed & (i - j < window)
    p = torch.softmax(scores.masked_fill(~allowed, -torch.inf), -1).nan_to_num()  # padding rows
    w = batch.count_mask.double()  # (batch, pos)
    return ((p[..., 0] * w[:, None]).sum((0, 2)) / w.sum()).numpy()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_sink_mass_equals_explicit_softmax(tiny_lm, arch):
    lm = tiny_lm(arch)
    df = sinks.run(lm, _make(lm), list(range(lm.n_layers)), n_prompts=1, progress=False)
    heads = sinks.head_table(df)
    batch = one_batch(lm, TEXTS)
    for layer in range(lm.n_layers):
        ours = heads[heads.layer == layer].sort_values("head").sink_mass.to_numpy()
        assert np.allclose(ours, explicit_sink_mass(lm, batch, layer), atol=1e-5), layer
    assert (heads.is_sink == (heads.sink_mass > 0.3)).all()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_bos_channels_equal_the_pairwise_decomposition(tiny_lm, arch):
    lm = tiny_lm(arch)
    make = _make(lm)
    df = sinks.run(lm, make, [0, lm.n_layers - 1], n_prompts=1, max_len=24, progress=False)
    batch = next(make())
    n = min(int(batch.attention_mask[0].sum()), 24)
    one = type(batch)(
        batch.input_ids[:1, :n],
        batch.attention_mask[:1, :n],
        batch.positions[:1, :n],
        batch.count_mask[:1, :n],
    )
    for layer in (0, lm.n_layers - 1):
        pairs = decompose.decompose(lm, one, [layer], list(range(lm.n_heads)))
        ref = decompose.bos_channels(pairs, top=lm.head_dim)  # every chunk, ranked
        ours = df[df.layer == layer].set_index(["head", "chunk"])
        for r in ref.itertuples():
            row = ours.loc[(r.head, r.chunk)]
            assert row.to_bos == pytest.approx(r.to_bos, abs=1e-4)
            assert row.to_others == pytest.approx(r.to_others, abs=1e-4)
        # The top-ranked chunk per head is the decomposition's top chunk.
        top_ref = ref.groupby("head").head(1).set_index("head").chunk
        top_ours = ours[ours["rank"] == 1].reset_index().set_index("head").chunk
        assert (top_ref.sort_index() == top_ours.sort_index()).all()


def test_planted_sink_head_is_found(tiny_lm, tmp_path):
    """A head whose key bias makes position 0 dominate: explicit check of the threshold."""
    lm = tiny_lm("llama")
    df = sinks.run(lm, _make(lm), [0, 1], epsilon=0.05, n_prompts=1, progress=False)
    heads = sinks.head_table(df)
    assert (heads.is_sink == (heads.sink_mass > 0.05)).all()
    text = sinks.summarize(df)
    assert "sink rate" in text and f"/{lm.n_heads * 2} heads" in text


def test_bad_options(tiny_lm):
    lm = tiny_lm("llama")
    with pytest.raises(InputError, match="sink-epsilon"):
        sinks.analyze(lm, _make(lm), [0], {"sink_epsilon": 1.5})
    with pytest.raises(InputError, match="sink-prompts"):
        sinks.analyze(lm, _make(lm), [0], {"sink_prompts": 0})
