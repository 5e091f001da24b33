"""What a saved number depends on, as one hash: reuse a result only when its identity matches.

The identity of a table (or of a partial checkpoint) covers the model folder (resolved
absolute path), the revision, a fingerprint of the weights, every option that changes the
numbers, the exact token ids and the package version. Two models that share a folder *name*,
a run folder that kept training, a checkpoint resumed with another ``--batch-size`` or from
another model with the same tokenizer: each gets another identity, so none of them can be
mistaken for the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Files whose bytes decide the numbers a model folder produces (tokenizer files are covered by
# the token hash).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
CONFIG_FILES = ("config.json", "model.safetensors.index.json", "generation_config.json")
SAMPLES = 32  # blocks read from each weight file
BLOCK = 1 << 16


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rope-lens")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "source"


def _file_fingerprint(path: Path, h: Any) -> None:
    """Size, the safetensors header (names, shapes, offsets, metadata) and evenly spaced
    blocks of the data: changes when a run folder keeps training, costs a few MB of reads."""
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as fh:
        if path.suffix == ".safetensors" and size >= 8:
            n = int.from_bytes(fh.read(8), "little")
            if n < size:
                h.update(fh.read(n))
        for i in range(SAMPLES + 1):
            fh.seek(max(0, (size - BLOCK) * i // SAMPLES))
            h.update(fh.read(BLOCK))


def weights_fingerprint(folder: str | Path) -> str:
    """sha256 over the config and a sample of every weight file of a model folder."""
    folder = Path(folder)
    h = hashlib.sha256()
    if not folder.is_dir():
        return "no-folder"
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.name in CONFIG_FILES:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        elif path.suffix in WEIGHT_SUFFIXES:
            _file_fingerprint(path, h)
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


def result_identity(
    model: Mapping[str, Any],
    analysis: str,
    options: Mapping[str, Any],
    inputs_sha256: str,
) -> str:
    """One hash for a result: model identity, analysis, numeric options, tokens, version."""
    return digest(
        {
            "model": dict(model),
            "analysis": analysis,
            "options": dict(options),
            "inputs_sha256": inputs_sha256,
            "rope_lens": package_version(),
        }
    )
