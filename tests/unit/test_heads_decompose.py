"""Logit decomposition, the Cauchy-Schwarz table and the apostrophe search, against the
model's own pre-softmax scores."""

import numpy as np
import pytest
import torch

from rope_lens.analyses import apostrophe, decompose, per_token
from rope_lens.attention import capture_attention, model_scaling
from tests.heads_helpers import TEXTS, make_batches, planted_qwen2
from tests.helpers import one_batch

PROMPT = ["It's a truth universally acknowledged"]


@pytest.mark.parametrize("arch", ["llama3", "gemma3", "qwen2", "gemma"])
def test_chunk_contributions_sum_to_model_scores(tiny_lm, arch):
    """Sum over chunks of s q^(k) rho((j-i) g_k) k^(k) == hook_attn_scores (fp32, 1e-4 rel)."""
    lm = tiny_lm(arch)
    batch = one_batch(lm, PROMPT)
    df = decompose.decompose(lm, batch, range(lm.n_layers), range(lm.n_heads))
    pairs = df.groupby(["layer", "head", "query_pos", "key_pos"]).first()
    err = (pairs.logit - pairs.model_score).abs().max()
    assert err <= 1e-4 * max(1.0, pairs.model_score.abs().max())
    sums = df.groupby(["layer", "head", "query_pos", "key_pos"]).contribution.sum()
    np.testing.assert_allclose(sums.to_numpy(), pairs.logit.to_numpy(), rtol=1e-9, atol=1e-9)
    n = batch.input_ids.shape[1]
    assert len(pairs) <= lm.n_layers * lm.n_heads * n * (n + 1) // 2  # causal pairs only
    # The model's attention weights are the softmax of our (capped) logits over the keys.
    rows = pairs.reset_index()
    z = rows.groupby(["layer", "head", "query_pos"]).logit_capped.transform(
        lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    )
    np.testing.assert_allclose(rows.attention.to_numpy(), z.to_numpy(), atol=1e-5)


def test_gemma3_scaling_is_not_one_over_sqrt_d(tiny_lm):
    """The tiny Gemma 3 scales by query_pre_attn_scalar**-0.5, not 1/sqrt(d): both reported."""
    lm = tiny_lm("gemma3")
    assert model_scaling(lm, 0) == pytest.approx(256**-0.5)
    assert model_scaling(lm, 0) != pytest.approx(lm.head_dim**-0.5)


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_cauchy_schwarz_table_matches_model(tiny_lm, arch):
    """diag/prev *_model logits equal the model's scores; logits never exceed their bounds."""
    lm = tiny_lm(arch)
    batch = one_batch(lm, PROMPT)
    table = per_token.cs_table(per_token.head_token_frame(lm, batch, [0, 1], range(lm.n_heads)))
    scores = capture_attention(lm, batch, [0, 1], "scores")
    for (layer, head), sub in table.groupby(["layer", "head"]):
        s = scores[layer][0, head].double()
        pos = torch.tensor(sub.pos.to_numpy())
        torch.testing.assert_close(
            torch.tensor(sub.diag_logit_model.to_numpy()), s[pos, pos], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            torch.tensor(sub.prev_logit_model.to_numpy()[1:]),
            s[pos[1:], pos[1:] - 1],
            rtol=1e-5,
            atol=1e-5,
        )
    assert (table.diag_logit.abs() <= table.upper_bound + 1e-9).all()
    assert table.prev_logit.isna().sum() == table.groupby(["layer", "head"]).ngroups  # pos 0
    assert (table.prev_logit.abs() <= table.prev_bound + 1e-9)[table.pos > 0].all()
    ratio = table.diag_logit_model / table.diag_logit
    assert np.allclose(
        ratio[table.diag_logit.abs() > 1e-6], model_scaling(lm, 0) * lm.head_dim**0.5
    )


