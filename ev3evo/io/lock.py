"""One run per folder: an OS file lock held for the life of a run, stale locks detected.

:class:`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file (opened without
following links, see :mod:`ev3evo.io.atomic`) and writes who holds it (process id, host, start
time) into it. The operating system releases a ``flock`` when its holder dies, however it dies
(``SIGKILL`` included), so a lock can never outlive its process: a second run is refused while
the first is alive and allowed as soon as it is gone. A lock file still holding a record when
it is taken was left by a holder that did not release it (it was killed): :attr:`RunLock.stale`
is that record. The file is emptied on release, never removed (removing it would let two runs
lock two different files of the same name). POSIX only (``fcntl``).

Example::

    import os, tempfile
    from ev3evo.io.lock import RunLock, RunLockedError

    out = tempfile.mkdtemp()
    with RunLock(os.path.join(out, ".lock")) as lock:
        try:
            RunLock(os.path.join(out, ".lock")).acquire()  # a second holder is refused
        except RunLockedError as e:
            print(e)
        assert lock.stale is None
"""

from __future__ import annotations

import json
import os
import socket
import time

from .atomic import open_nofollow


class RunLockedError(RuntimeError):
    """Another live process holds the lock (``holder`` is its record, or ``None``)."""

    def __init__(self, message: str, holder: dict | None):
        super().__init__(message)
        self.holder = holder


def _read_record(fd: int) -> dict | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        record = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return {"unreadable": raw[:200].decode("utf-8", "replace")}
    return record if isinstance(record, dict) else {"unreadable": str(record)[:200]}


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _describe(path: str, record: dict | None) -> str:
    if not record or "pid" not in record:
        return f"{path} is locked by another process"
    pid, host = record.get("pid"), record.get("host", "?")
    since = record.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    text = f"{path} is locked by process {pid} on {host}{when}"
    if host == socket.gethostname() and not _alive(pid):
        text += " (that process is gone: a process it started still holds the lock)"
    return text


class RunLock:
    """An exclusive lock on ``path`` for the life of a run (a context manager).

    Args:
      path: the lock file (created if missing; e.g. ``OUT/.lock``).
      root: the folder trusted as given (see :mod:`ev3evo.io.atomic`); default: the lock
        file's folder.

    Attributes:
      stale: the record a previous holder left without releasing (it was killed), or ``None``.
    """

    def __init__(self, path: str | os.PathLike, *, root: str | os.PathLike | None = None):
        self.path, self.root = os.fspath(path), root
        self.stale: dict | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Takes the lock, or raises :class:`RunLockedError` naming the live holder."""
        import fcntl

        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, root=self.root)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd)
                raise RunLockedError(
                    f"{_describe(self.path, holder)}; only one run may use a folder at a time",
                    holder,
                ) from None
            self.stale = _read_record(fd)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empties the record and releases the lock (closing the file releases it too)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
