"""Checkpoints of partial reductions, so long analyses resume where they stopped.

A checkpoint is one safetensors file: the accumulator tensors, and in its header the batches
done, the identity it belongs to and the scalar counters. One atomic rename commits sums and
counts together, so a kill can never pair new sums with old counts. No pickle: loading a
checkpoint can never execute code. A checkpoint whose key (the result's identity: model,
weights, options, tokens) differs is ignored.

Every ``maybe_save`` call also keeps a snapshot of the last complete batch, so an interrupt
(Ctrl-C, SIGTERM) can :func:`flush_all` a consistent checkpoint whatever the interval.
Failing to write a checkpoint warns and carries on: it is an optimisation, not the result.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rope_lens import atomic

log = logging.getLogger(__name__)
META_KEY = "rope_lens"
_ACTIVE: weakref.WeakSet[Checkpointer] = weakref.WeakSet()


class Checkpointer:
    """Save reducer state every ``every_s`` seconds of work and restore it on the next run."""

    def __init__(self, path: Path, inputs_sha256: str, every_s: float = 60.0) -> None:
        self.path = Path(path)
        self.key = inputs_sha256
        self.every_s = every_s
        self._last = time.monotonic()
        self._pending: tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None = None
        self._saved = -1
        self._warned = False
        _ACTIVE.add(self)

    def load(self) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        if not self.path.exists():
            return None
        try:
            with safe_open(self.path, framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})[META_KEY])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as err:  # a torn or corrupt checkpoint just means starting over
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, err)
            return None
        if meta.get("key") != self.key:
            log.warning("ignoring checkpoint %s: it belongs to other inputs or options", self.path)
            return None
        log.warning("resuming from %s after %d batches", self.path, meta["batches_done"])
        self._saved = int(meta["batches_done"])
        return int(meta["batches_done"]), tensors, meta.get("extra", {})

    def maybe_save(
        self,
        batches_done: int,
        state: dict[str, torch.Tensor],
        extra: dict[str, Any],
        force: bool = False,
    ) -> None:
        # A copy: reducers update their tensors in place during the next batch.
        self._pending = (
            batches_done,
            {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()},
            json.loads(json.dumps(extra)),
        )
        if force or time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> int | None:
        """Write the last complete batch's state; returns the batches saved (None: nothing)."""
        if self._pending is None:
            return None
        done, tensors, extra = self._pending
        if done == self._saved:
            return done
        meta = {"key": self.key, "batches_done": done, "extra": extra}
        try:
            atomic.write_file(
                self.path,
                lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}),
            )
        except OSError as err:
            if not self._warned:
                log.warning(
                    "could not write the resume checkpoint %s (%s); carrying on without it",
                    self.path,
                    err,
                )
                self._warned = True
            return None
        finally:
            self._last = time.monotonic()
        self._saved = done
        return done

    def clear(self) -> None:
        _ACTIVE.discard(self)
        self._pending = None
        for p in (self.path, self.path.with_suffix(".json")):
            p.unlink(missing_ok=True)


def flush_all() -> list[str]:
    """Flush every live checkpointer and pass cache (on an interrupt); returns one line per
    thing kept ("3 finished batches in PATH")."""
    out = []
    for ckpt in list(_ACTIVE):
        done = ckpt.flush()
        if done:
            out.append(f"{done} finished batches in {ckpt.path}")
    for cache in list(_PASSES):
        if cache.saved:
            out.append(f"{len(cache.saved)} finished passes in {cache.folder}")
    return out


