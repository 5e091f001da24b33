"""Atomic, verifiable training checkpoints that are also standard HF model folders.

Layout of a run directory::

    runs/NAME/                     HF folder of the latest checkpoint (config.json,
                                   model.safetensors, tokenizer files): `rope-lens analyze` target
    runs/NAME/checkpoints/step-00000100/   model + tokenizer + trainer_state.pt + manifest.json
    runs/NAME/checkpoints/latest           name of the newest complete step folder

A checkpoint is written into ``checkpoints/.tmp-*``, every file fsynced, then renamed into place
(atomic on POSIX), then ``latest`` is replaced atomically, then the root files are hard-linked
(or copied) over one by one with ``os.replace``. A kill at any moment leaves either the old or
the new checkpoint, never half of one; leftover ``.tmp-*`` folders are removed on resume.

``trainer_state.pt`` holds only tensors, ints, floats, strings, lists and dicts (optimizer,
scheduler, RNG states as tensors, data position as ints), so it loads with
``torch.load(weights_only=True)``: no pickled objects. ``manifest.json`` records size and
sha256 of every file, checked before resuming.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from rope_lens import atomic
from rope_lens.errors import CheckpointError
from rope_lens.identity import sha256_file

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
STATE_FILE = "trainer_state.pt"
NOT_EXPORTED = {STATE_FILE, "trainer_state.json", "manifest.json"}
FORMAT = 1


def rng_state() -> dict[str, Any]:
    """Every RNG the loop may touch, as tensors and ints (weights_only-loadable)."""
    version, keys, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_keys": torch.tensor(keys, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": float("nan") if gauss is None else float(gauss),
    }
    try:
        import numpy as np

        # legacy=True is numpy's default; passing it picks the stub overload that admits the
        # tuple. The global RandomState is MT19937, so the legacy form is always the tuple.
        np_state = np.random.get_state(legacy=True)
        assert isinstance(np_state, tuple)
        name, np_keys, pos, has_gauss, cached = np_state
        state["numpy"] = {
            "keys": torch.from_numpy(np_keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        }
    except ImportError:  # pragma: no cover - numpy ships with torch wheels
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    gauss = state["python_gauss"]
    random.setstate(
        (
            state["python_version"],
            tuple(int(k) for k in state["python_keys"]),
            None if gauss != gauss else gauss,
        )
    )
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached"])
        )
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _sha256(path: Path) -> str:
    return sha256_file(path, cache=False)  # a manifest proves the bytes on disk, now


_fsync = atomic.fsync_path


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    info: dict[str, Any],
    keep: int = 2,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` and the run root at it.

    Args:
        run_dir: the run directory.
        step: optimizer steps completed.
        model: the unwrapped HF model (``save_pretrained``).
        tokenizer: saved beside the weights so the folder loads standalone.
        trainer_state: optimizer/scheduler/sampler/... state (tensors and plain values only).
        info: JSON-able description (train config, metrics) for ``trainer_state.json``.
        keep: how many step folders to keep.
        state_dict: full weights when the model is sharded (FSDP); default ``model``'s own.
    """
    from transformers.utils import logging as hf_logging

    run_dir = Path(run_dir)
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    hf_logging.disable_progress_bar()
    # Re-saving a step after a resume (same content) swaps the old folder out.
    with atomic.folder(final) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        torch.save(
            {"format": FORMAT, "step": step, "rng": rng_state(), **trainer_state}, tmp / STATE_FILE
        )
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **info}, indent=2))
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        manifest = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    atomic.write_text(root / "latest", final.name)
    _export(final, run_dir)
    _prune(root, keep)
    return final


def _export(ckpt: Path, run_dir: Path) -> None:
    """Make the run root an HF folder of ``ckpt``, one atomic replace per file."""
    for src in sorted(ckpt.iterdir()):
        if src.name in NOT_EXPORTED or not src.is_file():
            continue
        tmp = run_dir / f".{src.name}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)  # no copy of multi-GB weights; survives pruning of ckpt
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, run_dir / src.name)
    _fsync(run_dir)


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[: max(0, len(steps) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def verify(ckpt: Path) -> None:
    """Check every file against ``manifest.json``.

    Raises:
        CheckpointError: a file missing, truncated or changed.
    """
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {ckpt} has no readable manifest.json ({err})") from err
    for name, want in manifest.items():
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {ckpt} is missing {name}")
        if path.stat().st_size != want["size"] or _sha256(path) != want["sha256"]:
            raise CheckpointError(
                f"checkpoint {ckpt} is corrupt: {name} does not match manifest.json; delete "
                f"{ckpt.name} to resume from an older checkpoint, or start a new run"
            )


def find_latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run (None for a fresh run).

    Leftover ``.tmp-*`` folders from an interrupted save are deleted. When ``latest`` names a
    step folder that is gone (deleted to go back to an older checkpoint), the newest step
    folder that is left is used.
    """
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return None
    atomic.remove_stale(root, ".tmp-*")  # an interrupted save (the run folder is locked)
    atomic.remove_stale(root, ".trash-*")  # a step swapped out when the kill came
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    pointer = root / "latest"
    if pointer.is_file():
        ckpt = root / pointer.read_text().strip()
        if ckpt.is_dir():
            return ckpt
        if not steps:
            raise CheckpointError(
                f"{pointer} names {ckpt.name}, which does not exist, and no other checkpoint "
                f"is left; delete {root} to start the run over"
            )
        log.warning(
            "%s names %s, which is gone; resuming from %s", pointer, ckpt.name, steps[-1].name
        )
    return steps[-1] if steps else None


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """Verify ``ckpt`` and read its trainer state (``weights_only``: no pickled objects)."""
    verify(ckpt)
    import pickle

    try:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only met a pickled object: not ours
        raise CheckpointError(
            f"{ckpt / STATE_FILE} holds pickled Python objects, which rope-lens never loads "
            "(its own trainer states are tensors and plain values only): it was not written "
            f"by rope-lens; delete {ckpt.name} to resume from an older checkpoint, or start a "
            "new run"
        ) from None
    except Exception as err:  # torch raises many types for a bad file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"cannot read {ckpt / STATE_FILE} ({type(err).__name__}: {first}); delete "
            f"{ckpt.name} to resume from an older checkpoint, or start a new run"
        ) from err
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{ckpt} has trainer-state format {state.get('format')}, expected {FORMAT}"
        )
    state["info"] = json.loads((ckpt / "trainer_state.json").read_text())
    return state


def load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Load ``model.safetensors`` of ``ckpt`` into ``model`` (shapes and names must match).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the model.
    """
    from safetensors.torch import load_file

    try:
        weights = load_file(ckpt / "model.safetensors")
    except Exception as err:
        raise CheckpointError(f"cannot read {ckpt / 'model.safetensors'}: {err}") from err
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {ckpt} does not fit this model: {err}") from err
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt} does not fit this model: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )
