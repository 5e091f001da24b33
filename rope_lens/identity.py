"""What a saved number depends on, and the one rule for reusing it: a table (or a partial
checkpoint) stands in for a new run only when its identity matches what the reader is about
to claim, and a refusal names the field that differs.

The identity of a table covers the model (resolved absolute folder, revision, and a full
sha256 of its config and weight files), the analysis, every option that changes the numbers,
the exact token ids and the package version. Two models that share a folder *name*, a run
folder that kept training, a fine-tuned model saved into the folder of the one analysed, a
checkpoint resumed with another ``--batch-size`` or from another model with the same
tokenizer: each gets another identity, so none of them can be mistaken for the other.

Hashing every weight file in full is what a same-size rewrite cannot fool; it is done once
per file: the digest is cached under the rope-lens cache (``hashes/``), keyed by the file's
resolved path, size, mtime_ns, ctime_ns and inode, so a 16 GB folder is read once and later
checks are a ``stat`` per file. A file modified in the last seconds is never cached (two
writes inside one timestamp tick could share a stat), the trap git calls "racy clean".

Every table also carries a content hash of its own values (:func:`table_sha256`), so a value
edited inside a valid parquet file is noticed by every reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Files whose bytes decide the numbers a model folder produces (tokenizer files are covered by
# the token hash).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
CONFIG_FILES = ("config.json", "model.safetensors.index.json", "generation_config.json")
HASHES_ENV = "ROPE_LENS_HASHES"  # where file digests are cached (default: <cache>/hashes)
RACY_S = 2.0  # files modified more recently than this are hashed but not cached
_CHUNK = 1 << 22

# Identity fields in the order a refusal names them, with the words it uses.
FIELD_NAMES = {
    "model.folder": "model folder",
    "model.revision": "model revision",
    "model.weights": "model weights (a full hash of the config and weight files)",
    "analysis": "analysis",
    "inputs_sha256": "inputs (the token ids analysed)",
    "rope_lens": "rope-lens version",
}


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rope-lens")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "source"


def _read_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def hash_cache_dir() -> Path:
    env = os.environ.get(HASHES_ENV)
    if env:
        return Path(env)
    from rope_lens.models.packaged import cache_root

    return cache_root() / "hashes"


def sha256_file(path: str | Path, cache: bool = True) -> str:
    """Full sha256 of a file's bytes, cached per file by (size, mtime_ns, ctime_ns, inode).

    ``cache=False`` always reads the file (manifests that must prove the bytes on disk)."""
    path = Path(path)
    if not cache:
        return _read_sha256(path)
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    entry = hash_cache_dir() / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.json"
    try:
        saved = json.loads(entry.read_text())
        if saved.get("path") == real and saved.get("stat") == stamp:
            return str(saved["sha256"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # no entry, or a torn one: hash again
    digest = _read_sha256(Path(real))
    if time.time() - st.st_mtime_ns / 1e9 > RACY_S:
        try:
            from rope_lens import atomic

            atomic.write_text(entry, json.dumps({"path": real, "stat": stamp, "sha256": digest}))
        except OSError:  # a read-only cache: correct, only slower next time
            pass
    return digest


def weights_fingerprint(folder: str | Path) -> str:
    """sha256 over the full content hashes of the config and weight files of a model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no-folder"
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name in CONFIG_FILES or path.suffix in WEIGHT_SUFFIXES):
            h.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, tuples as lists, paths as strings) for hashing."""
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def digest(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(dict(fields)).encode()).hexdigest()


def model_identity(folder: str | Path, revision: str | None) -> dict[str, Any]:
    """The model part of an identity: where the weights are and what they hold."""
    return {
        "folder": os.path.realpath(folder),
        "revision": revision,
        "weights": weights_fingerprint(folder),
    }


def identity_fields(
    model: Mapping[str, Any],
    analysis: str,
    options: Mapping[str, Any],
    inputs_sha256: str,
) -> dict[str, Any]:
    """What a result depends on, as JSON-able fields (saved in every sidecar, so a refusal
    can say which one differs)."""
    return json.loads(
        canonical(
            {
                "model": dict(model),
                "analysis": analysis,
                "options": dict(options),
                "inputs_sha256": inputs_sha256,
                "rope_lens": package_version(),
            }
        )
    )


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _short(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    if isinstance(value, str) and len(value) > 24:  # a hash or a path: enough to tell apart
        return value[:12] + "…"
    return canonical(value)


_ABSENT = object()


def _name(key: str) -> str:
    if key in FIELD_NAMES:
        return FIELD_NAMES[key]
    for prefix in ("options.extra.", "options."):  # extra: the options of later analyses
        if key.startswith(prefix):
            return "option " + key[len(prefix) :]
    return key


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The identity fields that differ, in words (``"model weights (...): table 3fa2…, now
    9c01…"``, ``"option max_len: table 512, now 16"``); empty when ``saved`` and ``now``
    agree on every field either has."""
    a, b = _leaves(saved), _leaves(now)
    order = list(FIELD_NAMES)
    out = []
    for key in sorted(a.keys() | b.keys(), key=lambda k: (order.index(k) if k in order else 99, k)):
        old, new = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if old != new:
            out.append(f"{_name(key)}: table {_short(old)}, now {_short(new)}")
    return out


def mismatch(meta: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """Why a table with sidecar ``meta`` does not match the identity fields ``now`` (None: it
    does). Tables saved before sidecars carried their fields can only be compared whole."""
    saved = meta.get("identity_fields")
    if not isinstance(saved, Mapping):
        if meta.get("identity") == digest(now):
            return None
        return "it was saved without per-field identity by an older rope-lens; rerun it"
    diff = differences(saved, now)
    if diff:
        return "it differs in " + "; ".join(diff)
    if meta.get("identity") != digest(now):  # a field this reader does not know about
        return "its identity hash does not match its fields; rerun it"
    return None


def same_model(meta: Mapping[str, Any], model: Mapping[str, Any]) -> str | None:
    """Why the table with sidecar ``meta`` is not a table of ``model`` (a
    :func:`model_identity`; None: it is), naming the field that differs."""
    saved = (meta.get("identity_fields") or {}).get("model")
    if not isinstance(saved, Mapping):
        saved = {"folder": meta.get("folder"), "weights": meta.get("weights_sha256")}
    diff = differences({"model": saved}, {"model": {k: model[k] for k in saved if k in model}})
    return ("it is a table of another model: " + "; ".join(diff)) if diff else None


def table_sha256(df: Any) -> str:
    """Content hash of a DataFrame's columns, dtypes and values (row order included)."""
    import pandas as pd

    h = hashlib.sha256(f"{len(df)}\n".encode())
    for col in df.columns:
        series = df[col]
        h.update(f"{col}\0{series.dtype}\n".encode())
        try:
            values = pd.util.hash_pandas_object(series, index=False).to_numpy()
        except TypeError:  # unhashable cells (lists): hash their JSON text
            values = pd.util.hash_pandas_object(
                series.map(lambda v: canonical(v.tolist() if hasattr(v, "tolist") else v)),
                index=False,
            ).to_numpy()
        h.update(values.tobytes())
    return h.hexdigest()
