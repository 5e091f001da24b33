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


def new_folders(folder: str | Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what a run
    into ``folder`` creates."""
    out = []
    for p in (Path(folder), *Path(folder).parents):
        if p.exists():
            break
        out.append(p)
    return out


@contextlib.contextmanager
def folder_lock(
    folder: str | Path, what: str = "rope-lens", created: list[Path] | None = None
) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created when missing) for the ``with`` body.

    A run that fails leaves nothing behind: when the body raises and the folder holds only
    the lock file, the lock file goes, and so do the folders this run created (``created``:
    the caller's :func:`new_folders`, taken before it made any; default: the ones made here).

    Raises:
        BusyError: another process holds it.
    """
    import fcntl

    folder = Path(folder)
    created = new_folders(folder) if created is None else created
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
        try:
            yield folder
        except BaseException:
            if created:
                _remove_if_unused(folder, created)  # still holding the lock: no one is inside
            raise
    finally:
        os.close(fd)  # closing drops the flock


def _remove_if_unused(folder: Path, created: list[Path]) -> None:
    try:
        if [p.name for p in folder.iterdir()] != [LOCK_NAME]:
            return
        (folder / LOCK_NAME).unlink()
    except OSError:
        return
    for p in created:  # deepest first; a folder that holds anything else stays
        try:
            p.rmdir()
        except OSError:
            break
