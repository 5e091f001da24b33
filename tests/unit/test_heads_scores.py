"""Head scores and classes: streaming equals naive, planted heads, and NoPE's limit (Prop 5.2)."""

import pandas as pd
import pytest
import torch

from rope_lens import inputs
from rope_lens.analyses import heads
from rope_lens.attention import capture_attention
from tests.heads_helpers import TEXTS, fresh, make_batches, make_nope, planted_qwen2


def _naive_scores(pattern, count):
    """Per-head scores by explicit loops over counted queries of a [batch, head, q, k] pattern."""
    b_n, h_n, t_n, _ = pattern.shape
    out = torch.zeros(h_n, 5, dtype=torch.float64)
    n = n_prev = 0
    for b in range(b_n):
        for i in range(t_n):
            if not count[b, i]:
                continue
            n += 1
            n_prev += i >= 1
            for h in range(h_n):
                row = pattern[b, h, i].double()
                out[h, 0] += row[i]
                out[h, 1] += row[i - 1] if i >= 1 else 0.0
                out[h, 2] += row[0]
                out[h, 3] += sum(float(row[j]) * (i - j) for j in range(i + 1))
                out[h, 4] += -sum(float(p) * torch.log(p).item() for p in row[: i + 1] if p > 0)
    out[:, [0, 2, 3, 4]] /= n
    out[:, 1] /= n_prev
    return out, n


@pytest.mark.parametrize("arch", ["llama3", "gemma3"])
def test_streaming_scores_equal_naive(tiny_lm, arch):
    """Scores reduced inside the hook over padded batches equal loops over the full pattern."""
    lm = tiny_lm(arch)
    df = heads.run(lm, make_batches(lm)(), range(lm.n_layers), progress=False, spread=True)
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 64)
    full = next(inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, True))
    patterns = capture_attention(lm, full, range(lm.n_layers))
    for layer in range(lm.n_layers):
        want, n = _naive_scores(patterns[layer], full.count_mask)
        got = df[df.layer == layer].sort_values("head")
        torch.testing.assert_close(
            torch.tensor(got[list(heads.SCORES)].to_numpy()), want, rtol=1e-5, atol=1e-6
        )
        assert (got.n_queries == n).all()


def test_schema_and_kv_heads(tiny_lm):
    """One row per (layer, head) with the documented columns; GQA kv_head = head // group."""
    lm = tiny_lm("llama")
    df = heads.run(lm, make_batches(lm)(), [0, 1], progress=False)
    assert list(df.columns) == [
        *("model", "layer", "layer_type", "head", "kv_head"),
        *("diag_score", "prev_score", "sink_score", "head_class", "n_queries"),
    ]
    spread = heads.run(lm, make_batches(lm)(), [0, 1], progress=False, spread=True)
    assert [c for c in spread.columns if c not in df.columns] == ["mean_distance", "entropy"]
    assert len(df) == 2 * lm.n_heads
    assert (df.kv_head == df["head"] // (lm.n_heads // lm.n_kv_heads)).all()
    assert set(df.head_class) <= set(heads.CLASSES)


def test_classify_thresholds():
    """The largest of diag/prev/sink names the class only from 1/2 up."""
    df = pd.DataFrame(
        {
            "diag_score": [0.9, 0.49, 0.1, 0.2],
            "prev_score": [0.05, 0.3, 0.6, 0.2],
            "sink_score": [0.05, 0.2, 0.3, 0.5],
        }
    )
    assert heads.classify(df).tolist() == ["diagonal", "other", "previous-token", "sink"]


def test_planted_heads_are_classified(tmp_path):
    """Thm 5.3's constructions (q = k = psi; k = R psi) give diagonal / previous-token heads."""
    lm = planted_qwen2(tmp_path)
    df = heads.run(lm, make_batches(lm)(), [0], progress=False, spread=True).set_index("head")
    assert df.head_class.tolist() == ["diagonal", "sink", "previous-token", "other"]
    assert df.loc[0, "diag_score"] > 0.99 and df.loc[2, "prev_score"] > 0.99
    assert df.loc[1, "sink_score"] > 0.99
    assert df.loc[0, "mean_distance"] < 0.01 and abs(df.loc[2, "mean_distance"] - 1) < 0.01


def _bos_x_x(lm):
    """Every printable character x as a [BOS, x, x] row."""
    bos = lm.bos_token_id
    ids = [[bos, t, t] for t in range(4, len(lm.tokenizer))]
    ids = torch.tensor(ids)
    ones = torch.ones_like(ids)
    return inputs.Batch(ids, ones, torch.arange(3).expand_as(ids).clone(), ones.bool())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nope_head_cannot_focus_on_one_x(tmp_path, seed):
    """Prop 5.2: a single NoPE head on [bos, x, x] gives neither x more than 1/2 attention."""
    lm = make_nope(fresh("llama", tmp_path, seed=seed))
    with torch.no_grad():  # sharpen attention: the bound must hold however peaked it gets
        lm.hf_model.model.layers[0].self_attn.q_proj.weight.mul_(10.0)
    pattern = capture_attention(lm, _bos_x_x(lm), [0])[0]  # (batch, head, 3, 3)
    assert pattern[:, :, 2, 1].max() <= 0.5 + 1e-6
    assert pattern[:, :, 2, 2].max() <= 0.5 + 1e-6
    # The two x keys are indistinguishable: exactly equal weights.
    torch.testing.assert_close(pattern[:, :, 2, 1], pattern[:, :, 2, 2])


def test_rope_head_can_focus_on_one_x(tmp_path):
    """Contrast for Prop 5.2: the planted RoPE heads put > 1/2 on x_2 (diag) or x_1 (prev)."""
    lm = planted_qwen2(tmp_path)
    pattern = capture_attention(lm, _bos_x_x(lm), [0])[0]
    assert pattern[:, 0, 2, 2].min() > 0.5
    assert pattern[:, 2, 2, 1].min() > 0.5
