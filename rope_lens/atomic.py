"""Atomic writes, the one home for them: readers see the old file (or folder) or the new one,
never half of either, and a failed or killed write leaves no stray temporary behind.

    from rope_lens.atomic import write_file, write_text, folder

    write_file(path, lambda tmp: df.to_parquet(tmp))   # any writer that takes a path
    write_text(path, "hello\\n")
    with folder(target) as tmp:                          # fill tmp; renamed to target on exit
        (tmp / "a.json").write_text("{}")

Files are written to a unique temporary name in the target's folder (so the rename never
crosses filesystems), fsynced, given ordinary permissions (``mkstemp`` makes 0600; results are
meant to be shared) and renamed over the target with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder (a folder's fsync makes a rename inside it durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a folder on a filesystem that does not open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (tmpfs on old kernels, FUSE) refuse fsync on folders
        pass
    finally:
        os.close(fd)


def write_file(
    path: str | Path, write: Callable[[Path], object], *, mode: int | None = None
) -> Path:
    """Atomically create or replace ``path`` with what ``write(tmp_path)`` writes.

    Args:
        path: the target file; its folder is created when missing.
        write: called once with a temporary path in the same folder.
        mode: permission bits (default 0o666 minus the umask).

    Raises:
        OSError: from the write or the rename; ``path`` is then unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return path


def write_text(path: str | Path, text: str, *, mode: int | None = None) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


def write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    """Atomically write ``data`` to ``path``."""
    return write_file(path, lambda tmp: tmp.write_bytes(data), mode=mode)


@contextlib.contextmanager
def folder(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``target`` on success.

    Yields the temporary folder (beside ``target``). On a clean exit every file in it is
    fsynced and it is renamed into place; an existing ``target`` is swapped out first
    (``replace=True``) or kept (``replace=False``: then the new one is discarded, e.g. when
    another process built the same cache first). On an exception the temporary folder is
    removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                fsync_path(p)
        fsync_path(tmp)
        if target.exists():
            if not replace:
                return
            trash = target.with_name(f".trash-{target.name}-{os.getpid()}")
            os.rename(target, trash)
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target.is_dir() and not replace):
                    raise
        fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(parent: str | Path, pattern: str = ".tmp-*") -> int:
    """Delete leftover temporaries (files or folders matching ``pattern``, e.g. ``.*.tmp``
    from :func:`write_file`, ``.tmp-*`` / ``.trash-*`` from :func:`folder`) that a killed
    write left in ``parent``; returns how many. Only call it while holding the folder's lock
    (``rope_lens.lock``), or a live writer's temporary could go."""
    parent = Path(parent)
    n = 0
    if not parent.is_dir():
        return 0
    for p in parent.glob(pattern):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n
