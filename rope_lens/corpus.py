"""Corpora larger than memory: lazy text readers and an on-disk token store.

``--prompts`` accepts, besides the built-in names and small ``.txt`` / ``.jsonl`` files:

- a local Hugging Face ``datasets`` folder (``Dataset.save_to_disk``: ``*.arrow`` shards; a
  ``DatasetDict`` folder reads its ``train`` split, or give the split's folder);
- ``.parquet``, ``.arrow`` / ``.feather`` (Arrow IPC, stream or file format) files, or a folder
  of them;
- ``.jsonl`` files of any size (read line by line once larger than :data:`LAZY_JSONL_BYTES`).

Texts are read a record batch at a time (:class:`Texts`, never a list), tokenized once into a
temporary token file (int32 ids plus int64 offsets, both read back with seeks, not mmap, so
pages of a huge corpus never pile up in the resident set), and batches read their rows from
that file (:class:`TokenFile`). Peak memory is the tokenizer, one record batch and one
analysis batch, whatever the corpus size. The token hash is computed while writing, in exactly
the form ``rope_lens.io.hash_tokens`` uses, so a streamed run has the identity of an in-memory
run on the same tokens.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from rope_lens.errors import InputError

log = logging.getLogger(__name__)

COLUMN = "text"
LAZY_SUFFIXES = (".parquet", ".arrow", ".feather")
LAZY_JSONL_BYTES = 64 * 2**20
READ_ROWS = 1024  # texts per record batch read


def is_lazy_source(path: Path) -> bool:
    """True for what this module reads: a folder of Arrow / Parquet / JSONL files (an HF
    ``datasets`` folder included), an Arrow or Parquet file, or a large JSONL file."""
    if path.is_dir():
        return bool(_files(path, missing_ok=True))
    if path.suffix in LAZY_SUFFIXES:
        return True
    return path.suffix == ".jsonl" and path.is_file() and path.stat().st_size > LAZY_JSONL_BYTES


def _files(folder: Path, missing_ok: bool = False) -> list[Path]:
    """The data files of a folder, in a stable order (an HF DatasetDict: its train split)."""
    dict_file = folder / "dataset_dict.json"
    if dict_file.is_file():
        splits = json.loads(dict_file.read_text()).get("splits", [])
        split = "train" if "train" in splits else (splits[0] if splits else None)
        if split is None:
            raise InputError(f"{folder} is a dataset dict with no splits")
        return _files(folder / split, missing_ok)
    for pattern in ("*.arrow", "*.parquet", "*.feather", "*.jsonl"):
        found = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
        if found:
            return found
    if missing_ok:
        return []
    raise InputError(f"--prompts {folder} holds no .arrow, .parquet or .jsonl files")


class Texts(Sequence[str]):
    """The texts of a large source, read lazily each time it is iterated (``limit``: the first
    N). ``len`` costs one counting pass (cached); indexing reads up to the index."""

    def __init__(self, path: str | Path, limit: int | None = None, column: str = COLUMN):
        self.path = Path(path)
        self.limit = limit
        self.column = column
        self.files = _files(self.path) if self.path.is_dir() else [self.path]
        self._len: int | None = None
        first = next(iter(self), None)  # fail fast: a bad column or file, before any model
        if first is None:
            raise InputError(f"prompts {self.path} has no non-empty texts")

    def __iter__(self) -> Iterator[str]:
        n = 0
        for file in self.files:
            for text in _read(file, self.column):
                if not text.strip():
                    continue
                if self.limit is not None and n >= self.limit:
                    return
                n += 1
                yield text

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return list(self)[index]  # small slices of small sources only
        if index < 0:
            index += len(self)
        for i, text in enumerate(self):
            if i == index:
                return text
        raise IndexError(index)

    def __repr__(self) -> str:
        return f"Texts({str(self.path)!r}, limit={self.limit})"


def _read(path: Path, column: str) -> Iterator[str]:
    """Texts of one file, a record batch at a time."""
    suffix = path.suffix
    if suffix == ".jsonl":
        yield from _read_jsonl(path, column)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if suffix == ".parquet":
            # pre_buffer=False: with pyarrow's default pre-buffering, iter_batches keeps every
            # row group it has read cached until the file is closed, so memory grew with the
            # corpus (+31 MiB per 100k wiki rows; docs/benchmarks.md, "Streaming corpora").
            pf = pq.ParquetFile(path, pre_buffer=False)
            _check_column(path, column, pf.schema_arrow.names)
            batches: Any = pf.iter_batches(batch_size=READ_ROWS, columns=[column])
        else:
            batches = _ipc_batches(path)
        row = 0
        for batch in batches:
            if column not in batch.schema.names:
                _check_column(path, column, batch.schema.names)
            for text in batch.column(column).to_pylist():
                row += 1
                if not isinstance(text, str):  # as a jsonl record without one is refused
                    raise InputError(
                        f"{path} row {row} has no string {column!r} (it holds "
                        f"{type(text).__name__}); every row must be a text"
                    )
                yield text
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"cannot read prompts file {path}: {err}") from err


def _ipc_batches(path: Path) -> Iterator[Any]:
    """Record batches of an Arrow IPC file (stream format, as ``datasets`` writes, or file
    format / Feather v2), read from a plain file so pages are not kept mapped."""
    import pyarrow as pa

    try:
        with pa.OSFile(str(path)) as fh:
            reader = pa.ipc.open_stream(fh)
            yield from reader
        return
    except pa.ArrowInvalid:
        pass
    with pa.OSFile(str(path)) as fh:
        reader = pa.ipc.open_file(fh)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def _check_column(path: Path, column: str, names: Sequence[str]) -> None:
    if column not in names:
        raise InputError(
            f"prompts file {path} has no {column!r} column (it has: {', '.join(names)})"
        )


def _read_jsonl(path: Path, column: str) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", errors="strict") as fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{n} is not valid JSON ({err.msg})") from err
                if not isinstance(obj, dict) or not isinstance(obj.get(column), str):
                    raise InputError(f"{path}:{n} has no string field {column!r}")
                yield obj[column]
        except UnicodeDecodeError as err:
            raise InputError(f"prompts file {path} is not UTF-8 text ({err.reason})") from err


class TokenFile(Sequence[list[int]]):
    """Token id sequences on disk: ``ids`` (int32, all sequences back to back) and ``offsets``
    (int64, n + 1 entries). Rows are read with seeks, a slice at a time."""

    def __init__(self, folder: Path, n: int, sha256: str, n_tokens: int) -> None:
        self.folder = folder
        self.n = n
        self.sha256 = sha256
        self.n_tokens = n_tokens

    def __len__(self) -> int:
        return self.n

    def _offsets(self, start: int, stop: int) -> np.ndarray:
        with open(self.folder / "offsets.bin", "rb") as fh:
            fh.seek(start * 8)
            return np.fromfile(fh, dtype=np.int64, count=stop - start + 1)

    def _rows(self, start: int, stop: int) -> list[list[int]]:
        if stop <= start:
            return []
        off = self._offsets(start, stop)
        with open(self.folder / "ids.bin", "rb") as fh:
            fh.seek(int(off[0]) * 4)
            ids = np.fromfile(fh, dtype=np.int32, count=int(off[-1] - off[0]))
        base = off - off[0]
        return [ids[base[i] : base[i + 1]].tolist() for i in range(len(off) - 1)]

    @overload
    def __getitem__(self, index: int) -> list[int]: ...
    @overload
    def __getitem__(self, index: slice) -> list[list[int]]: ...
    def __getitem__(self, index: int | slice) -> list[int] | list[list[int]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n)
            rows = self._rows(start, stop) if step == 1 else None
            if rows is None:
                return [self._rows(i, i + 1)[0] for i in range(start, stop, step)]
            return rows
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self._rows(index, index + 1)[0]

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, self.n, READ_ROWS):
            yield from self._rows(start, min(start + READ_ROWS, self.n))


def _scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="rope-lens-tokens-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def tokenize(
    tokenizer: Any,
    texts: Texts,
    bos_token_id: int | None,
    max_len: int,
    bos: bool = True,
    max_tokens: int | None = None,
    count_bos: bool = False,
    folder: Path | None = None,
) -> TokenFile:
    """``rope_lens.inputs.tokenize`` for a lazy source: the same rules (BOS, truncation to
    ``max_len``, the ``max_tokens`` budget), written to a token file instead of a list."""
    if max_len < 2:
        raise InputError(f"the token window must be at least 2 tokens, got {max_len}")
    folder = folder or _scratch()
    folder.mkdir(parents=True, exist_ok=True)
    with_bos = bos and bos_token_id is not None
    budget = float("inf") if max_tokens is None else max_tokens
    h = hashlib.sha256()
    n = truncated = total = 0
    chunk: list[str] = []
    with open(folder / "ids.bin", "wb") as ids_fh, open(folder / "offsets.bin", "wb") as off_fh:
        off_fh.write(np.int64(0).tobytes())

        def flush() -> bool:
            nonlocal n, truncated, total, budget
            encoded = tokenizer(chunk, add_special_tokens=False)["input_ids"]
            chunk.clear()
            for ids in encoded:
                if budget <= 0:
                    return False
                if with_bos:
                    ids = [bos_token_id, *ids]
                if len(ids) > max_len:
                    ids, truncated = ids[:max_len], truncated + 1
                if len(ids) <= (1 if bos else 0):
                    continue
                ids_fh.write(np.asarray(ids, dtype=np.int32).tobytes())
                total += len(ids)
                off_fh.write(np.int64(total).tobytes())
                h.update(json.dumps(list(ids)).encode())
                h.update(b"\n")
                n += 1
                budget -= len(ids) - (1 if with_bos and not count_bos else 0)
            return budget > 0

        going = True
        for text in texts:
            chunk.append(text)
            if len(chunk) >= READ_ROWS and not (going := flush()):
                break
        if going and chunk:
            flush()
    if truncated:
        log.warning("%d text(s) longer than %d tokens were truncated", truncated, max_len)
    if n == 0:
        raise InputError("no text produced any tokens: check the prompts")
    return TokenFile(folder, n, h.hexdigest(), total)


def open_texts(source: Any, limit: int | None = None) -> Texts | None:
    """A lazy :class:`Texts` when ``source`` names a large or columnar corpus (see
    :func:`is_lazy_source`), else None (the caller reads it with ``inputs.load_texts``)."""
    if source is None or str(source) in ("shakespeare", "wiki"):
        return None
    path = Path(source)
    if not path.exists() or not is_lazy_source(path):
        return None
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    return Texts(path, limit)


def tokenize_any(
    tokenizer: Any,
    texts: Sequence[str],
    bos_token_id: int | None,
    max_len: int,
    bos: bool = True,
    max_tokens: int | None = None,
    count_bos: bool = False,
) -> Sequence[list[int]]:
    """:func:`tokenize` into a token file for a lazy :class:`Texts`, else
    ``rope_lens.inputs.tokenize`` (a list)."""
    from rope_lens import inputs

    if isinstance(texts, Texts):
        return tokenize(tokenizer, texts, bos_token_id, max_len, bos, max_tokens, count_bos)
    return inputs.tokenize(tokenizer, texts, bos_token_id, max_len, bos, max_tokens, count_bos)


def rss_peak_mib() -> float:
    """Peak resident set of this process, MiB (Linux ru_maxrss is KiB)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if os.uname().sysname == "Linux" else kib / 2**20
