"""The native engine: kernels without [T, T], every RoPE family read from its own rotation, and
agreement with independent references (explicit softmax, the model's eager attention weights,
the TransformerLens backend)."""

import math

import pytest
import torch

from rope_lens import inputs, rope
from rope_lens.analyses import ablation, band_norms, heads
from rope_lens.engine import kernels
from rope_lens.errors import RopeLensError
from rope_lens.extract import Site, capture
from rope_lens.models import load_model
from rope_lens.models.tiny import family_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [
    "It's a truth universally acknowledged, that a single man in possession",
    "To be, or not to be",
    "Now is the winter of our discontent made glorious summer",
]


def _batches(lm, texts=TEXTS, batch_size=2):
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, 64)
    has_bos = lm.bos_token_id is not None
    return lambda: inputs.batches(seqs, batch_size, lm.tokenizer.pad_token_id, has_bos)


# --- kernels ----------------------------------------------------------------------------------


def _explicit(q, k, scale, cap, window):
    s = kernels.explicit_scores(q, k, scale, cap, window)
    lse = torch.logsumexp(s, -1)
    a = torch.softmax(s, -1)
    pos = torch.arange(q.shape[-2], dtype=q.dtype)
    return lse, (a * s.nan_to_num(neginf=0.0)).sum(-1), a @ pos


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("cap", [None, 3.0])
def test_attention_stats_equal_an_explicit_softmax(window, cap):
    """log-sum-exp, sum a s and sum a j from the fused kernel and from query blocks equal an
    explicit softmax over the masked [T, T] scores; so does the fused call's output."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 40, 16) * 2, torch.randn(2, 3, 40, 16) * 2
    v = torch.randn(2, 3, 40, 16)
    ref = _explicit(q, k, 0.25, cap, window)
    s = kernels.explicit_scores(q, k, 0.25, cap, window)
    ref_out = torch.softmax(s, -1) @ v
    old = kernels.BLOCK
    kernels.BLOCK = 7  # several blocks, some straddling the window edge
    try:
        for force in (False, True):
            got, out = kernels.attention_stats(
                q, k, 0.25, cap, window, force_blockwise=force, value=v
            )
            for a, b in zip((got.lse, got.score_mean, got.pos_mean), ref):
                assert a is not None
                assert torch.allclose(a, b, atol=1e-4), (force, float((a - b).abs().max()))
            if out is not None:  # the fused call's attention output is the layer's output
                assert not force and cap is None
                assert torch.allclose(out, ref_out, atol=1e-5)
            # Without the spread: the model's own kernel, unwidened; same lse and output.
            got, out = kernels.attention_stats(
                q, k, 0.25, cap, window, force_blockwise=force, value=v, spread=False
            )
            assert torch.allclose(got.lse, ref[0], atol=1e-4)
            if out is not None:
                assert torch.allclose(out, ref_out, atol=1e-5)
    finally:
        kernels.BLOCK = old


def test_positional_stats_run_in_the_models_dtype():
    """Without the spread the kernel runs in the inputs' dtype (bf16 here), as the model's
    own sdpa would: its output is sdpa's, and the log-sum-exp is fp32 and matches fp32's."""
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 4, 24, 16), torch.randn(1, 2, 24, 16), torch.randn(1, 2, 24, 16)
    half = [x.bfloat16() for x in (q, k, v)]
    got, out = kernels.attention_stats(half[0], half[1], 0.25, value=half[2], spread=False)
    assert out is not None and out.dtype == torch.bfloat16 and got.lse.dtype == torch.float32
    want = torch.nn.functional.scaled_dot_product_attention(
        half[0], half[1], half[2], is_causal=True, scale=0.25, enable_gqa=True
    )
    assert torch.allclose(out.float(), want.float(), atol=2e-2)
    ref, _ = kernels.attention_stats(q, k, 0.25, value=v, spread=False)
    assert torch.allclose(got.lse, ref.lse, atol=5e-2)


@pytest.mark.parametrize("chunk", [None, 6])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_chunks_and_learned_sinks_equal_an_explicit_softmax(chunk, with_sinks):
    """Chunked attention (Llama 4) and a learned sink logit per head (gpt-oss), fused and in
    query blocks: the log-sum-exp includes the sink, the keys' sums and the layer's output are
    the explicit softmax's over [scores, sink] with the sink's own weight dropped."""
    torch.manual_seed(3)
    q, k, v = (
        torch.randn(2, 3, 20, 16) * 2,
        torch.randn(2, 3, 20, 16) * 2,
        torch.randn(2, 3, 20, 16),
    )
    sinks = torch.tensor([0.5, 2.0, -1.0]) if with_sinks else None
    s = kernels.explicit_scores(q, k, 0.25, None, None, chunk)
    full = torch.cat([s, sinks[None, :, None, None].expand(2, 3, 20, 1)], -1) if with_sinks else s
    lse = torch.logsumexp(full, -1)
    a = kernels.softmax_with_sinks(s, sinks)
    pos = torch.arange(20, dtype=q.dtype)
    want = (lse, (a * s.nan_to_num(neginf=0.0)).sum(-1), a @ pos, a.sum(-1))
    old = kernels.BLOCK
    kernels.BLOCK = 7
    try:
        for force in (False, True):
            got, out = kernels.attention_stats(
                q, k, 0.25, None, None, force, value=v, chunk=chunk, sinks=sinks
            )
            mass = got.key_mass if got.key_mass is not None else torch.ones_like(got.lse)
            for x, y in zip((got.lse, got.score_mean, got.pos_mean, mass), want):
                assert x is not None and torch.allclose(x, y, atol=1e-4), force
            if out is not None:
                assert chunk is None and not force
                assert torch.allclose(out, a @ v, atol=1e-5)
            got, out = kernels.attention_stats(
                q, k, 0.25, None, None, force, value=v, spread=False, chunk=chunk, sinks=sinks
            )
            assert torch.allclose(got.lse, want[0], atol=1e-4)
            if out is not None:
                assert torch.allclose(out, a @ v, atol=1e-5)
    finally:
        kernels.BLOCK = old


def test_masks_are_read_as_window_and_chunk_or_refused():
    """A call's mask is read back as the (window, chunk) whose causal pattern it is; windows
    and chunks the tokens do not reach read as None; other patterns as None (refused)."""
    n = 12
    pos = torch.arange(n)
    for window, chunk in [(None, None), (4, None), (None, 5), (3, 5), (20, None)]:
        mask = kernels.allowed(pos[:, None], pos[None, :], window, chunk)
        read = kernels.visibility_of(mask)
        assert read is not None
        assert torch.equal(kernels.allowed(pos[:, None], pos[None, :], *read), mask)
        assert read == ((window if window and window < n else None), chunk)
    holey = kernels.allowed(pos[:, None], pos[None, :], None)
    holey[7, 3] = False
    assert kernels.visibility_of(holey) is None


@pytest.mark.parametrize("spread", [False, True])
def test_attention_stats_read_gqa_keys_unrepeated(spread):
    """Keys and values with fewer heads than queries (GQA) give what keys repeated in
    ``repeat_kv`` order give; so do the positional logits."""
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 6, 30, 16), torch.randn(2, 2, 30, 16), torch.randn(2, 2, 30, 16)
    k_rep, v_rep = k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
    got, out = kernels.attention_stats(q, k, 0.25, value=v, spread=spread)
    want, want_out = kernels.attention_stats(q, k_rep, 0.25, value=v_rep, spread=spread)
    assert torch.allclose(got.lse, want.lse, atol=1e-5)
    assert out is not None and want_out is not None
    assert torch.allclose(out, want_out, atol=1e-5)
    for offset in (0, 1):
        a = kernels.pair_scores(q, k, offset, 0.25, 3.0)
        b = kernels.pair_scores(q, k_rep, offset, 0.25, 3.0)
        assert torch.equal(a.isinf(), b.isinf()) and torch.allclose(a[~a.isinf()], b[~b.isinf()])
    assert torch.allclose(
        kernels.first_key_scores(q, k, 0.25, None), kernels.first_key_scores(q, k_rep, 0.25, None)
    )


# --- specific families (every family: tests/unit/test_families.py) ------------------------


def test_gemma4_full_layers_are_p_rope(family):
    """Gemma 4: sliding layers default RoPE (theta 1e4); full layers proportional RoPE with
    p = 0.25 at theta 1e6, i.e. the paper's p-RoPE (the lowest 75% of chunks never turn)."""
    _, lm = family("gemma4")
    by_type = dict(zip(lm.rope.layer_types, lm.rope.layer_specs))
    full, sliding = by_type["full_attention"], by_type["sliding_attention"]
    assert torch.allclose(full.frequencies(), rope.p_rope_inv_freq(1e6, 32, 0.25), atol=1e-7)
    assert torch.allclose(sliding.frequencies(), rope.default_inv_freq(1e4, 16), atol=1e-7)
    df = band_norms.run(lm, _batches(lm)(), list(range(lm.n_layers)), progress=False)
    rows = 3 * (4 + 2 + 2) * 8 + (4 + 1 + 1) * 16  # 3 sliding layers, 1 full (own shapes)
    assert df.mean_norm.notna().all() and len(df) == rows