def test_per_token_norms_frame(tiny_lm):
    """Per-token chunk norms: one row per (pos, kind, chunk); chunk norms rebuild ||q||."""
    lm = tiny_lm("llama")
    batch = one_batch(lm, PROMPT)
    df = per_token.head_token_frame(lm, batch, [1], [3])
    n = batch.input_ids.shape[1]
    assert len(df) == n * 2 * (lm.head_dim // 2)
    q = df[df.kind == "q"].groupby("pos")
    np.testing.assert_allclose(
        np.sqrt(q.norm.apply(lambda x: (x**2).sum())), q.q_norm.first(), rtol=1e-6
    )
    assert df.kv_head.iloc[0] == 3 // (lm.n_heads // lm.n_kv_heads)


def test_planted_diagonal_head_decomposes_into_its_high_chunks(tmp_path):
    """In the planted diagonal head, only the three chunks holding psi contribute."""
    lm = planted_qwen2(tmp_path)
    df = decompose.decompose(lm, one_batch(lm, PROMPT), [0], [0], query_pos=[5])
    by_chunk = df.groupby("chunk").contribution.apply(lambda c: c.abs().max())
    assert set(by_chunk[by_chunk > 1e-3].index) == {0, 1, 2}
    diag = df[(df.key_pos == 5)].groupby("chunk").contribution.sum()
    assert diag.sum() == pytest.approx(3 * 14.0**2 * lm.head_dim**-0.5, rel=1e-5)


def test_bos_channels_find_the_sink_chunk(tmp_path):
    """The planted sink head's BOS preference is located in the lowest chunk (App. E.1 style)."""
    lm = planted_qwen2(tmp_path)
    df = decompose.decompose(lm, one_batch(lm, PROMPT), [0], [1])
    top = decompose.bos_channels(df, top=1)
    assert int(top.chunk.iloc[0]) == lm.head_dim // 2 - 1
    assert top.bos_minus_others.iloc[0] > 5


def test_apostrophe_search_runs_and_counts(tiny_lm):
    """Scores are probabilities; queries after an apostrophe are counted once per batch."""
    lm = tiny_lm("llama")
    df = apostrophe.run(lm, make_batches(lm)(), [0, 1], progress=False)
    assert len(df) == 2 * lm.n_heads
    assert df[["after_apos", "others_sink", "others_prev"]].stack().between(0, 1).all()
    assert (df.n_after == 2).all()  # "It's" and "I'm": the token after each "'"
    assert "apostrophe-like" in apostrophe.summarize(df)


def test_apostrophe_scores_equal_loops_over_patterns(tiny_lm):
    """The streamed apostrophe scores equal explicit loops over the captured patterns."""
    lm = tiny_lm("llama")
    got = apostrophe.run(lm, make_batches(lm, batch_size=3)(), [1], progress=False)
    batch = one_batch(lm, TEXTS)
    pattern = capture_attention(lm, batch, [1])[1].double()  # (batch, head, q, k)
    ids = batch.input_ids
    after, others = [], []
    for b in range(ids.shape[0]):
        for i in range(1, ids.shape[1]):
            if not batch.count_mask[b, i]:
                continue
            prev_text = lm.tokenizer.decode([int(ids[b, i - 1])])
            (after if "'" in prev_text else others).append((b, i))
    for head in range(lm.n_heads):
        row = got[got["head"] == head].iloc[0]
        p = pattern[:, head]
        want = [
            sum(float(p[b, i, i - 1]) for b, i in after) / len(after),
            sum(float(p[b, i, 0]) for b, i in others) / len(others),
            sum(float(p[b, i, i - 1]) for b, i in others) / len(others),
        ]
        assert [row.after_apos, row.others_sink, row.others_prev] == pytest.approx(want, abs=1e-6)


def test_default_options_decompose_the_last_query_when_every_pair_is_too_many(
    tiny_lm, monkeypatch
):
    """`--analysis decompose` with default options once failed (87.7M rows on SmolLM2): when
    every pair would exceed the row limit, the default is the last query; an explicit
    ``query_pos`` is still honoured (and refused when too large)."""
    from rope_lens.errors import InputError

    lm = tiny_lm("llama3")
    batch = one_batch(lm, PROMPT)
    n = batch.input_ids.shape[1]
    layers, heads = range(lm.n_layers), range(lm.n_heads)
    every = decompose.n_rows(lm, layers, heads, range(n), range(n))
    full = decompose.analyze(lm, lambda: iter([batch]), layers, {})
    assert len(full) == every  # under the limit: every causal pair, as before
    monkeypatch.setattr(decompose, "MAX_ROWS", every - 1)
    last = decompose.analyze(lm, lambda: iter([batch]), layers, {})
    assert set(last.query_pos) == {n - 1} and set(last.key_pos) == set(range(n))
    pd_full = full[full.query_pos == n - 1].reset_index(drop=True)
    np.testing.assert_allclose(last.contribution.to_numpy(), pd_full.contribution.to_numpy())
    with pytest.raises(InputError, match="narrow it"):
        decompose.analyze(lm, lambda: iter([batch]), layers, {"query_pos": "all"})
