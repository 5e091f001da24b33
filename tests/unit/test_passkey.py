"""Passkey retrieval and loss by position: prompt construction, scoring against a planted
oracle, RoPE scaling variants against the closed-form frequencies, loss buckets against a
plain forward."""

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from rope_lens import rope
from rope_lens.analyses import passkey
from rope_lens.errors import InputError
from tests.helpers import one_batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("length", [300, 520])
def test_prompts_hide_one_key_at_the_stated_depth(tiny_lm, length):
    lm = tiny_lm("llama")  # character tokenizer: one token per character
    prompts = passkey.make_prompts(lm.tokenizer, lm.bos_token_id, length, 6, seed=1)
    filler = len(passkey.FILLER)
    keys = set()
    for pr in prompts:
        text = "".join(lm.tokenizer.convert_ids_to_tokens(pr.ids[1:]))  # drop BOS
        assert pr.ids[0] == lm.bos_token_id
        assert length <= len(pr.ids) < length + filler
        assert text.endswith(passkey.QUESTION.strip() + " " + pr.key)
        assert text.count(pr.key) == 3  # twice in the needle, once as the answer
        assert "".join(lm.tokenizer.convert_ids_to_tokens(pr.ids[-pr.n_answer :])) == " " + pr.key
        before = text.index("The pass key is")
        n_fill = text.count(passkey.FILLER.strip())
        at = text[:before].count(passkey.FILLER.strip())
        assert at == round(pr.depth * n_fill)
        keys.add(pr.key)
    assert len(keys) > 1
    again = passkey.make_prompts(lm.tokenizer, lm.bos_token_id, length, 6, seed=1)
    assert [p.ids for p in again] == [p.ids for p in prompts]  # seeded


def test_scoring_against_a_planted_oracle(tiny_lm, monkeypatch):
    """A fake forward whose logits are the true next token everywhere, except on the answer of
    prompts hidden deeper than 0.5: accuracy must be the share of shallow prompts."""
    lm = tiny_lm("llama")
    prompts = passkey.make_prompts(lm.tokenizer, lm.bos_token_id, 300, 12, seed=4)
    deep = {tuple(p.ids) for p in prompts if p.depth > 0.5}

    def fake_run(lm_, batches, hooks=(), on_logits=None, taps=(), **kw):
        for batch in batches:
            ids = batch.input_ids
            vocab = 128
            logits = torch.zeros(*ids.shape, vocab)
            logits[:, :-1].scatter_(-1, ids[:, 1:, None], 1.0)  # predict the true next token
            for row in range(ids.shape[0]):
                n = int(batch.attention_mask[row].sum())
                real = tuple(ids[row, :n].tolist())
                if real in deep:  # wrong on the last answer token
                    logits[row, n - 2] = 0
                    logits[row, n - 2, 0] = 1.0
            on_logits(logits, batch)

    monkeypatch.setattr(passkey, "run_batches", fake_run)
    expected = 1 - len(deep) / len(prompts)
    assert 0 < expected < 1
    assert passkey.accuracy(lm, prompts) == pytest.approx(expected)
    assert passkey.accuracy(lm, prompts, batch_size=5) == pytest.approx(expected)  # padding


def _inv_freq(lm, layer_type=None):
    (module,) = [m for n, m in lm.hf_model.named_modules() if n.endswith("rotary_emb")]
    prefix = f"{layer_type}_" if layer_type else ""
    return getattr(module, f"{prefix}inv_freq").double(), getattr(
        module, f"{prefix}attention_scaling"
    )


def test_scaling_variants_set_the_closed_form_frequencies(tiny_lm):
    lm = tiny_lm("llama")  # theta 1e5, head_dim 16
    before, _ = _inv_freq(lm)
    theta, d = 1e5, 16
    with passkey.rope_variant(lm, "linear", 4.0, 256):
        got, scale = _inv_freq(lm)
        assert torch.allclose(got, rope.linear_inv_freq(theta, d, 4.0), rtol=1e-6)
    with passkey.rope_variant(lm, "llama3", 4.0, 256):
        got, _ = _inv_freq(lm)
        want = rope.llama3_inv_freq(theta, d, 4.0, 1.0, 4.0, 256)
        assert torch.allclose(got, want, rtol=1e-6)
    with passkey.rope_variant(lm, "yarn", 4.0, 256):
        _, scale = _inv_freq(lm)
        assert scale == pytest.approx(0.1 * math.log(4.0) + 1.0)  # YaRN's attention factor
    after, _ = _inv_freq(lm)
    assert torch.equal(before, after)  # restored