def test_gemma4_per_layer_head_shapes_label_every_table(family):
    """Gemma 4's full layers have other head sizes and KV heads than its sliding ones: each
    layer's group and chunk count are its own, in every table; the per-chunk logit
    decomposition of a full layer still sums to the model's own scores; an ablation band over
    both kinds of layer is refused (it would name different frequencies in each)."""
    from rope_lens.analyses import decompose, per_token
    from rope_lens.errors import InputError

    _, lm = family("gemma4")
    full = lm.rope.layer_types.index("full_attention")
    assert (lm.rope.kv_heads(0), lm.rope.kv_heads(full)) == (2, 1)
    assert (lm.rope.n_chunks(0), lm.rope.n_chunks(full)) == (8, 16)
    make = _batches(lm)
    layers = list(range(lm.n_layers))
    scores = heads.run(lm, make(), layers, progress=False)
    assert set(scores[scores.layer == full].kv_head) == {0}
    assert set(scores[scores.layer == 0].kv_head) == {0, 1}
    bands = band_norms.run(lm, make(), layers, progress=False)
    k_full = bands[(bands.layer == full) & (bands.kind == "k")]
    assert set(k_full["head"]) == {0} and k_full.chunk.max() == 15
    q_full = bands[(bands.layer == full) & (bands.kind == "q")]
    assert set(q_full.kv_head) == {0}
    batch = next(_batches(lm, TEXTS[:1], 1)())
    dec = decompose.decompose(lm, batch, [full], list(range(lm.n_heads)), query_pos=[5, 9])
    assert set(dec.kv_head) == {0} and dec.chunk.max() == 15
    sums = dec.groupby(["head", "query_pos", "key_pos"]).agg(
        logit=("logit", "first"), model=("model_score", "first")
    )
    assert (sums.logit - sums.model).abs().max() < 1e-4
    tok = per_token.head_token_frame(lm, batch, [full], [0, 3])
    assert set(tok.kv_head) == {0}
    for head in (0, 3):  # its diagonal logit at the full layer's own head size is the model's
        mine = tok[(tok["head"] == head) & (tok.pos == 5)].diag_logit_model.iloc[0]
        model = sums.loc[(head, 5, 5), "model"]
        assert abs(mine - model) < 1e-4, (head, mine, model)
    with pytest.raises(InputError, match="different sizes"):
        ablation.configs_from_options(lm, layers, {"band": "0:4"})
    assert ablation.configs_from_options(lm, [full], {"band": "-4:"})[0].lo == 12


