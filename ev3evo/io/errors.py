"""Storage errors in one line: the path and the cause, in words (for the command line).

An ``OSError`` prints as ``[Errno 28] No space left on device: '/runs/a/x'``, or, for some
causes, misleads: ``os.makedirs`` on a path where a file is in the way says "File exists" and
a path through a file says "Not a directory". :func:`describe_os_error` names the path, the
file in the way when there is one, and the cause.

Example::

    import errno, os, tempfile
    from ev3evo.io.errors import describe_os_error

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/a/ckpt.msgpack")
    assert describe_os_error(full) == "/runs/a/ckpt.msgpack: no space left on device (disk full)"
    blocker = os.path.join(tempfile.mkdtemp(), "results")
    open(blocker, "w").close()                      # a file where a folder is wanted
    try:
        os.makedirs(os.path.join(blocker, "run1"))
    except OSError as e:
        assert describe_os_error(e).endswith(f"{blocker} is a file, not a folder")
"""

from __future__ import annotations

import errno
import os

_CAUSES = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error (a failing disk or an unreachable network file system)",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
}


def file_in_the_way(path: str | os.PathLike) -> str | None:
    """The first of ``path`` and the folders above it that exists and is not a folder."""
    current = os.path.abspath(os.fspath(path))
    while True:
        if os.path.lexists(current) and not os.path.isdir(current):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def describe_os_error(e: OSError) -> str:
    """``"PATH: cause"`` for an ``OSError`` (the cause alone when it names no path)."""
    path = None if e.filename is None else os.fspath(e.filename)
    if path is not None and e.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_in_the_way(path)
        if blocker is not None:
            same = blocker == os.path.abspath(path)
            return f"{path}: " + ("a file is in the way (it exists and is not a folder)"
                                  if same else f"{blocker} is a file, not a folder")
    cause = _CAUSES.get(e.errno) or e.strerror or str(e) or type(e).__name__
    if path is None:
        return cause
    if e.filename2 is not None:
        path = f"{path} -> {os.fspath(e.filename2)}"
    return f"{path}: {cause}"
