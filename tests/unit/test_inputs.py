"""Prompt files, built-in texts and tokenisation edge cases."""

import json
import logging

import pytest

from rope_lens import inputs
from rope_lens.errors import InputError


def test_builtin_shakespeare():
    texts = inputs.load_texts()
    assert len(texts) == 10 and all(len(t) > 200 for t in texts)


def test_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "x"}) + "\n\n" + json.dumps({"text": "y"})
    )
    assert inputs.load_texts(tmp_path / "a.txt") == ["one", "two"]
    assert inputs.load_texts(tmp_path / "b.jsonl") == ["x", "y"]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.txt", "\n  \n", "no non-empty texts"),
        ("bad.jsonl", "{not json", "not valid JSON"),
        ("nofield.jsonl", '{"body": "x"}', "no string field 'text'"),
    ],
)
def test_bad_prompt_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        inputs.load_texts(tmp_path / name)


def test_missing_file():
    with pytest.raises(InputError, match="not found"):
        inputs.load_texts("/no/such/file.txt")


def test_truncation_warns(tiny_lm, caplog):
    lm = tiny_lm("llama")
    with caplog.at_level(logging.WARNING):
        seqs = inputs.tokenize(lm.tokenizer, ["a" * 100, "bb"], lm.bos_token_id, 10)
    assert [len(s) for s in seqs] == [10, 3] and seqs[0][0] == lm.bos_token_id
    assert "truncated" in caplog.text


def test_batches_are_right_padded(tiny_lm):
    lm = tiny_lm("llama")
    seqs = inputs.tokenize(lm.tokenizer, ["abcd", "ab"], lm.bos_token_id, 10)
    b = next(inputs.batches(seqs, 2, lm.tokenizer.pad_token_id, True))
    assert b.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert b.positions.tolist()[1] == [0, 1, 2, 3, 4]
    assert b.count_mask.tolist() == [
        [False, True, True, True, True],
        [False, True, True, False, False],
    ]


def test_lens_and_the_pipeline_batch_the_same_way(tiny_lm):
    """One batching function: Lens.batches and the CLI pipeline both hand analyses
    inputs.batch_factory, so the same prompts and options give the same batches."""
    from rope_lens import Lens, inputs

    lm = tiny_lm("llama")
    texts = ["one two three", "four five six seven", "eight"]
    lens_batches = list(Lens(lm).batches(texts, max_len=16, batch_size=2, max_tokens=12)())
    seqs = inputs.tokenize(lm.tokenizer, texts, lm.bos_token_id, 16, max_tokens=12)
    ours = list(inputs.batch_factory(seqs, 2, lm.tokenizer.pad_token_id, True, False, 12)())
    assert len(lens_batches) == len(ours)
    for a, b in zip(lens_batches, ours):
        assert a.input_ids.equal(b.input_ids) and a.count_mask.equal(b.count_mask)
