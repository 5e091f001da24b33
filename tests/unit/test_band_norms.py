"""Streaming band norms against a naive computation from full cached tensors."""

import pytest
import torch

from rope_lens import inputs, rope
from rope_lens.analyses import band_norms
from rope_lens.extract import Site, capture
from tests.helpers import one_batch

TEXTS = [
    "Shall I compare thee to a summer's day?",
    "Thou art more lovely",
    "and more temperate: rough winds do shake the darling buds of May",
]


def _naive(lm, batch, layer, kind, stage="pre"):
    """Mean chunk norm per head from the full captured tensor, counted tokens only."""
    x = capture(lm, batch, [Site(layer, kind, stage)])[Site(layer, kind, stage)].double()
    spec = lm.rope.layer_specs[layer]
    norms = rope.chunk_norms(
        x, rope.RopeSpec(head_dim=spec.head_dim, inv_freq=spec.inv_freq, pairing=spec.pairing)
    )
    return norms[batch.count_mask].mean(0)  # (head, chunk)


@pytest.mark.parametrize("arch", ["llama3", "gemma3"])
def test_streaming_equals_naive(tiny_lm, arch):
    """Per-batch streaming sums (batch size 1, padding present) equal one naive full pass."""
    lm = tiny_lm(arch)
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 64)
    df = band_norms.run(
        lm,
        inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, True),
        range(lm.n_layers),
        progress=False,
    )
    full = next(inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, True))
    for layer in range(lm.n_layers):
        for kind in "qkv":
            got = df[(df.layer == layer) & (df.kind == kind)].pivot(
                index="head", columns="chunk", values="mean_norm"
            )
            want = _naive(lm, full, layer, kind)
            torch.testing.assert_close(torch.tensor(got.values), want, rtol=1e-5, atol=1e-7)
            heads = lm.n_heads if kind == "q" else lm.n_kv_heads
            assert got.shape == (heads, lm.head_dim // 2)


def test_pre_and_post_rotation_give_identical_norms(tiny_lm):
    """Chunk norms are rotation invariant: pre- and post-rotation streams agree."""
    lm = tiny_lm("qwen2")
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 64)
    frames = {}
    for stage in ("pre", "rot"):
        red = band_norms.BandNormReducer(lm, range(lm.n_layers), kinds="qk", stage=stage)
        from rope_lens.extract import stream

        stream(lm, inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, True), [red], progress=False)
        frames[stage] = red.to_frame()
    torch.testing.assert_close(
        torch.tensor(frames["pre"].mean_norm.values),
        torch.tensor(frames["rot"].mean_norm.values),
        rtol=1e-5,
        atol=1e-6,
    )


def test_padding_does_not_change_results(tiny_lm):
    """A text's band norms are the same alone or right-padded in a batch with a longer text."""
    lm = tiny_lm("llama")
    seqs = inputs.tokenize(lm.tokenizer, TEXTS[1:3], lm.bos_token_id, 64)
    pad = lm.tokenizer.pad_token_id
    alone = band_norms.run(lm, inputs.batches(seqs[:1], 1, pad, True), [0, 1], progress=False)
    with_long = _naive(lm, next(inputs.batches(seqs, 2, pad, True)), 1, "k")
    assert with_long.shape[0] == lm.n_kv_heads
    shortest = next(inputs.batches(seqs, 2, pad, True))
    mask = shortest.count_mask.clone()
    mask[1] = False  # count only the short, padded first row
    only_short = inputs.Batch(shortest.input_ids, shortest.attention_mask, shortest.positions, mask)
    want = _naive(lm, only_short, 1, "k")
    got = alone[(alone.layer == 1) & (alone.kind == "k")].pivot(
        index="head", columns="chunk", values="mean_norm"
    )
    torch.testing.assert_close(torch.tensor(got.values), want, rtol=1e-5, atol=1e-7)


def test_bos_counting_and_token_budget(tiny_lm):
    """BOS is excluded by default, included on request; max_tokens caps counted tokens."""
    lm = tiny_lm("llama")
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 64)
    real = sum(len(s) for s in seqs)
    pad = lm.tokenizer.pad_token_id
    counted = sum(b.n_counted for b in inputs.batches(seqs, 2, pad, True))
    with_bos = sum(b.n_counted for b in inputs.batches(seqs, 2, pad, True, count_bos=True))
    capped = sum(b.n_counted for b in inputs.batches(seqs, 2, pad, True, max_tokens=17))
    assert (counted, with_bos, capped) == (real - len(seqs), real, 17)
    df = band_norms.run(lm, inputs.batches(seqs, 2, pad, True, max_tokens=17), [0], progress=False)
    assert (df.n_tokens == 17).all()


