"""Saving and loading result tables: one parquet file that carries its own metadata.

The metadata records what is needed to trust or redo a table: model, revision, dtype, RoPE
parameters, a hash of the exact token ids analysed, options, package versions and the table's
identity (:mod:`rope_lens.identity`). It is stored inside the parquet file (key-value metadata
under ``rope_lens``), so data and metadata are written by one atomic rename and can never be
torn apart; the JSON sidecar beside it is a readable copy, and the parquet wins when they
disagree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from rope_lens import atomic, identity
from rope_lens.errors import BadResultError, CheckpointError

log = logging.getLogger(__name__)

PACKAGES = ("rope-lens", "torch", "transformers", "transformer-lens", "pandas")
META_KEY = b"rope_lens"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def hash_tokens(sequences: Iterable[Sequence[int]]) -> str:
    """sha256 over the token id sequences, order-sensitive."""
    h = hashlib.sha256()
    for seq in sequences:
        h.update(json.dumps(list(seq)).encode())
        h.update(b"\n")
    return h.hexdigest()


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically: readers see the old file or the new one, never half."""
    return atomic.write_text(path, json.dumps(obj, indent=2, allow_nan=True, default=str))


def bad_values(df: pd.DataFrame, columns: Sequence[str] | None = None) -> dict[str, int]:
    """Count of non-finite values per column: infinities in any float column, and NaN in
    ``columns`` (the measured ones, which are never legitimately missing).

    A wavelength column (``wavelength``, ``wavelength_over_context``) may hold +inf: it is
    the tokens-per-turn of a chunk that never turns (NoPE, p-RoPE, partial rotary), a value,
    not a fault."""
    out: dict[str, int] = {}
    for col in df.columns:
        if not pd.api.types.is_float_dtype(df[col]):
            continue
        values = df[col].to_numpy()
        pos_inf_ok = str(col).startswith("wavelength")
        n = int((values == -math.inf).sum()) + (
            0 if pos_inf_ok else int((values == math.inf).sum())
        )
        if columns is not None and col in columns:
            n += int(pd.isna(values).sum())
        if n:
            out[col] = n
    return out


def check_finite(df: pd.DataFrame, columns: Sequence[str] | None, what: str) -> None:
    """Refuse a table with NaN or infinite measurements: they come from corrupt weights (or an
    overflowing dtype), never from the analysis itself.

    Raises:
        BadResultError: naming the columns and what to do.
    """
    bad = bad_values(df, columns)
    if bad:
        cells = ", ".join(f"{n:,} in {col}" for col, n in bad.items())
        raise BadResultError(
            f"{what} produced non-finite values ({cells} of {len(df):,} rows); nothing was "
            "saved. The model's weights are likely corrupt: re-download or reconvert it (delete "
            "its cached folder), or try --dtype float32"
        )


def save_table(df: pd.DataFrame, path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``df`` to ``path`` (.parquet) with ``meta`` (+ rows, columns, a content hash of
    the values, versions) inside it, in one atomic rename; then a readable JSON copy of
    ``meta`` beside it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).with_suffix(".parquet")
    sidecar = {
        **meta,
        "rows": len(df),
        "columns": list(df.columns),
        "table_sha256": identity.table_sha256(df),
        "versions": package_versions(),
    }
    text = json.dumps(sidecar, indent=2, default=str) + "\n"
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: text})
    atomic.write_file(path, lambda tmp: pq.write_table(table, tmp))
    try:
        atomic.write_text(path.with_suffix(".json"), text)
    except OSError as err:  # the parquet holds the same metadata: the table is saved
        log.warning("saved %s, but not its readable .json copy (%s)", path, err)
    return path


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata embedded in a parquet written by :func:`save_table` (None: none inside)."""
    import pyarrow.parquet as pq

    schema_meta = pq.read_schema(path).metadata or {}
    raw = schema_meta.get(META_KEY)
    return None if raw is None else json.loads(raw)


def load_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table saved by :func:`save_table` and its metadata, checked against each other.

    Raises:
        CheckpointError: missing, unreadable, rows that disagree with the metadata, or values
            that differ from the content hash it was saved with (edited afterwards).
    """
    import pyarrow.parquet as pq

    path = Path(path).with_suffix(".parquet")
    if not path.exists():
        raise CheckpointError(f"no results table at {path}")
    try:
        table = pq.read_table(path)
        df = table.to_pandas()
        raw = (table.schema.metadata or {}).get(META_KEY)
        meta = None if raw is None else json.loads(raw)
    except Exception as err:  # pyarrow raises many types for corrupt files
        raise CheckpointError(
            f"{path} is not a readable parquet file ({err}); rerun the analysis"
        ) from err
    if meta is None:  # written before the metadata moved inside: trust the sidecar, checked
        side = path.with_suffix(".json")
        try:
            meta = json.loads(side.read_text()) if side.exists() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{side} is not readable JSON ({err}); rerun the analysis"
            ) from err
        if not isinstance(meta, dict):
            raise CheckpointError(f"{side} is not a metadata object; rerun the analysis")
    rows = meta.get("rows")
    if rows is not None and rows != len(df):
        raise CheckpointError(
            f"{path} has {len(df):,} rows but its metadata says {rows:,}: it is incomplete; "
            "rerun the analysis (with --force)"
        )
    want = meta.get("table_sha256")
    if want is not None and want != identity.table_sha256(df):
        raise CheckpointError(
            f"{path} holds other values than it was saved with (its content hash differs): it "
            "was edited afterwards; rerun the analysis (with --force)"
        )
    return df, meta


def reusable(
    path: str | Path, fields: Mapping[str, Any], columns: Sequence[str] | None
) -> str | None:
    """Why the table at ``path`` cannot stand in for a new run whose identity fields are
    ``fields`` (:func:`rope_lens.identity.identity_fields`), naming the field that differs
    (None: it can: same identity, it reads back whole and unedited, its values are finite)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        df, meta = load_table(path)
    except CheckpointError as err:
        return str(err)
    why = identity.mismatch(meta, fields)
    if why is not None:
        return why
    if bad_values(df, columns):
        return "it holds non-finite values"
    return None
