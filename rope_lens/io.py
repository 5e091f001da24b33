"""Saving and loading result tables: parquet plus a JSON sidecar, written atomically.

The sidecar records what is needed to trust or redo a table: model, revision, dtype, RoPE
parameters, a hash of the exact token ids analysed, options, and package versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from rope_lens.errors import CheckpointError

PACKAGES = ("rope-lens", "torch", "transformers", "transformer-lens", "pandas")


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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically: readers see the old file or the new one, never half."""
    path = Path(path)
    text = json.dumps(obj, indent=2, allow_nan=True, default=str)
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def save_table(df: pd.DataFrame, path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``df`` to ``path`` (.parquet) and ``meta`` (+ versions) beside it as .json."""
    path = Path(path).with_suffix(".parquet")
    sidecar = {**meta, "rows": len(df), "columns": list(df.columns), "versions": package_versions()}
    _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    _atomic_write(
        path.with_suffix(".json"),
        lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2, default=str) + "\n"),
    )
    return path


def load_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table saved by :func:`save_table` and its sidecar."""
    path = Path(path).with_suffix(".parquet")
    if not path.exists():
        raise CheckpointError(f"no results table at {path}")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises many types for corrupt files
        raise CheckpointError(f"{path} is not a readable parquet file ({err}); rerun") from err
    side = path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text()) if side.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{side} is not readable JSON ({err}); rerun the analysis") from err
    return df, meta
