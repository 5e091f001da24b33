"""Head analyses on the packaged real models (SmolLM2-135M, Gemma-3-270M), offline, short text."""

import pytest
import torch

from rope_lens import inputs
from rope_lens.analyses import ablation, decompose, heads, per_token
from rope_lens.models import load_model
from tests.helpers import one_batch

pytestmark = pytest.mark.slow

TEXTS = [
    "I'm sure it's the book you'd like, said the librarian to the young man.",
    "The capital of France is Paris.",
]


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def real_lm(request):
    return load_model(request.param, device="cpu")


def _naive_from_hf(attn, count):
    """Diag/prev/sink/distance/entropy per head from HF attentions [batch, head, q, k]."""
    out = []
    for h in range(attn.shape[1]):
        p = attn[:, h].double()
        t = p.shape[-1]
        idx = torch.arange(t)
        rows = count.nonzero().tolist()
        diag = sum(float(p[b, i, i]) for b, i in rows) / len(rows)
        prev_rows = [(b, i) for b, i in rows if i >= 1]
        prev = sum(float(p[b, i, i - 1]) for b, i in prev_rows) / len(prev_rows)
        sink = sum(float(p[b, i, 0]) for b, i in rows) / len(rows)
        dist = sum(float((p[b, i] * (i - idx)).sum()) for b, i in rows) / len(rows)
        ent = sum(float(-torch.special.xlogy(p[b, i], p[b, i]).sum()) for b, i in rows)
        out.append([diag, prev, sink, dist, ent / len(rows)])
    return torch.tensor(out)


def test_head_scores_equal_transformers_eager_attentions():
    """Streamed scores on SmolLM2 equal those from HF's own eager attention probs (1e-4)."""
    from transformers import AutoModelForCausalLM

    lm = load_model("smollm2-135m", device="cpu")
    seqs = inputs.tokenize(lm.tokenizer, TEXTS, lm.bos_token_id, 64)
    batch = next(inputs.batches(seqs, len(seqs), lm.tokenizer.pad_token_id, True))
    layers = [0, 1, 11, 16, lm.n_layers - 1]
    df = heads.run(lm, [batch], layers, progress=False, spread=True)
    hf = AutoModelForCausalLM.from_pretrained(
        lm.folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.inference_mode():
        out = hf(batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
    for layer in layers:
        want = _naive_from_hf(out.attentions[layer], batch.count_mask)
        got = df[df.layer == layer].sort_values("head")[list(heads.SCORES)].to_numpy()
        torch.testing.assert_close(torch.tensor(got), want.double(), rtol=0, atol=1e-4)


def test_decomposition_sums_to_real_scores(real_lm):
    """Per-chunk contributions sum to the model's pre-softmax scores (fp32, 1e-4 relative)."""
    batch = one_batch(real_lm, TEXTS[:1], window=24)
    layers = [0, real_lm.n_layers - 1]
    df = decompose.decompose(real_lm, batch, layers, [0, real_lm.n_heads - 1])
    pairs = df.groupby(["layer", "head", "query_pos", "key_pos"]).first()
    scale = max(1.0, float(pairs.model_score.abs().max()))
    assert float((pairs.logit - pairs.model_score).abs().max()) <= 1e-4 * scale


def test_cauchy_schwarz_table_on_real_model(real_lm):
    """Tables 3-5 layout: logits stay within their bounds and match the model's scaling."""
    batch = one_batch(real_lm, TEXTS[:1], window=16)
    table = per_token.cs_table(per_token.head_token_frame(real_lm, batch, [0], [0]))
    assert len(table) == batch.input_ids.shape[1]
    assert (table.diag_logit.abs() <= table.upper_bound + 1e-6).all()
    assert (table.prev_logit.abs() <= table.prev_bound + 1e-6)[table.pos > 0].all()


def test_real_ablation_noop_and_p_rope(real_lm):
    """An empty band changes nothing, the baseline equals HF's own loss, and making the
    lowest quarter rotation-free changes the loss."""
    seqs = inputs.tokenize(real_lm.tokenizer, TEXTS, real_lm.bos_token_id, 32)

    def make():
        return inputs.batches(seqs, 2, real_lm.tokenizer.pad_token_id, True)

    n = real_lm.head_dim // 2
    layers = tuple(range(real_lm.n_layers))
    configs = [
        ablation.Ablation("rotation-free", 0, 0, layers),
        ablation.Ablation("rotation-free", n - n // 4, n, layers),
    ]
    df = ablation.run_ablations(real_lm, make, configs, score_layers=[0], progress=False)
    table = ablation.loss_table(df)
    assert table.delta_loss.iloc[1] == 0.0
    assert table.delta_loss.iloc[2] != 0.0 and abs(table.delta_loss.iloc[2]) < 5.0
    # The baseline is the model's own causal-LM loss (HF, unpadded rows, token-weighted).
    nll = n = 0
    with torch.inference_mode():
        for ids in seqs:
            x = torch.tensor([ids])
            nll += float(real_lm.hf_model(x, labels=x).loss) * (len(ids) - 1)
            n += len(ids) - 1
    assert table.loss.iloc[0] == pytest.approx(nll / n, rel=1e-4)
    assert int(table.n_targets.iloc[0]) == n
