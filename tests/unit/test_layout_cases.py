"""What the measured layout changes in the tables, and every refusal it makes being true:
NoPE layers carry no rotation and no rotation-dependent verdict; hybrids are analysed on their
attention layers only and list the others; gpt-oss's learned sinks are in every softmax; models
that bypass the attention interface, hand it something unmodelled, move their vectors with
the position in some other way, or set an unknown attention field are refused in one line
naming what; bf16 / fp16 models measure the same layout."""

import json

import pytest
import torch

from rope_lens import inputs
from rope_lens.analyses import ablation, band_norms, critical, decompose, passkey, profiles, sinks
from rope_lens.errors import CheckpointError, InputError, RopeLensError
from rope_lens.extract import check_layers
from rope_lens.models import load_model
from rope_lens.models.tiny import _save, family_config
from tests.families import EXPECTED
from tests.helpers import record_eager

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["It's a truth universally acknowledged, that a single man", "To be, or not to be"]
NOPE_FAMILIES = sorted(name for name, e in EXPECTED.items() if e.nope)
HYBRIDS = sorted(name for name, e in EXPECTED.items() if e.skipped)


def _batches(lm, texts=TEXTS):
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, 48)
    return lambda: inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, lm.bos_token_id is not None)


# --- NoPE layers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOPE_FAMILIES)
def test_nope_layers_have_no_rotating_row_in_any_table(family, name):
    """SmolLM3, Llama 4, Command R7B, EXAONE 4: their NoPE layers are in band-norm, profiles
    and critical tables with frequency 0 everywhere and a ``_nope`` layer type, no critical
    verdict, and no ablation band or inference-time p-RoPE touches them."""
    _, lm = family(name)
    nope = sorted(EXPECTED[name].nope)
    make = _batches(lm)
    layers = check_layers(lm, None)
    bands = band_norms.run(lm, make(), layers, progress=False)
    prof = profiles.run(lm, make(), layers, progress=False)
    crit = critical.run(lm, layers)
    for table in (bands, prof):
        rows = table[table.layer.isin(nope)]
        assert (
            len(rows)
            and (rows.frequency == 0).all()
            and rows.layer_type.str.endswith("_nope").all()
        )
        rotating = table[~table.layer.isin(nope)]
        assert (rotating.frequency > 0).any()
    crit_nope = crit[crit.layer_type.str.endswith("_nope")]
    assert len(crit_nope) and not crit_nope.rotating.any() and not crit_nope.critical.any()
    assert not crit_nope.under_half_turn.any()
    assert "NoPE, no chunk turns" in critical.summarize(crit)
    configs = ablation.configs_from_options(lm, layers, {"sweep": "low", "sweep_points": 2})
    assert all(not set(c.layers) & set(nope) for c in configs) and configs[0].layers
    with pytest.raises(InputError, match="do not rotate") as err:
        ablation.configs_from_options(lm, nope, {"band": "0:2"})
    assert "\n" not in str(err.value)
    edited = {layer for edit in passkey.p_rope_edits(lm, 0.5) for layer in edit.layers}
    assert edited and not edited & set(nope)
    described = lm.metadata()["rope"]
    assert {f"{t}" for t in described["per_layer_type"]} >= {lm.rope.layer_types[nope[0]]}
    assert described["measured"][str(nope[0])]["encoding"] == "nope"


# --- hybrids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HYBRIDS)
def test_hybrids_are_analysed_on_their_attention_layers_only(family, name):
    """Qwen3-Next / Qwen3.5 (gated delta-net) and LFM2 (short convolutions): every table holds
    their attention layers and only those, the sidecar lists the others with their kind, and
    naming one of those layers is refused in one line."""
    _, lm = family(name)
    skipped = EXPECTED[name].skipped
    layers = check_layers(lm, None)
    assert layers == [i for i in range(lm.n_layers) if i not in skipped]
    bands = band_norms.run(lm, _batches(lm)(), layers, progress=False)
    assert set(bands.layer) == set(layers)
    rope = lm.metadata()["rope"]
    assert rope["layers_without_attention"] == {str(i): k for i, k in skipped.items()}
    assert rope["attention_layers"] == layers
    first = min(skipped)
    with pytest.raises(InputError, match=f"layer {first} of .* is a {skipped[first]} layer") as err:
        check_layers(lm, [first])
    assert "\n" not in str(err.value)