def test_sliding_layers_keep_their_frequencies(tiny_lm):
    lm = tiny_lm("gemma3")
    slide, full = _inv_freq(lm, "sliding_attention")[0], _inv_freq(lm, "full_attention")[0]
    with passkey.rope_variant(lm, "linear", 2.0, 64):
        assert torch.equal(_inv_freq(lm, "sliding_attention")[0], slide)
        assert torch.allclose(_inv_freq(lm, "full_attention")[0], full / 2)


def _logits(lm, batch, edits=()):
    out = {}
    plug = {"taps": list(edits)} if lm.backend == "native" else {"hooks": list(edits)}

    def keep(logits, b):
        out["x"] = logits.detach().clone()

    passkey.run_batches(lm, [batch], on_logits=keep, progress=False, **plug)
    return out["x"]


def test_variants_change_logits_only_when_they_should(tiny_lm):
    lm = tiny_lm("llama")
    batch = one_batch(lm, ["The pass key is 12345. Remember it, remember it well."])
    base = _logits(lm, batch)
    with passkey.rope_variant(lm, "linear", 1.0, 1024):  # factor 1: the same model
        assert torch.allclose(_logits(lm, batch), base, atol=1e-5)
    with passkey.rope_variant(lm, "linear", 8.0, 16):
        assert not torch.allclose(_logits(lm, batch), base, atol=1e-3)
    # Inference-time p-RoPE equals transformers' own "proportional" rope type (the paper's p-RoPE).
    ours = _logits(lm, batch, passkey.p_rope_edits(lm, 0.75))
    cfg = lm.hf_model.config
    saved = dict(cfg.rope_parameters)
    (parent, name, module) = passkey._rotary_modules(lm.hf_model)[0]
    try:
        cfg.rope_parameters = {**saved, "rope_type": "proportional", "partial_rotary_factor": 0.75}
        setattr(parent, name, type(module)(config=cfg))
        ref = _logits(lm, batch)
    finally:
        cfg.rope_parameters = saved
        setattr(parent, name, module)
    assert torch.allclose(ours, ref, atol=1e-4)
    # The lowest chunks barely turn over 50 tokens at theta 1e5: a small but real change.
    assert (ours - base).abs().max() > 1e-5


def test_loss_by_position_equals_a_plain_forward(tiny_lm):
    from transformers import AutoModelForCausalLM

    lm = tiny_lm("llama")
    batch = one_batch(lm, ["abcdefghij " * 6, "the quick brown fox " * 4])
    seqs = passkey.long_sequences(lambda: iter([batch]), lm.bos_token_id, 40, 2)
    assert len(seqs) == 2 and all(len(s) == 40 and s[0] == lm.bos_token_id for s in seqs)
    rows = passkey.loss_by_position(lm, seqs, [], bucket=10)
    plain = AutoModelForCausalLM.from_pretrained(lm.folder, dtype=torch.float32).eval()
    nll = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            logp = torch.log_softmax(plain(ids).logits[0, :-1].double(), -1)
            nll.append(-logp.gather(-1, ids[0, 1:, None])[:, 0].numpy())
    nll = np.stack(nll)  # (seq, 39): target positions 1..39
    for lo, hi, loss, n in rows:
        cols = [t - 1 for t in range(max(lo, 1), hi)]
        assert n == len(cols) * 2
        assert loss == pytest.approx(nll[:, cols].mean(), abs=1e-4)


