"""Checkpoints of partial reductions, so long analyses resume where they stopped.

A checkpoint is a safetensors file of accumulator tensors plus a JSON file (batches done, the
inputs hash it belongs to, scalar counters), both written atomically. No pickle: loading a
checkpoint can never execute code. A checkpoint whose inputs hash differs is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


class Checkpointer:
    """Save reducer state every ``every_s`` seconds of work and restore it on the next run."""

    def __init__(self, path: Path, inputs_sha256: str, every_s: float = 60.0) -> None:
        self.path = Path(path)
        self.key = inputs_sha256
        self.every_s = every_s
        self._last = time.monotonic()

    def load(self) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        meta_path = self.path.with_suffix(".json")
        if not (meta_path.exists() and self.path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(self.path)
        except Exception as err:  # a torn or corrupt checkpoint just means starting over
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, err)
            return None
        if meta.get("inputs_sha256") != self.key:
            log.warning("ignoring checkpoint %s: it belongs to other inputs", self.path)
            return None
        log.warning("resuming from %s after %d batches", self.path, meta["batches_done"])
        return int(meta["batches_done"]), tensors, meta.get("extra", {})

    def maybe_save(
        self,
        batches_done: int,
        state: dict[str, torch.Tensor],
        extra: dict[str, Any],
        force: bool = False,
    ) -> None:
        if not force and time.monotonic() - self._last < self.every_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cpu = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(cpu, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        meta = {"inputs_sha256": self.key, "batches_done": batches_done, "extra": extra}
        tmp_meta = self.path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, self.path.with_suffix(".json"))
        self._last = time.monotonic()

    def clear(self) -> None:
        for p in (self.path, self.path.with_suffix(".json")):
            if p.exists():
                p.unlink()
