"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import uuid


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flushes a directory entry (a rename) to disk; a no-op where directories can't be opened."""
    if os.name != "posix":
        return
    fd = os.open(os.fspath(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> str:
    """Writes ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync the folder.

    The temporary file is ``.<name>.tmp-<random>`` in the same folder (a rename is atomic only
    within one file system); it is removed if the write fails.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)
    return path