def test_table_schema_and_frequencies(tiny_lm):
    """Columns as documented; chunk 0 is the highest frequency (1 rad/token)."""
    lm = tiny_lm("gemma3")
    df = band_norms.run(lm, [one_batch(lm, TEXTS)], [0, 2], progress=False)
    assert list(df.columns) == band_norms.COLUMNS
    assert set(df.layer_type) == {"sliding_attention", "full_attention"}
    top = df[(df.chunk == 0)].frequency.unique()
    assert top.tolist() == [1.0]
    assert df.groupby("layer").wavelength.max().is_monotonic_increasing  # full layer: larger theta


def test_summary_names_bands(tiny_lm):
    lm = tiny_lm("llama")
    df = band_norms.run(lm, [one_batch(lm, TEXTS)], [0, 1], progress=False)
    text = band_norms.summarize(df)
    assert "largest-norm chunks by band" in text
    lines = text.splitlines()
    header = lines[1].split()
    assert header == ["layer", "type", "kind", "chunk", "band", "rad/token", "wavelength", "mean", "norm"]
    rows = lines[2:-1]
    assert len(rows) == 4  # layers 0, 1 x q, k
    assert len({len(r) for r in rows} | {len(lines[1])}) == 1  # one width: columns line up
    n_tokens = int(df["n_tokens"].max())
    assert f"over {n_tokens:,} tokens" in lines[0]
    for row in rows:  # the peak chunk's own frequency and wavelength
        layer, _, kind, chunk, band, freq, wave, _ = row.split()
        hit = df[(df.layer == int(layer)) & (df.chunk == int(chunk))].iloc[0]
        assert float(freq) == pytest.approx(hit.frequency, rel=2e-3)
        assert float(wave) == pytest.approx(hit.wavelength, rel=2e-3)
        assert band in ("high", "middle", "low")


def test_interrupted_run_resumes_to_the_same_table(tiny_lm, tmp_path):
    """Kill after 2 of 3 batches, rerun: the resumed table equals an uninterrupted one."""
    lm = tiny_lm("llama")
    seqs = inputs.tokenize(lm.tokenizer, TEXTS * 2, lm.bos_token_id, 64)
    pad = lm.tokenizer.pad_token_id

    def make_batches():
        return inputs.batches(seqs, 2, pad, True)

    full = band_norms.run(lm, make_batches(), [0, 1], progress=False)
    # checkpoint after every batch
    opts = {
        "checkpoint": tmp_path / ".bn.safetensors",
        "inputs_sha256": "abc",
        "checkpoint_every_s": 0.0,
    }

    class Boom(Exception):
        pass

    def dying():
        for i, b in enumerate(make_batches()):
            if i == 2:
                raise Boom
            yield b

    with pytest.raises(Boom):
        band_norms.analyze(lm, dying, [0, 1], opts, progress=False)
    assert (tmp_path / ".bn.safetensors").exists()  # sums and counts in one file
    resumed = band_norms.analyze(lm, make_batches, [0, 1], opts, progress=False)
    torch.testing.assert_close(
        torch.tensor(resumed.mean_norm.values),
        torch.tensor(full.mean_norm.values),
        rtol=1e-12,
        atol=0,
    )
    assert (resumed.n_tokens == full.n_tokens).all() and not (tmp_path / ".bn.safetensors").exists()


def test_band_labels_follow_frequency_rank_not_chunk_index():
    """Reversed p-RoPE zeroes the *highest* chunks: chunk 0 is then unrotated, not 'high'."""
    default = rope.default_inv_freq(10_000.0, 16).tolist()
    assert [band_norms.band_of(f, default) for f in default[:1] + default[-1:]] == ["high", "low"]
    reversed_ = rope.reversed_p_rope_inv_freq(10_000.0, 16, 0.75).tolist()
    rotating = [f for f in reversed_ if f > 0]
    assert reversed_[0] == 0.0 and band_norms.band_of(reversed_[0], rotating) == "none"
    first_rotating = next(f for f in reversed_ if f > 0)
    assert band_norms.band_of(first_rotating, rotating) == "high"
    assert band_norms.band_of(min(rotating), rotating) == "low"