def test_gptj_frequencies_come_from_its_rotation(family):
    """GPT-J has no rope_parameters: its rotation (interleaved, first rotary_dim dims, theta
    1e4) is read from the model itself."""
    _, lm = family("gptj")
    spec = lm.rope.layer_specs[0]
    expected = 1.0 / 10_000 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    assert torch.allclose(spec.inv_freq, expected, rtol=1e-6)


def test_yarn_attention_scaling_is_read_and_divided_out(family):
    """YaRN multiplies cos and sin by 0.1 ln(factor) + 1: the layout carries it, and band
    norms report the pre-rotation convention (post-rotation norms divided by it)."""
    _, lm = family("llama-yarn")
    spec = lm.rope.layer_specs[0]
    assert spec.attention_scaling == pytest.approx(0.1 * math.log(4.0) + 1, rel=1e-6)
    batch = next(_batches(lm)())
    acts = capture(lm, batch, [Site(0, "q", "pre"), Site(0, "q", "rot")])
    pre, rot = acts[Site(0, "q", "pre")], acts[Site(0, "q", "rot")]
    assert torch.allclose(
        rope.chunk_norms(rot, spec) / spec.attention_scaling, rope.chunk_norms(pre, spec), atol=1e-5
    )
    frames = {}
    for stage in ("pre", "rot"):  # the table is the same whichever vector it is read from
        red = band_norms.BandNormReducer(lm, [0, 1], kinds="qk", stage=stage)
        from rope_lens.extract import stream

        stream(lm, _batches(lm)(), [red], progress=False)
        frames[stage] = red.to_frame()
    assert (frames["pre"].mean_norm - frames["rot"].mean_norm).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["llama-longrope", "llama-dynamic"])
