"""Notebook ergonomics of ``Lens``: ``texts=`` is the texts, ``prompts=`` a source (as strict as
``--prompts``), ``lens.qk`` gives q/k in one call, and a model already in memory (transformers
model + tokenizer, or a TransformerLens bridge) works like a loaded one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rope_lens import Lens, rope
from rope_lens.errors import InputError
from rope_lens.lens import QK_COLUMNS, as_texts

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "It's a truth universally acknowledged"


@pytest.fixture(scope="module")
def lens(tiny_lm):
    return Lens(tiny_lm("qwen3"))  # GQA and QK-norm: 'pre' is the normed vector


class TestPrompts:
    def test_texts_are_the_texts(self, lens):
        assert as_texts(texts=TEXT) == [TEXT] == as_texts([TEXT])
        one = lens.run("band-norm", texts=TEXT, layers=[0])
        listed = lens.run("band-norm", prompts=[TEXT], layers=[0])
        pd.testing.assert_frame_equal(one, listed)
        # The char-level tiny tokenizer: one token per character, BOS not counted.
        assert set(one["n_tokens"]) == {len(TEXT)}

    def test_sources_and_files_stay_sources(self, tmp_path):
        assert len(as_texts("shakespeare")) == 10 == len(as_texts())
        path = tmp_path / "p.txt"
        path.write_text("first text\nsecond text\n")
        assert as_texts(str(path)) == ["first text", "second text"] == as_texts(path)

    def test_a_missing_file_name_is_an_error_not_a_text(self):
        with pytest.raises(InputError, match="not found"):
            as_texts("prompts.jsonl")

    @pytest.mark.parametrize(
        "prompts, message",
        [
            ("shakespear", "did you mean prompts='shakespeare'.*texts='shakespear'"),
            (TEXT, "not a built-in source or a file.*pass texts="),
            (123, "prompts must be a source name, a path or a list of texts, got int 123"),
            (["ok", 7], r"prompts\[1\] is int 7: every text must be a string"),
        ],
    )
    def test_a_string_that_names_no_source_is_refused(self, lens, prompts, message):
        """The CLI refuses ``--prompts shakespear``; so does Lens (it once analysed the one
        word "shakespear" and found 10 "diagonal" heads in 3 queries)."""
        with pytest.raises(InputError, match=message):
            lens.run("heads", prompts=prompts)

    def test_prompts_and_texts_together_are_refused(self):
        with pytest.raises(InputError, match="not both"):
            as_texts("shakespeare", texts=["a"])

    def test_empty_is_an_error(self):
        with pytest.raises(InputError, match="no non-empty prompts"):
            as_texts("   ")
        with pytest.raises(InputError, match="no non-empty prompts"):
            as_texts(texts=["", " "])


def test_options_are_checked_as_on_the_command_line(lens):
    with pytest.raises(InputError, match="did you mean 'head'"):
        lens.run("per-token", texts=TEXT, hed=1)
    with pytest.raises(InputError, match="does not apply to band-norm"):
        lens.run("band-norm", texts=TEXT, head=1)


class TestQK:
    def test_tidy_frame_shape_and_labels(self, lens):
        lm = lens.lm
        texts = ["abc de", "a longer second prompt"]
        df = lens.qk(texts, layers=[-1], stage=("pre", "rot"))
        assert list(df.columns) == QK_COLUMNS
        d, layer = lm.head_dim, lm.n_layers - 1
        n_pos = sum(len(t) + 1 for t in texts)  # + BOS; padding never appears
        heads = lm.n_heads + lm.n_kv_heads
        assert len(df) == n_pos * heads * d * 2
        assert set(df.layer) == {layer} and set(df.stage) == {"pre", "rot"}
        assert df[df.kind == "k"]["head"].max() == lm.n_kv_heads - 1
        first = df[(df["prompt"] == 0) & (df["kind"] == "q") & (df["head"] == 0) & (df["dim"] == 0)]
        assert first.query("stage == 'pre'")["token"].tolist()[1:] == list("abc de")
        assert first.query("stage == 'pre'")["pos"].tolist() == list(range(7))

    def test_rot_is_pre_rotated_by_the_models_rope(self, lens):
        lm = lens.lm
        got = lens.qk(TEXT, layers=[0], stage=("pre", "rot"), kinds=("q", "k"), tensors=True)
        spec = lm.rope.layer_specs[0]
        for kind in ("q", "k"):
            pre = next(v for s, v in got.items() if s.kind == kind and s.stage == "pre")
            rot = next(v for s, v in got.items() if s.kind == kind and s.stage == "rot")
            assert pre.shape[:2] == (1, len(TEXT) + 1)
            positions = torch.arange(pre.shape[1])[None]
            torch.testing.assert_close(rope.rotate(pre, positions, spec), rot, atol=1e-4, rtol=1e-4)
            assert not torch.allclose(pre[:, 1:], rot[:, 1:], atol=1e-3)  # it did rotate

    @pytest.mark.parametrize(
        "kw, message",
        [
            (dict(stage="post"), "stage must be"),
            (dict(kinds=("x",)), "kinds must be"),
            (dict(kinds=("v",), stage="rot"), "values are not rotated"),
            (dict(layers=[99]), "out of range"),
        ],
    )
    def test_bad_requests_are_one_clear_error(self, lens, kw, message):
        with pytest.raises(InputError, match=message):
            lens.qk(TEXT, **kw)


class TestBringYourOwnModel:
    def test_transformers_model_and_tokenizer(self, tiny_dirs, lens):
        from transformers import AutoModelForCausalLM

        from rope_lens.models.tiny import char_tokenizer

        model = AutoModelForCausalLM.from_pretrained(tiny_dirs["qwen3"])
        own = Lens(model, char_tokenizer())
        assert own.lm.hf_model is model and own.lm.name == str(tiny_dirs["qwen3"])
        pd.testing.assert_frame_equal(own.qk(TEXT, layers=[1]), lens.qk(TEXT, layers=[1]))

    def test_model_without_a_folder_needs_a_tokenizer_and_gets_a_name(self):
        from transformers import AutoModelForCausalLM

        from rope_lens.models.tiny import char_tokenizer, tiny_config

        model = AutoModelForCausalLM.from_config(tiny_config("llama"))
        with pytest.raises(InputError, match="pass its tokenizer"):
            Lens(model)
        own = Lens(model, char_tokenizer(), name="scratch")
        assert own.lm.name == "scratch"
        assert len(own.run("heads", texts=TEXT, layers=[0])) == own.lm.n_heads

    def test_transformerlens_bridge(self, tiny_dirs, lens):
        tl = Lens(str(tiny_dirs["qwen3"]), device="cpu", backend="tl")
        own = Lens(tl.lm.bridge)
        assert own.lm.bridge is tl.lm.bridge and own.lm.backend == "tl"
        a, b = own.qk(TEXT, layers=[1], stage="rot"), lens.qk(TEXT, layers=[1], stage="rot")
        assert (a["value"] - b["value"]).abs().max() < 1e-4

    def test_anything_else_is_refused(self):
        with pytest.raises(InputError, match="Lens cannot use"):
            Lens(42)
