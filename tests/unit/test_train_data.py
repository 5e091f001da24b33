"""Offline corpora, tokenizer caches, packing and the resumable batch order (tiny fixture only)."""

from pathlib import Path

import pytest
import torch

from rope_lens.errors import CheckpointError, InputError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "train"


@pytest.fixture(scope="session")
def wiki(tmp_path_factory):
    from rope_lens.train.data import prepare_data

    return prepare_data("wiki", str(FIXTURE), 384, tmp_path_factory.mktemp("cache"))


class TestCorpora:
    def test_wiki_documents(self):
        from rope_lens.train.corpora import load_texts

        texts = load_texts("wiki", str(FIXTURE))
        assert len(texts["train"]) == 16 and len(texts["valid"]) == 5 and "heldout" not in texts
        assert all(doc.startswith(" = ") for doc in texts["train"])

    def test_flan_heldout_family(self):
        from rope_lens.train.corpora import load_texts

        texts = load_texts("flan", str(FIXTURE))
        assert all("title of the encyclopedia" in d for d in texts["heldout"])
        assert not any("title of the encyclopedia" in d for d in texts["train"] + texts["valid"])
        assert all("\n\nAnswer: " in d for d in texts["train"])

    def test_missing_source(self, tmp_path):
        from rope_lens.train.corpora import load_texts

        with pytest.raises(InputError, match="no wiki training file"):
            load_texts("wiki", str(tmp_path))
        with pytest.raises(InputError, match="neither 'ovos' nor a directory"):
            load_texts("wiki", str(tmp_path / "nowhere"))

    def test_split_is_deterministic(self):
        """sha1-based, so the split is pinned across processes and machines (Python's hash()
        is salted per process and would not be); ~5% of keys go to validation."""
        from rope_lens.train.corpora import split_of

        assert [split_of(t) for t in ("Paris", "Moon", "doc0", "doc1", "doc2", "doc36")] == [
            "train",
            "train",
            "valid",
            "valid",
            "train",
            "valid",
        ]
        share = sum(split_of(f"title {i}") == "valid" for i in range(20_000)) / 20_000
        assert 0.045 < share < 0.055


class TestCache:
    def test_stream_and_tokenizer(self, wiki):
        train = wiki.streams["train"]
        assert train.dtype == torch.int32 and train[0].item() == 2  # <bos> first
        assert (train == 1).sum() == 16 and (train == 2).sum() == 16  # one <eos>/<bos> per doc
        text = wiki.tokenizer.decode(train[1:40].tolist())
        assert "Centaurus" in text

    def test_cache_is_reused(self, wiki):
        from rope_lens.train.data import prepare_data

        again = prepare_data("wiki", str(FIXTURE), 384, wiki.cache_dir.parent, build=False)
        assert again.cache_dir == wiki.cache_dir
        assert torch.equal(again.streams["valid"], wiki.streams["valid"])

    def test_missing_cache(self, tmp_path):
        from rope_lens.train.data import prepare_data

        with pytest.raises(InputError, match="data cache .* is missing"):
            prepare_data("wiki", str(FIXTURE), 384, tmp_path, build=False)

    def test_corrupt_cache(self, wiki, tmp_path):
        import shutil

        from rope_lens.train.data import prepare_data

        bad = tmp_path / wiki.cache_dir.name
        shutil.copytree(wiki.cache_dir, bad)
        (bad / "tokens.safetensors").write_bytes(b"not a safetensors file")
        with pytest.raises(CheckpointError, match="corrupt"):
            prepare_data("wiki", str(FIXTURE), 384, tmp_path)


class TestPackingAndOrder:
    def test_pack(self):
        from rope_lens.train.data import pack

        seqs = pack(torch.arange(103, dtype=torch.int32), 10)
        assert seqs.shape == (10, 10) and seqs[3, 0] == 30

    def test_sampler_resumes_exactly(self):
        from rope_lens.train.data import BatchSampler

        a = BatchSampler(23, 4, seed=7)
        first = [a.next_batch() for _ in range(9)]  # crosses two epoch boundaries
        b = BatchSampler(23, 4, seed=7)
        for _ in range(4):
            b.next_batch()
        c = BatchSampler(23, 4, seed=7)
        c.load_state_dict(b.state_dict())
        for want in first[4:]:
            assert torch.equal(c.next_batch(), want)
        assert all(len(set(x.tolist())) == 4 for x in first)

    def test_sampler_rejects_other_data(self):
        from rope_lens.train.data import BatchSampler

        state = BatchSampler(23, 4, seed=7).state_dict()
        with pytest.raises(CheckpointError, match="n=23"):
            BatchSampler(24, 4, seed=7).load_state_dict(state)

    def test_too_little_data(self):
        from rope_lens.train.data import BatchSampler

        with pytest.raises(InputError, match="fewer than one batch"):
            BatchSampler(3, 4, seed=0)