class PassCache:
    """Finished passes of a multi-pass analysis (ablations: a baseline, then one pass per
    band), so a rerun after a kill skips them.

    Each pass is one safetensors file under ``folder`` (written atomically): its tensors, and in
    the header the key (the result's identity), its scalars and its frame (parquet, base64).
    A pass saved under another key is ignored.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key
        self.saved: set[int] = set()
        _PASSES.add(self)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PassCache | None:
        path = options.get("checkpoint")
        if not path:
            return None
        key = options.get("checkpoint_key") or options.get("inputs_sha256") or ""
        return cls(Path(path).with_suffix(".passes"), key)

    def _path(self, index: int) -> Path:
        return self.folder / f"pass-{index:04d}.safetensors"

    def get(self, index: int) -> tuple[dict[str, Any], Any, dict[str, torch.Tensor]] | None:
        """(scalars, frame, tensors) of a finished pass, or None."""
        import base64
        import io

        import pandas as pd

        path = self._path(index)
        if not path.exists():
            return None
        try:
            with safe_open(path, framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})[META_KEY])
                tensors = {k: fh.get_tensor(k) for k in fh.keys() if k != "_"}
            if meta.get("key") != self.key:
                return None
            frame = pd.read_parquet(io.BytesIO(base64.b64decode(meta["frame"])))
        except Exception as err:  # a torn or corrupt pass is simply run again
            log.warning("ignoring unreadable pass %s (%s)", path, err)
            return None
        self.saved.add(index)
        return meta["scalars"], frame, tensors

    def put(
        self,
        index: int,
        scalars: dict[str, Any],
        frame: Any,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> None:
        import base64
        import io

        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        meta = {
            "key": self.key,
            "scalars": scalars,
            "frame": base64.b64encode(buf.getvalue()).decode(),
        }
        data = {k: v.detach().to("cpu").contiguous() for k, v in (tensors or {}).items()}
        data = data or {"_": torch.zeros(1)}
        try:
            atomic.write_file(
                self._path(index),
                lambda tmp: save_file(data, tmp, metadata={META_KEY: json.dumps(meta)}),
            )
        except OSError as err:
            log.warning("could not save pass %d to %s (%s); carrying on", index, self.folder, err)
            return
        self.saved.add(index)

    def clear(self) -> None:
        import shutil

        _PASSES.discard(self)
        shutil.rmtree(self.folder, ignore_errors=True)


_PASSES: weakref.WeakSet[PassCache] = weakref.WeakSet()


@runtime_checkable
class Resumable(Protocol):
    """A reducer whose partial sums can be checkpointed: ``state()`` returns named tensors and
    JSON-able scalars; ``load_state`` puts them back (on the reducer's device)."""

    def state(self) -> tuple[dict[str, torch.Tensor], Any]: ...

    def load_state(self, tensors: dict[str, torch.Tensor], extra: Any, /) -> None: ...


def resumable(
    options: dict[str, Any], reducers: Sequence[Resumable]
) -> tuple[int, Callable[[int], None] | None, Callable[[], None]]:
    """Checkpointing for any analysis whose reducers are :class:`Resumable`.

    Reads ``options["checkpoint"]`` (the file), ``options["checkpoint_key"]`` (the result's
    identity) and ``options["checkpoint_every_s"]`` as the pipeline passes them; without a
    checkpoint path it does nothing. Usage inside an analysis::

        skip, after_batch, finished = resume.resumable(options, [bands, scores])
        run_batches(lm, make_batches(), ..., skip=skip, after_batch=after_batch)
        finished()  # the table is about to be saved: the partial file goes

    Returns:
        batches already reduced (to skip), a per-batch callback for ``run_batches`` (None
        without checkpointing) and a callback that removes the checkpoint.
    """
    path = options.get("checkpoint")
    if not path:
        return 0, None, lambda: None
    key = options.get("checkpoint_key") or options.get("inputs_sha256") or ""
    ckpt = Checkpointer(Path(path), key, every_s=float(options.get("checkpoint_every_s", 60.0)))
    skip = 0
    restored = ckpt.load()
    if restored is not None:
        skip, tensors, extra = restored
        for i, reducer in enumerate(reducers):
            prefix = f"{i}:"
            reducer.load_state(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                extra.get(str(i), {}),
            )

    def after_batch(done: int) -> None:
        tensors: dict[str, torch.Tensor] = {}
        extra: dict[str, Any] = {}
        for i, reducer in enumerate(reducers):
            t, e = reducer.state()
            tensors.update({f"{i}:{k}": v for k, v in t.items()})
            extra[str(i)] = e
        ckpt.maybe_save(done, tensors, extra)

    return skip, after_batch, ckpt.clear