def test_frequencies_that_change_with_length_are_refused_past_it(family, name):
    """LongRoPE (long factors) and dynamic NTK (larger base) rotate longer sequences with other
    frequencies than the probe read: views before rotation are exact up to that length, and
    refused in one line past it, while head scores (post-rotation only) still run."""
    from rope_lens.errors import RopeLensError

    _, lm = family(name)
    n = lm.rope.layer_specs[0].valid_positions
    assert (
        n is not None
        and lm.metadata()["rope"]["per_layer_type"]["full_attention"]["frequencies_valid_to_tokens"]
        == n
    )
    ids = torch.randint(4, 90, (1, n + 1))
    batch = inputs.Batch(ids, torch.ones_like(ids), torch.arange(n + 1)[None], ids > 0)
    short = inputs.Batch(
        *(x[:, :n] for x in (ids, torch.ones_like(ids))), batch.positions[:, :n], (ids > 0)[:, :n]
    )
    acts = capture(lm, short, [Site(0, "q", "pre")])
    layer = lm.hf_model.model.layers[0].self_attn
    with torch.no_grad():  # before rotation = the projection (no QK-norm in Llama)
        proj = layer.q_proj(
            lm.hf_model.model.layers[0].input_layernorm(
                lm.hf_model.model.embed_tokens(short.input_ids)
            )
        )
    want = proj.view(1, n, lm.n_heads, -1)
    assert (acts[Site(0, "q", "pre")] - want).abs().max() < 1e-4
    with pytest.raises(RopeLensError, match=f"changes its frequencies past {n} tokens") as err:
        capture(lm, batch, [Site(0, "q", "pre")])
    assert "\n" not in str(err.value)
    assert len(heads.run(lm, [batch], [0], progress=False)) == lm.n_heads


def test_per_token_norms_use_the_band_norm_convention(family):
    """With YaRN's attention scaling (1.1386 here) folded into cos / sin, per-token chunk norms
    are those of the vector before rotation, as band norms are (they differed by exactly the
    scaling)."""
    from rope_lens.analyses import per_token

    _, lm = family("llama-yarn")
    spec = lm.rope.layer_specs[0]
    assert spec.attention_scaling > 1.1
    batch = next(_batches(lm, TEXTS[:1], 1)())
    tok = per_token.head_token_frame(lm, batch, [0], [0])
    pre = capture(lm, batch, [Site(0, "q", "pre")])[Site(0, "q", "pre")][0, :, 0]
    want = rope.chunk_norms(pre.double(), spec)  # (pos, chunk)
    got = tok[tok.kind == "q"].sort_values(["pos", "chunk"]).norm.to_numpy()
    assert abs(got - want.reshape(-1).numpy()).max() < 1e-4


