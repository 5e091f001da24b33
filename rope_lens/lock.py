"""One writer per output folder: an advisory ``fcntl.flock`` on ``<folder>/.rope-lens.lock``.

    with folder_lock(out_dir, "analyze"):
        ...

A second process that asks for a held lock fails at once with one line naming the holder
(its pid and command), instead of interleaving temporaries, metric rows or checkpoints. The
lock dies with its process (the kernel drops it), so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rope_lens.errors import BusyError

LOCK_NAME = ".rope-lens.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "rope-lens") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created when missing) for the ``with`` body.

    Raises:
        BusyError: another process holds it.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise BusyError(
                f"{folder} is in use by {holder}; wait for it to finish, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({what})".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing drops the flock
