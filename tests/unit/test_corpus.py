"""Corpora larger than memory (rope_lens.corpus): parquet / arrow / HF datasets folders / big
jsonl are read lazily and tokenized into a file, and give the tokens, batches, identity and
tables of the in-memory path on the same texts."""

from __future__ import annotations

import json

import pytest
import torch

from rope_lens import cli, corpus, inputs, io
from rope_lens.errors import InputError

TEXTS = [f"Text {i}: {'rotary positions ' * (1 + i % 5)}end." for i in range(23)]


def _write_all(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": list(range(len(TEXTS))), "text": TEXTS})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=5)
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as fh:  # IPC file format, small batches
        with pa.ipc.new_file(fh, table.schema) as w:
            for batch in table.to_batches(max_chunksize=4):
                w.write_batch(batch)
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (tmp_path / "c.txt").write_text("\n".join(TEXTS) + "\n")
    return ["c.parquet", "c.arrow", "hf", "c.jsonl"]


def test_lazy_sources_read_the_same_texts(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "LAZY_JSONL_BYTES", 0)  # this small jsonl counts as large
    for name in _write_all(tmp_path):
        texts = corpus.open_texts(tmp_path / name)
        assert isinstance(texts, corpus.Texts), name  # lazy: not a list
        assert list(texts) == TEXTS and len(texts) == len(TEXTS), name
        assert list(corpus.open_texts(tmp_path / name, limit=7) or []) == TEXTS[:7]
    assert corpus.open_texts(tmp_path / "c.txt") is None  # small files as before


@pytest.mark.parametrize("max_tokens", [None, 150])
def test_token_file_equals_in_memory_tokens(tmp_path, tiny_lm, max_tokens, monkeypatch):
    monkeypatch.setattr(corpus, "READ_ROWS", 4)  # several record batches and token chunks
    _write_all(tmp_path)
    lm = tiny_lm("llama")
    kw = dict(bos_token_id=lm.bos_token_id, max_len=40, max_tokens=max_tokens)
    want = corpus.tokenize_any(lm.tokenizer, TEXTS, **kw)
    assert isinstance(want, list)
    lazy = corpus.open_texts(tmp_path / "c.parquet")
    assert lazy is not None
    got = corpus.tokenize_any(lm.tokenizer, lazy, **kw)
    assert isinstance(got, corpus.TokenFile)
    assert len(got) == len(want) and list(got) == want and got[3:9] == want[3:9]
    assert got[-1] == want[-1]
    assert got.sha256 == io.hash_tokens(want) == io.hash_tokens(got)
    pad = lm.tokenizer.pad_token_id
    for a, b in zip(
        inputs.batches(want, 4, pad, True, max_tokens=max_tokens),
        inputs.batches(got, 4, pad, True, max_tokens=max_tokens),
        strict=True,
    ):
        for x, y in zip(a.__dict__.values(), b.__dict__.values(), strict=True):
            assert torch.equal(x, y)


def test_bad_column_and_empty_source_are_one_line_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a b c"]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="no 'text' column .*it has: body"):
        corpus.open_texts(tmp_path / "x.parquet")
    pq.write_table(pa.table({"text": ["  ", ""]}), tmp_path / "e.parquet")
    with pytest.raises(InputError, match="no non-empty texts"):
        corpus.open_texts(tmp_path / "e.parquet")
    (tmp_path / "empty").mkdir()
    assert corpus.open_texts(tmp_path / "empty") is None  # then load_texts says "a folder"
    with pytest.raises(InputError, match="is a folder"):
        inputs.load_texts(tmp_path / "empty")


def test_analyze_on_parquet_equals_txt(tmp_path, tiny_dirs):
    _write_all(tmp_path)
    common = ["--model", str(tiny_dirs["llama"]), "--device", "cpu", "--max-len", "24",
              "--batch-size", "4", "--no-progress", "--threads", "1"]  # fmt: skip
    for name in ("c.txt", "c.parquet"):
        out = tmp_path / f"out-{name}"
        assert (
            cli.main(["analyze", *common, "--prompts", str(tmp_path / name), "--out", str(out)])
            == 0
        )
    a, meta_a = io.load_table(tmp_path / "out-c.txt" / "band_norm.parquet")
    b, meta_b = io.load_table(tmp_path / "out-c.parquet" / "band_norm.parquet")
    assert meta_a["inputs_sha256"] == meta_b["inputs_sha256"]
    assert meta_a["n_texts"] == meta_b["n_texts"] == len(TEXTS)
    assert (a.mean_norm.to_numpy() == b.mean_norm.to_numpy()).all()