# --- learned sinks (gpt-oss) ------------------------------------------------------------------


def test_gpt_oss_loads_with_its_eager_kernel_and_its_sinks_in_every_softmax(family, monkeypatch):
    """gpt-oss needs its own eager attention (no sdpa with sinks). Its learned sink takes
    1 - sum_j p_ij of every row of the model's own eager probabilities: the sinks analysis'
    ``learned_sink_mass`` equals that, its first-token ``sink_mass`` equals mean p_i0, and the
    decomposition's ``attention`` is the model's weight (sink in the denominator) beside the
    head's ``sink_logit``."""
    folder, lm = family("gpt_oss")
    assert lm.kernel == "eager"
    model, seen = record_eager(folder, monkeypatch)
    make = _batches(lm)
    layers = list(lm.rope.attention_layers)
    learned = {layer: torch.zeros(lm.n_heads, dtype=torch.float64) for layer in layers}
    first = {layer: torch.zeros(lm.n_heads, dtype=torch.float64) for layer in layers}
    n = 0
    with torch.no_grad():
        for batch in make():
            model(batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            w = batch.count_mask.double()[:, None, :]
            n += int(batch.count_mask.sum())
            for layer in layers:
                p = seen[layer]["p"].double()
                learned[layer] += ((1 - p.sum(-1)) * w).sum((0, 2))
                first[layer] += (p[..., 0] * w).sum((0, 2))
    with torch.no_grad():  # the recorded weights are what output_attentions returns
        batch = next(make())
        out = model(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            output_attentions=True,
            use_cache=False,
        )
    for layer in layers:
        assert torch.equal(out.attentions[layer], seen[layer]["p"])
    table = sinks.run(lm, make, layers, n_prompts=1, max_len=16, progress=False)
    per_head = sinks.head_table(table)
    for layer in layers:
        sub = per_head[per_head.layer == layer].sort_values("head")
        got = torch.tensor(sub.learned_sink_mass.to_numpy())
        assert (got - learned[layer] / n).abs().max() < 1e-4, layer
        assert (got > 1e-3).all()
        assert (torch.tensor(sub.sink_mass.to_numpy()) - first[layer] / n).abs().max() < 1e-4
    assert "learned-sink mass" in sinks.summarize(table)
    batch = next(_batches(lm, TEXTS[:1])())
    dec = decompose.decompose(lm, batch, layers, list(range(lm.n_heads)), query_pos=[5, 9])
    with torch.no_grad():
        seen.clear()
        model(batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    for layer in layers:
        attn = model.model.layers[layer].self_attn
        for (head, i, j), rows in dec[dec.layer == layer].groupby(["head", "query_pos", "key_pos"]):
            want = float(seen[layer]["p"][0, head, i, j])
            assert abs(rows.attention.iloc[0] - want) < 1e-5, (layer, head, i, j)
            want_sink = float(attn.sinks[head].detach())
            assert rows.sink_logit.iloc[0] == pytest.approx(want_sink, abs=1e-6)
    sums = dec.groupby(["layer", "head", "query_pos", "key_pos"]).first()
    assert (sums.logit - sums.model_score).abs().max() < 1e-4


# --- refusals are true, one line, naming what -------------------------------------------------


def _llama(tiny_dirs):
    from transformers import AutoModelForCausalLM

    folder = tiny_dirs["llama"]
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval()


def test_a_layer_that_computes_attention_its_own_way_is_refused_by_name(tiny_dirs):
    folder, model = _llama(tiny_dirs)
    model.model.layers[1].self_attn.forward = lambda hidden_states, *a, **k: (
        torch.zeros_like(hidden_states),
        None,
    )
    with pytest.raises(
        CheckpointError, match="layer 1 .* never called transformers' attention"
    ) as e:
        load_model(str(folder), device="cpu", hf_model=model)
    assert "\n" not in str(e.value)


def test_an_unmodelled_kernel_argument_is_refused_by_name(tiny_dirs):
    folder, model = _llama(tiny_dirs)
    attn = model.model.layers[0].self_attn
    forward = attn.forward

    def with_bias(*args, **kwargs):
        return forward(*args, **kwargs, attn_extra_bias=1.0)

    attn.forward = with_bias
    with pytest.raises(CheckpointError, match="layer 0 hands its attention kernel attn_extra_bias"):
        load_model(str(folder), device="cpu", hf_model=model)


def test_vectors_that_move_with_the_position_without_rotating_are_refused(tiny_dirs):
    """An absolute position embedding added before layer 0 (as GPT-2 has): q and k change with
    the position, but not by a rotation. Refused, naming the layer and what was seen."""
    folder, model = _llama(tiny_dirs)
    table = torch.randn(2048, model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def add_positions(module, args, kwargs):
        hidden = args[0] + table[kwargs["position_ids"]]
        return (hidden, *args[1:]), kwargs

    model.model.layers[0].register_forward_pre_hook(add_positions, with_kwargs=True)
    with pytest.raises(CheckpointError, match="layer 0: .*cannot read its RoPE layout") as err:
        load_model(str(folder), device="cpu", hf_model=model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "family_name, field, value, says",
    [
        ("falcon", "alibi", True, "ALiBi"),
        ("llama-linear", "attn_mystery_bias", 0.5, "does not know"),
    ],
)
def test_attention_fields_the_engine_does_not_model_are_refused_by_name(
    tmp_path, family_name, field, value, says
):
    cfg = family_config(family_name)
    setattr(cfg, field, value)
    folder = _save(cfg, tmp_path / "m", 0)
    with pytest.raises(RopeLensError, match=f"config field '{field}'.*{says}") as err:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(err.value)


def test_load_failures_say_corrupt_only_for_unreadable_files(tiny_dirs, tmp_path, monkeypatch):
    """A truncated weights file is corrupt; a model class that refuses something is not."""
    import shutil

    from rope_lens import pipeline
    from rope_lens.request import AnalysisRequest

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["llama"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RopeLensError, match="look corrupt"):
        pipeline.load_for(AnalysisRequest(model=str(broken), device="cpu"))

    def refuse(*args, **kwargs):
        raise ValueError("GptOssForCausalLM does not support an attention implementation")

    monkeypatch.setattr("rope_lens.models.load_model", refuse)
    with pytest.raises(RopeLensError) as err:
        pipeline.load_for(AnalysisRequest(model=str(tiny_dirs["llama"]), device="cpu"))
    assert "does not support" in str(err.value) and "corrupt" not in str(err.value)
    assert pipeline._unreadable_file(json.JSONDecodeError("x", "", 0))


# --- low precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["llama4", "smollm3", "gpt_oss", "qwen3_next", "glm4"])
def test_half_precision_models_measure_the_fp32_layout(family, name, dtype):
    """The probe's tolerances follow the dtype: in bf16 / fp16 every layer has the fp32
    layout (types, pairing, rotary dims, turning chunks), and the config's exact frequencies
    are used wherever fp32 used them."""
    folder, ref = family(name)
    lm = load_model(str(folder), device="cpu", dtype=dtype)
    assert lm.rope.layer_types == ref.rope.layer_types
    assert lm.rope.attention_layers == ref.rope.attention_layers
    for layer in lm.rope.attention_layers:
        got, want = lm.rope.layer_specs[layer], ref.rope.layer_specs[layer]
        assert (got.pairing, got.rotary_dim, got.clockwise) == (
            want.pairing,
            want.rotary_dim,
            want.clockwise,
        )
        assert torch.equal(got.frequencies(), want.frequencies()), layer
        assert lm.rope.layer_facts[layer]["config"] == ref.rope.layer_facts[layer]["config"]


def test_a_model_cast_to_bf16_is_analysed_with_its_rounded_frequencies(tiny_dirs):
    """``model.to(torch.bfloat16)`` casts the rotary inv_freq buffer too, so the model turns
    with the config's frequencies rounded to bf16 (up to 0.4% off): those, exactly, are the
    layout's, and the sidecar says so."""
    from transformers import AutoModelForCausalLM

    from rope_lens import rope

    folder = tiny_dirs["llama"]
    model = AutoModelForCausalLM.from_pretrained(folder).to(torch.bfloat16).eval()
    lm = load_model(str(folder), device="cpu", hf_model=model)
    exact = rope.default_inv_freq(1e5, 16)
    for layer in lm.rope.attention_layers:
        spec = lm.rope.layer_specs[layer]
        assert torch.equal(spec.inv_freq, exact.to(torch.bfloat16).double())
        assert not torch.equal(spec.inv_freq, exact)
        assert lm.rope.layer_facts[layer]["config"].startswith("agrees, rounded to bfloat16")
