"""Reading saved tables for a claim: the readers' side of the identity rule.

``report``, ``figures`` and ``compare`` draw what results folders hold and title it with a
model's name. A table is drawn only when it reads back whole and unedited
(:func:`rope_lens.io.load_table`) and belongs to the model the page claims: the model given
(its :func:`rope_lens.identity.model_identity`), or, for a bare folder, the model most of its
tables share. Every table left out comes back with the reason, naming the field that differs,
so a reader can say why a panel is missing instead of drawing another model's numbers under
this one's name.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rope_lens import identity, io
from rope_lens.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class Folder:
    """The tables of one results folder that belong together.

    Attributes:
        tables: kind (``heads``, ``per_token``, ...) -> DataFrame; ``df.attrs["options"]``
            holds the options the table was computed with and ``df.attrs["n_layers"]`` the
            model's layer count (a panel checks what it claims).
        metas: kind -> the table's sidecar.
        left_out: (file, why) for every table that is not drawn.
        model: display name of the model (the sidecar's ``model``).
        model_id: its model identity (folder, revision, weights), when the sidecars have one.
    """

    tables: dict[str, Any] = field(default_factory=dict)
    metas: dict[str, dict] = field(default_factory=dict)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    model: str = ""
    model_id: dict[str, Any] | None = None


def model_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The model identity a sidecar records (older sidecars: their folder and weights)."""
    fields = meta.get("identity_fields")
    if isinstance(fields, Mapping) and isinstance(fields.get("model"), Mapping):
        return dict(fields["model"])
    return {
        "folder": meta.get("folder"),
        "revision": meta.get("revision"),
        "weights": meta.get("weights_sha256"),
    }


def read_table(path: Path, model: Mapping[str, Any] | None = None):
    """``(df, meta, None)`` for a table that reads back whole and unedited and (given
    ``model``) is a table of that model; ``(None, meta or {}, why)`` otherwise."""
    try:
        df, meta = io.load_table(path)
    except CheckpointError as err:
        return None, {}, str(err)
    if model is not None:
        why = identity.same_model(meta, model)
        if why is not None:
            return None, meta, why
    df.attrs["options"] = dict(meta.get("options") or {})
    layer_types = (meta.get("rope") or {}).get("layer_types")
    if isinstance(layer_types, list):  # the model's layer count: "first" / "last layer" panels
        df.attrs["n_layers"] = len(layer_types)
    return df, meta, None


def read_folder(
    folder: str | Path,
    model: Mapping[str, Any] | None = None,
    kinds: Iterable[str] | None = None,
) -> Folder:
    """Every recognised table of ``folder`` (``kinds``: only these) that belongs to ``model``,
    or without ``model`` to the model most of the folder's tables share (ties: the first
    table's, in file order)."""
    from rope_lens.viz.paper import table_name_of

    folder = Path(folder)
    wanted = None if kinds is None else set(kinds)
    read: list[tuple[str, Any, dict]] = []
    out = Folder(model=folder.name)
    for path in sorted(folder.glob("*.parquet")):
        if wanted is not None and path.stem not in wanted:
            continue
        df, meta, why = read_table(path)
        if df is None:
            out.left_out.append((path.name, str(why)))
            continue
        kind = table_name_of(df, meta) or (path.stem if path.stem in _spec_tables() else None)
        if kind is None:
            log.warning("%s: unrecognised table, skipped", path)
            continue
        read.append((kind, df, meta))
    reference = dict(model) if model is not None else _most_common(m for _, _, m in read)
    for kind, df, meta in read:
        why = identity.same_model(meta, reference) if reference is not None else None
        if why is not None:
            out.left_out.append((f"{kind}.parquet", why))
            continue
        out.tables[kind], out.metas[kind] = df, meta
    if out.metas:
        first = next(iter(out.metas.values()))
        out.model = str(first.get("model", folder.name))
        out.model_id = model_of(first)
    for name, why in out.left_out:
        log.warning("%s: left out %s: %s", folder, name, why)
    return out


def _spec_tables() -> set[str]:
    from rope_lens.analyses.registry import SPECS

    return {s.table for s in SPECS.values()}


def _most_common(metas: Iterable[dict]) -> dict[str, Any] | None:
    models = [model_of(m) for m in metas]
    if not models:
        return None
    counts = Counter(identity.canonical(m) for m in models)
    best = max(counts.values())
    return next(m for m in models if counts[identity.canonical(m)] == best)


def expected_model(name: str, revision: str | None = None) -> dict[str, Any] | None:
    """The model identity a table of ``name`` (registry name, folder or hub id) must carry,
    found without loading, converting or downloading anything (None: the model is not on
    this machine, so no table can be checked against it)."""
    from rope_lens.models import hub, packaged
    from rope_lens.models.registry import REGISTRY

    entry = REGISTRY.get(name)
    if entry is not None:
        revision = revision or entry.revision
        if entry.source == "gguf-package":
            folder = packaged.converted_dir(entry) if packaged.is_converted(entry) else None
        else:
            folder = hub.cached_snapshot(entry.repo_id, revision)
    elif hub.is_local_model_dir(name):
        folder = Path(name)
    else:
        folder = hub.cached_snapshot(name, revision)
    return None if folder is None else identity.model_identity(folder, revision)