def test_every_layers_window_is_read_from_its_attention_call(family):
    """Mistral slides (window 8) in every layer with no "sliding" layer type: the window comes
    from the attention call, so critical chunks use it as the context and the sinks
    decomposition only counts queries that can see the first key; Gemma 3 reads its sliding
    layers' window and none for its full layers."""
    from rope_lens.analyses import critical, sinks

    _, mistral = family("mistral")
    assert set(mistral.rope.layer_types) == {"full_attention"}
    assert [mistral.rope.window(i) for i in range(mistral.n_layers)] == [8] * mistral.n_layers
    assert critical.trained_context(mistral, "full_attention") == (8, "sliding_window")
    assert sinks._window(mistral, 0) == 8
    _, gemma3 = family("gemma3")
    windows = {t: gemma3.rope.window(i) for i, t in enumerate(gemma3.rope.layer_types)}
    assert windows == {"sliding_attention": 8, "full_attention": None}
    assert critical.trained_context(gemma3, "sliding_attention")[0] == 8


def test_mla_is_refused_in_one_line(tmp_path):
    folder = family_model_dir("deepseek_v3", tmp_path / "mla")
    with pytest.raises(RopeLensError, match="multi-head latent attention"):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("family_name, value", [("gemma3", True), ("gemma4", "all")])
def test_bidirectional_models_are_refused_in_one_line(tmp_path, family_name, value):
    """EmbeddingGemma-style bidirectional attention would give head scores and losses that
    look right and are not (every analysis reads causal attention): refused at load."""
    from rope_lens.models.tiny import _save, family_config

    cfg = family_config(family_name)
    cfg.use_bidirectional_attention = value
    folder = _save(cfg, tmp_path / "bidir", 0)
    with pytest.raises(RopeLensError, match="bidirectional attention is not supported") as err:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(err.value)


def test_softcapped_model_wraps_the_eager_kernel(family):
    """sdpa refuses Gemma 2's softcap: the native engine wraps the model's eager kernel."""
    _, lm = family("gemma2")
    assert lm.kernel == "eager" and lm.hf_model.config._attn_implementation == "rope_lens_eager"


def test_sliding_window_survives_the_new_implementation_name(family):
    """The trap: a new attention name without its mask function loses the sliding window.
    With a window of 8 and 40 tokens, the wrapped model's logits equal plain sdpa's."""
    from transformers import AutoModelForCausalLM

    folder, lm = family("mistral")
    plain = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    ids = torch.randint(4, 90, (1, 40))
    with torch.no_grad():
        ours = lm.hf_model(ids, use_cache=False).logits
        ref = plain(ids, use_cache=False).logits
        full = (
            AutoModelForCausalLM.from_pretrained(
                folder, attn_implementation="sdpa", sliding_window=None
            )
            .eval()(ids, use_cache=False)
            .logits
        )
    assert (ours - ref).abs().max() < 1e-5
    assert (full - ref).abs().max() > 1e-3  # the window does matter at this length


def test_layers_after_the_last_needed_one_are_not_computed(tiny_lm):
    """A reducer on layer 0 of a 2-layer model never runs layer 1 (nor the unembedding)."""
    lm = tiny_lm("llama")
    calls = []
    handle = lm.hf_model.model.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        band_norms.run(lm, _batches(lm)(), [0], progress=False)
    finally:
        handle.remove()
    assert calls == []


# --- both backends ----------------------------------------------------------------------------

BACKEND_ARCHS = ["llama", "llama3", "gemma", "gemma3", "qwen2", "qwen3"]


def _close(a, b, tol=1e-4):
    num = a.select_dtypes("number").columns
    err = (a[num].reset_index(drop=True) - b[num].reset_index(drop=True)).abs().max().max()
    assert err < tol, float(err)
    other = [c for c in a.columns if c not in num and c != "model"]
    assert a[other].reset_index(drop=True).equals(b[other].reset_index(drop=True))


@pytest.mark.parametrize("arch", BACKEND_ARCHS)
def test_backends_agree_on_every_streaming_analysis(tiny_lm, tiny_tl, arch):
    """band-norm, heads, profiles, apostrophe and ablations (every kind, all heads and one
    head, BOS spared or not): native == TransformerLens to 1e-4."""
    from rope_lens.analyses import apostrophe, profiles

    nat, tl = tiny_lm(arch), tiny_tl(arch)
    make = _batches(nat)
    layers = list(range(nat.n_layers))
    for module in (band_norms, heads, profiles, apostrophe):
        _close(
            module.run(nat, make(), layers, progress=False),
            module.run(tl, make(), layers, progress=False),
        )
    _close(
        heads.run(nat, make(), layers, progress=False, spread=True),
        heads.run(tl, make(), layers, progress=False, spread=True),
    )
    n = nat.head_dim // 2
    configs = [
        ablation.Ablation(kind, n - 3, n, tuple(layers), head, spare_first=spare)
        for kind in ablation.ABLATIONS
        for head in (None, (1,))
        for spare in (False, True)
    ]
    _close(
        ablation.run_ablations(nat, make, configs, progress=False),
        ablation.run_ablations(tl, make, configs, progress=False),
    )