def test_run_and_options(tiny_lm):
    lm = tiny_lm("llama")
    batch = one_batch(lm, ["some text to cut into a long sequence " * 3])
    df = passkey.run(
        lm,
        lambda: iter([batch]),
        lengths=[48],
        variants=["as-trained", "p-rope", "linear"],
        n_prompts=2,
        context=32,
        loss_len=40,
        progress=False,
    )
    pk = passkey.passkey_table(df)
    assert list(pk.variant) == ["as-trained", "p-rope", "linear"]
    assert pk.set_index("variant").loc["linear", "factor"] == pytest.approx(48 / 32)
    assert set(passkey.loss_table(df).variant) == {"as-trained", "p-rope", "linear"}
    assert "passkey accuracy" in passkey.summarize(df)
    no_loss = df[df.probe == "passkey"]
    assert "loss" not in passkey.summarize(no_loss) and passkey.loss_table(no_loss).empty
    with pytest.raises(InputError, match="unknown variant"):
        passkey.run(lm, lambda: iter([batch]), lengths=[48], variants=["rope2"])
    with pytest.raises(InputError, match="passkey-lengths"):
        passkey.analyze(lm, lambda: iter([batch]), [0], {"passkey_lengths": "1k"})


@pytest.mark.parametrize("variant", passkey.SCALINGS)
def test_a_scaling_rule_at_factor_one_is_the_model_as_trained(tiny_lm, variant):
    """Why run() copies the as-trained rows for a scaling rule at factor 1 within the context:
    every rule then leaves the frequencies and the attention scaling exactly as trained."""
    lm = tiny_lm("llama")
    before, scale = _inv_freq(lm)
    with passkey.rope_variant(lm, variant, 1.0, 256):
        got, got_scale = _inv_freq(lm)
        assert torch.allclose(got, before, rtol=1e-6) and got_scale == pytest.approx(scale)
    assert passkey._same_as_trained(variant, 1.0, 256, 256)
    assert not passkey._same_as_trained(variant, 1.0, 257, 256)  # dynamic NTK acts past it
    assert not passkey._same_as_trained(variant, 1.5, 200, 256)
    assert not passkey._same_as_trained("p-rope", 1.0, 200, 256)


def _counting(monkeypatch):
    calls = []
    real = passkey.run_batches

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(passkey, "run_batches", counted)
    return calls


def test_factor_one_rows_are_copied_not_rerun(tiny_lm, monkeypatch):
    lm = tiny_lm("llama")
    batch = one_batch(lm, ["some text to cut into a long sequence " * 3])
    calls = _counting(monkeypatch)
    kw: dict[str, Any] = dict(lengths=[48], n_prompts=2, context=4096, loss_len=40, progress=False)
    df = passkey.run(lm, lambda: iter([batch]), **kw)
    # as-trained and p-rope run (2 prompts each, batch size 1), per probe; scalings are copied
    assert len(calls) == 2 * 2 + 2 * 1
    pk = passkey.passkey_table(df).set_index("variant")
    assert set(pk.index) == set(passkey.VARIANTS)
    for v in passkey.SCALINGS:
        assert pk.loc[v, "accuracy"] == pk.loc["as-trained", "accuracy"]
        assert pk.loc[v, "seconds"] == 0 and pk.loc[v, "factor"] == 1
    loss = passkey.loss_table(df)
    for v in passkey.SCALINGS:
        mine = loss[loss.variant == v].loss.to_numpy()
        assert np.array_equal(mine, loss[loss.variant == "as-trained"].loss.to_numpy())


