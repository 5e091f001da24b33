"""Tokenizer training, tokenized caches on disk, packing and a resumable batch order.

A cache lives in ``{data_root}/{dataset}-{fingerprint}-v{vocab}/``: the tokenizer (a byte-level
BPE trained locally on the training split, wrapped as ``PreTrainedTokenizerFast`` with Gemma's
ids pad=0, eos=1, bos=2), ``tokens.safetensors`` (one int32 stream per split: ``<bos> doc <eos>``
repeated) and ``meta.json``. The fingerprint hashes the raw text, so a changed corpus gets a new
cache. Caches are written to a temporary folder and renamed into place, so a cache folder is
either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from rope_lens import atomic
from rope_lens.errors import CheckpointError, InputError
from rope_lens.train.corpora import load_texts
from rope_lens.train.model import BOS_ID, EOS_ID, PAD_ID

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>"]  # ids 0, 1, 2 = Gemma's PAD_ID, EOS_ID, BOS_ID
CACHE_VERSION = 1


@dataclass
class DataBundle:
    """A prepared dataset: tokenizer plus one token stream per split."""

    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    streams: dict[str, Int[Tensor, " token"]]
    cache_dir: Path
    meta: dict[str, Any]


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Train a byte-level BPE on ``texts`` and wrap it for transformers."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    ids = [bpe.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [PAD_ID, EOS_ID, BOS_ID]:
        raise RuntimeError(f"special tokens got ids {ids}, expected 0, 1, 2")
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


def encode_stream(tokenizer: Any, docs: list[str]) -> Int[Tensor, " token"]:
    """``<bos> doc <eos>`` for every document, concatenated (the packing stream)."""
    encoded = tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    out: list[int] = []
    for enc in encoded:
        out.append(BOS_ID)
        out.extend(enc.ids)
        out.append(EOS_ID)
    return torch.tensor(out, dtype=torch.int32)


def fingerprint(dataset: str, texts: dict[str, list[str]]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{dataset}".encode())
    for split in sorted(texts):
        h.update(f"\0{split}:{len(texts[split])}".encode())
        for doc in texts[split]:
            h.update(doc.encode())
            h.update(b"\0")
    return h.hexdigest()[:12]


def _load_cache(cache_dir: Path) -> DataBundle:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import PreTrainedTokenizerFast

    try:
        meta = json.loads((cache_dir / "meta.json").read_text())
        streams = load_file(cache_dir / "tokens.safetensors")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(cache_dir)
    except (OSError, ValueError, SafetensorError, json.JSONDecodeError) as err:
        raise CheckpointError(f"data cache {cache_dir} is corrupt ({err}); delete it") from err
    for split, n in meta["n_tokens"].items():
        if split not in streams or streams[split].numel() != n:
            raise CheckpointError(f"data cache {cache_dir} is corrupt ({split}); delete it")
    return DataBundle(tokenizer, streams, cache_dir, meta)


def prepare_data(
    dataset: str, source: str, vocab_size: int, data_root: str | Path, *, build: bool = True
) -> DataBundle:
    """Load the tokenized cache for (dataset, source, vocab), building it if needed.

    Args:
        dataset: "wiki" or "flan".
        source: "ovos" or a directory of text files (see ``rope_lens.train.corpora``).
        vocab_size: BPE vocabulary size (the model's ``vocab_size``).
        data_root: folder holding the caches.
        build: if False, a missing cache is an error instead of being built.

    Raises:
        InputError: missing source, or a missing cache with ``build=False``.
        CheckpointError: a corrupt cache.
    """
    from safetensors.torch import save_file

    texts = load_texts(dataset, source)
    fp = fingerprint(dataset, texts)
    root = Path(data_root)
    cache_dir = root / f"{dataset}-{fp}-v{vocab_size}"
    if cache_dir.is_dir():
        return _load_cache(cache_dir)
    if not build:
        raise InputError(
            f"data cache {cache_dir} is missing; build it with "
            f"`rope-lens train --prepare-only --set dataset={dataset}` (source {source})"
        )
    # Another process building the same cache first wins; ours is then discarded.
    with atomic.folder(cache_dir, replace=False) as tmp:
        tokenizer = train_tokenizer(texts["train"], vocab_size)
        streams = {split: encode_stream(tokenizer, docs) for split, docs in texts.items()}
        tokenizer.save_pretrained(tmp)
        save_file(streams, tmp / "tokens.safetensors")
        meta = {
            "version": CACHE_VERSION,
            "dataset": dataset,
            "source": source,
            "fingerprint": fp,
            "vocab_size": vocab_size,
            "tokenizer_vocab": len(tokenizer),
            "n_docs": {s: len(d) for s, d in texts.items()},
            "n_tokens": {s: int(t.numel()) for s, t in streams.items()},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return _load_cache(cache_dir)


def pack(stream: Int[Tensor, " token"], seq_len: int) -> Int[Tensor, "batch pos"]:
    """Cut a token stream into ``[n, seq_len]`` sequences, dropping the remainder."""
    n = stream.numel() // seq_len
    return stream[: n * seq_len].view(n, seq_len)  # (n, seq_len)


class BatchSampler:
    """Which packed sequences form each global batch: a fresh permutation every epoch.

    The state is two ints (epoch, offset), so a resumed run draws exactly the batches the
    uninterrupted run would have drawn.
    """

    def __init__(self, n_sequences: int, batch_size: int, seed: int) -> None:
        if n_sequences < batch_size:
            raise InputError(
                f"the training split has only {n_sequences} sequences, fewer than one batch of "
                f"{batch_size}; lower batch_size or seq_len, or use more text"
            )
        self.n, self.batch_size, self.seed = n_sequences, batch_size, seed
        self.epoch, self.offset = 0, 0
        self._perm: Tensor | None = None

    def _permutation(self) -> Tensor:
        if self._perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=gen)
        return self._perm

    def next_batch(self) -> Int[Tensor, " batch"]:
        """Indices of the next global batch (the epoch's incomplete tail is skipped)."""
        if self.offset + self.batch_size > self.n:
            self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
        idx = self._permutation()[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return idx

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = self.state_dict()
        for key in ("n", "batch_size", "seed"):
            if int(state[key]) != mine[key]:
                raise CheckpointError(
                    f"checkpoint data position is for {key}={int(state[key])}, this run has "
                    f"{mine[key]}: the data or batch size changed since the checkpoint"
                )
        self.epoch, self.offset, self._perm = int(state["epoch"]), int(state["offset"]), None