@pytest.mark.parametrize("arch", ["llama3", "gemma3"])
def test_backends_agree_on_the_small_views(tiny_lm, tiny_tl, arch):
    """decompose and per-token (explicit rows of one prompt): native == TransformerLens."""
    from rope_lens.analyses import decompose, per_token

    nat, tl = tiny_lm(arch), tiny_tl(arch)
    batch = next(_batches(nat, TEXTS[:1], 1)())
    layers = list(range(nat.n_layers))
    _close(
        decompose.decompose(nat, batch, layers, [0, 3], query_pos=[5, 9]),
        decompose.decompose(tl, batch, layers, [0, 3], query_pos=[5, 9]),
    )
    _close(
        per_token.head_token_frame(nat, batch, layers, [0, 3]),
        per_token.head_token_frame(tl, batch, layers, [0, 3]),
    )


def _square_tensors(lm, n: int = 48) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor an op produces during a head-score run (the model's own ops included)
    whose two trailing dims are both the sequence length ``n``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dim() >= 2:
                    if t.shape[-1] == t.shape[-2] == n:
                        seen.append((str(func), tuple(t.shape)))
            return out

    ids = torch.randint(4, 90, (2, n))
    batch = inputs.Batch(ids, torch.ones_like(ids), torch.arange(n).expand(2, n), ids > 0)
    with Recorder():
        for spread in (False, True):
            heads.run(lm, [batch], list(range(lm.n_layers)), progress=False, spread=spread)
    return seen


def test_head_scores_allocate_no_t_by_t_tensor(tiny_lm):
    """Native head scores: no [T, T] tensor anywhere in the forward, so memory is O(T)."""
    assert _square_tensors(tiny_lm("llama")) == []


def test_the_square_tensor_check_can_fail(tiny_tl):
    """The same recorder sees the bridge's [b, h, T, T] scores (the check is not vacuous)."""
    assert _square_tensors(tiny_tl("llama"))


def test_replacing_q_or_k_invalidates_cached_views(tiny_lm):
    """An editor's new key is what later readers see (no stale per-head / fp32 view)."""
    from rope_lens.engine.native import AttentionCall

    lm = tiny_lm("llama")
    q, k = torch.randn(1, 4, 5, 16), torch.randn(1, 2, 5, 16)
    ids = torch.ones(1, 5, dtype=torch.long)
    batch = inputs.Batch(ids, ids, torch.arange(5)[None], ids > 0)
    call = AttentionCall(0, q, k, k.clone(), 0.25, None, None, batch, lm.rope.layer_specs[0])
    first = call.keys_per_query_head(), call.bphd("k", "rot")
    call.key = k * 2
    assert torch.allclose(call.keys_per_query_head(), first[0] * 2)
    assert torch.allclose(call.bphd("k", "rot"), first[1] * 2)


def test_lens_bridge_is_a_transformerlens_view(tiny_dirs):
    """On the native backend, Lens.bridge boots a separate TransformerLens copy whose hook
    points fire, and the native model keeps its own attention kernel."""
    from rope_lens import Lens

    lens = Lens(str(tiny_dirs["llama"]), device="cpu")
    bridge = lens.bridge
    assert lens.lm.hf_model.config._attn_implementation == "rope_lens_sdpa"
    ids = torch.tensor([[1, 40, 41, 42]])
    _, cache = bridge.run_with_cache(ids, names_filter=["blocks.0.attn.hook_rot_q"])
    assert cache["blocks.0.attn.hook_rot_q"].shape[:2] == (1, 4)
    assert lens.bridge is bridge  # built once