def test_a_killed_run_resumes_from_its_finished_passes(tiny_lm, monkeypatch, tmp_path):
    from rope_lens.resume import PassCache

    lm = tiny_lm("llama")
    batch = one_batch(lm, ["some text to cut into a long sequence " * 3])
    kw: dict[str, Any] = dict(
        lengths=[48, 64],
        variants=["as-trained", "p-rope", "linear"],
        n_prompts=1,
        context=32,
        progress=False,
    )
    fresh = passkey.run(lm, lambda: iter([batch]), **kw)
    real = passkey._passkey_rows
    done = []

    def dies_on_the_third(*args, **kw):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(passkey, "_passkey_rows", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        passkey.run(lm, lambda: iter([batch]), cache=PassCache(tmp_path, "k"), **kw)
    monkeypatch.setattr(passkey, "_passkey_rows", real)
    calls = _counting(monkeypatch)
    again = passkey.run(lm, lambda: iter([batch]), cache=PassCache(tmp_path, "k"), **kw)
    assert len(calls) == 6 - 2  # the two finished passes are read back, not rerun
    cols = ["variant", "length", "accuracy", "n_tokens", "factor"]
    assert again[cols].equals(fresh[cols])
    # Another identity (key) never reuses them.
    calls.clear()
    passkey.run(lm, lambda: iter([batch]), cache=PassCache(tmp_path, "other"), **kw)
    assert len(calls) == 6


def test_loss_buckets_never_straddle_the_trained_context():
    for loss_len, ctx in [(12288, 8192), (16384, 8192), (40000, 32768), (1000, 8192)]:
        step = passkey.default_bucket(loss_len, ctx)
        if loss_len > ctx:
            assert ctx % step == 0  # an edge on the context itself
        assert 1 <= step <= loss_len // 8 + 1


def test_p_rope_frees_the_lowest_chunks_of_each_head_size(tmp_path):
    """Gemma 4: sliding layers have 8 chunks, the full layer 16; inference-time p-RoPE at
    p = 0.75 makes chunks 6:8 of the sliding layers and 12:16 of the full one rotation-free
    (one band over all layers made it 6:8 everywhere: half of it rotating on the full layer)."""
    from rope_lens.models import load_model
    from rope_lens.models.tiny import family_model_dir

    lm = load_model(str(family_model_dir("gemma4", tmp_path / "g4")), device="cpu")
    bands = {(tap.ab.lo, tap.ab.hi): set(tap.ab.layers) for tap in passkey.p_rope_edits(lm, 0.75)}
    full = {i for i, t in enumerate(lm.rope.layer_types) if t == "full_attention"}
    assert bands == {(6, 8): set(range(lm.n_layers)) - full, (12, 16): full}


def test_scaling_variants_are_refused_on_a_model_that_already_scales(tiny_lm):
    """Llama 3.1-style llama3 scaling: a scaling variant would replace it (a different model
    even at factor 1, whose rows were copied from as-trained); asked for, it is refused; by
    default only as-trained and p-RoPE run, with a warning."""
    lm = tiny_lm("llama3")
    assert passkey.already_scaled(lm) == "llama3"
    assert passkey.already_scaled(tiny_lm("llama")) is None
    make = lambda: iter(())  # noqa: E731 (no loss probe: no corpus read)
    with pytest.raises(InputError, match="already uses llama3 RoPE scaling"):
        passkey.run(lm, make, [64], ["as-trained", "yarn"], n_prompts=1, progress=False)
    opts = {"passkey_lengths": "64", "passkey_prompts": 1}
    df = passkey.analyze(lm, make, [0], opts, progress=False)
    assert set(df.variant) == {"as-trained", "p-rope"}


def test_options_passkey_cannot_honour_are_refused(tiny_lm):
    lm = tiny_lm("llama")
    make = lambda: iter(())  # noqa: E731 (no loss probe: no corpus read)
    with pytest.raises(InputError, match="drop --no-bos"):
        passkey.analyze(lm, make, [0], {"no_bos": True}, progress=False)
    with pytest.raises(InputError, match="drop --layers"):
        passkey.analyze(lm, make, [0], {"layers": "0"}, progress=False)


def test_summary_gives_solved_over_prompts_and_names_copied_rows():
    df = pd.DataFrame(
        [
            dict(model="m", probe="passkey", variant=v, length=256, accuracy=a, n_prompts=5,
                 factor=1.0, seconds=s, context=8192)
            for v, a, s in (("as-trained", 1.0, 3.0), ("p-rope", 0.8, 3.0), ("yarn", 1.0, 0.0))
        ]
    )  # fmt: skip
    text = passkey.summarize(df)
    assert "5/5" in text and "4/5" in text and "%" not in text
    assert "yarn: factor 1 at these lengths, the model as trained" in text
