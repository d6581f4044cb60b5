"""Safe file writes inside a folder: atomic, never through a symbolic link, nothing left behind.

Every write names a *root*: a folder trusted as given (the output folder the user named; by
default the file's own folder). Below it nothing is followed:

* each folder between ``root`` and the file is opened relative to its parent's descriptor with
  ``O_NOFOLLOW | O_DIRECTORY`` (created with ``mkdir`` when missing), so a sub-folder that is a
  symbolic link is refused with :class:`UnsafePathError`, even if it is swapped in during the
  write;
* a new file is first a temporary ``.<name>.tmp-<random>`` created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted file or link at that name is never opened; another
  random name is tried), written, ``fsync`` ed, then renamed onto the final name with
  ``os.replace`` (a rename replaces a link at the final name, never the file it points to) and
  the folder is ``fsync`` ed: a reader sees the old file or the new one, never a torn one;
* on any failure the temporary file is removed.

:func:`open_append` opens a log for appending with ``O_NOFOLLOW`` (a link at its name is
refused). Where the platform has no ``dir_fd`` support (Windows), folders are checked with
``lstat`` instead, which is not proof against a link swapped in during the write.

Example::

    import os, tempfile
    from ev3evo.io.atomic import UnsafePathError, atomic_write, atomic_writer

    out = tempfile.mkdtemp()
    atomic_write(os.path.join(out, "logs", "a.txt"), b"hello", root=out)
    with atomic_writer(os.path.join(out, "b.txt"), root=out, text=True) as f:
        f.write("world")
    os.symlink(tempfile.mkdtemp(), os.path.join(out, "elsewhere"))
    try:
        atomic_write(os.path.join(out, "elsewhere", "c.txt"), b"!", root=out)
    except UnsafePathError as e:
        print(e)
    assert open(os.path.join(out, "logs", "a.txt")).read() == "hello"
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator

_DIR_FD = os.name == "posix" and {os.open, os.mkdir, os.unlink} <= os.supports_dir_fd
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO planted at a log's name fails (ENXIO) instead of hanging.
_FILE_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_ATTEMPTS = 16  # temporary names tried before giving up (each is 64 random bits)
_LINK = "is a symbolic link; refusing to write through it"
_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{16}$")  # the names _create_temporary makes


class UnsafePathError(OSError):
    """A path below the write's root is a symbolic link (or not a plain file or folder)."""


def _token() -> str:
    return secrets.token_hex(8)


def fsync_dir(directory: str | os.PathLike | int) -> None:
    """Flushes a folder's entries (a rename) to disk; ``directory`` is a path or an open fd."""
    if os.name != "posix":
        return
    if isinstance(directory, int):
        os.fsync(directory)
        return
    fd = os.open(os.fspath(directory), _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """OS errors raised for a name relative to a folder descriptor carry the full path."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and not os.path.isabs(os.fspath(e.filename)):
            e.filename = path
        raise


class _Folder:
    """An open folder; names inside it are opened, renamed and removed without following links."""

    def __init__(self, path: str, fd: int | None):
        self.path, self.fd = path, fd

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _at(self) -> dict:
        return {} if self.fd is None else {"dir_fd": self.fd}

    def _name(self, name: str) -> str:
        return self.join(name) if self.fd is None else name

    def _refuse_link(self, name: str) -> None:
        if self.fd is None and os.path.islink(self.join(name)):
            raise UnsafePathError(errno.ELOOP, _LINK, self.join(name))

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        self._refuse_link(name)
        try:
            with _naming(self.join(name)):
                return os.open(self._name(name), flags | _NOFOLLOW | _FILE_FLAGS, mode,
                               **self._at())
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePathError(errno.ELOOP, _LINK, self.join(name)) from None
            raise

    def replace(self, src: str, dst: str) -> None:
        with _naming(self.join(dst)):
            if self.fd is None:
                os.replace(self.join(src), self.join(dst))
            else:
                os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        with _naming(self.join(name)):
            os.unlink(self._name(name), **self._at())

    def sub(self, name: str, create: bool) -> _Folder:
        """The sub-folder ``name``, refused if it is a link; created if missing and ``create``."""
        try:
            return self._open_sub(name)
        except FileNotFoundError:
            if not create:
                raise
        with _naming(self.join(name)), contextlib.suppress(FileExistsError):
            os.mkdir(self._name(name), 0o777, **self._at())  # FileExistsError: made meanwhile
        return self._open_sub(name)

    def _open_sub(self, name: str) -> _Folder:
        path = self.join(name)
        self._refuse_link(name)
        try:
            with _naming(path):
                if self.fd is None:
                    if not stat.S_ISDIR(os.stat(path).st_mode):
                        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
                    return _Folder(path, None)
                return _Folder(path, os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=self.fd))
        except OSError as e:
            # O_NOFOLLOW | O_DIRECTORY on a link gives ELOOP or ENOTDIR, depending on the system
            if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and os.path.islink(path)):
                raise UnsafePathError(errno.ELOOP, _LINK, path) from None
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _parts(path: str, root: str | os.PathLike | None) -> tuple[str, list[str], str]:
    """``(root, folders below it, file name)`` for ``path``; refuses a path outside ``root``."""
    full = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(full)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "names a folder, not a file", os.fspath(path))
    base = folder if root is None else os.path.abspath(os.fspath(root))
    rel = os.path.relpath(folder, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise ValueError(f"{os.fspath(path)} is outside the folder {base} it must be written in")
    return base, [p for p in rel.split(os.sep) if p not in ("", os.curdir)], name


@contextlib.contextmanager
def _folder(folder: str, below: list[str], create: bool) -> Iterator[_Folder]:
    """The folder ``folder/below...``, opened component by component without following links."""
    if create:
        os.makedirs(folder, exist_ok=True)  # the root itself is trusted as given
    current = _Folder(folder, os.open(folder, _DIR_FLAGS) if _DIR_FD else None)
    try:
        for part in below:
            nxt = current.sub(part, create)
            current.close()
            current = nxt
        yield current
    finally:
        current.close()


def make_dirs(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """Creates folder ``path`` (and the folders above it, up to ``root``), refusing links."""
    full = os.path.abspath(os.fspath(path))
    base, below, _ = _parts(os.path.join(full, "x"), full if root is None else root)
    with _folder(base, below, create=True):
        pass
    return full


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike, *, root: str | os.PathLike | None = None, text: bool = False,
    encoding: str = "utf-8",
):
    """A file object whose content replaces ``path`` atomically when the block ends cleanly.

    Args:
      path: the final file name.
      root: the folder trusted as given; folders between it and ``path`` are created when
        missing and must not be links (default: ``path`` 's own folder).
      text: yield a text file (``encoding``) instead of a binary one.

    If the block raises, the temporary file is removed and ``path`` is untouched. An
    ``OSError`` about the temporary file, or about no file (a full disk on ``write``,
    ``flush`` or ``fsync``), names ``path``: the file the caller knows.
    """
    base, below, name = _parts(path, root)
    with _naming_final(os.path.join(base, *below, name)), \
            _folder(base, below, create=True) as folder:
        fd, tmp = _create_temporary(folder, name)
        try:
            with os.fdopen(fd, "w" if text else "wb", **({"encoding": encoding} if text else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            folder.replace(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                folder.unlink(tmp)
            raise
        fsync_dir(folder.fd if folder.fd is not None else folder.path)


# Errors that a write reports without a file name (the file is the one being written).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


@contextlib.contextmanager
def _naming_final(final: str) -> Iterator[None]:
    """OS errors about ``final`` 's temporary file, or a write's, carry ``final`` 's name."""
    try:
        yield
    except OSError as e:
        temporary = f".{os.path.basename(final)}.tmp-"
        named = e.filename is not None and os.path.basename(os.fspath(e.filename)).startswith(
            temporary)
        if named or (e.filename is None and e.errno in _WRITE_ERRNOS):
            e.filename = final
        raise


def _create_temporary(folder: _Folder, name: str) -> tuple[int, str]:
    for _ in range(_ATTEMPTS):
        tmp = f".{name}.tmp-{_token()}"
        try:
            return folder.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except (FileExistsError, UnsafePathError):  # planted or taken: another random name
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", folder.join(f".{name}.tmp-*"))


def atomic_write(path: str | os.PathLike, data: bytes, *,
                 root: str | os.PathLike | None = None) -> str:
    """Writes ``data`` to ``path`` atomically and without following links; returns ``path``.

    See :func:`atomic_writer` for ``root``.
    """
    with atomic_writer(path, root=root) as f:
        f.write(data)
    return os.fspath(path)


def open_append(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                truncate: bool = False, encoding: str = "utf-8"):
    """A text file opened for appending (emptied first with ``truncate``), never through a link.

    Folders are handled as in :func:`atomic_writer`; the file itself is opened with
    ``O_NOFOLLOW`` and must be a regular file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
    return os.fdopen(open_nofollow(path, flags, root=root), "a", encoding=encoding)


def open_nofollow(path: str | os.PathLike, flags: int, *,
                  root: str | os.PathLike | None = None) -> int:
    """An ``os.open`` descriptor of the regular file ``path``, following no link below ``root``.

    Missing folders below ``root`` are created as in :func:`atomic_writer`.
    """
    base, below, name = _parts(path, root)
    with _folder(base, below, create=True) as folder:
        fd = folder.open(name, flags, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(errno.EINVAL, "is not a regular file", os.fspath(path))
    return fd


def remove(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> bool:
    """Removes the file ``path`` (a link is removed, not followed); false when it was missing."""
    base, below, name = _parts(path, root)
    try:
        with _folder(base, below, create=False) as folder:
            folder.unlink(name)
    except FileNotFoundError:
        return False
    return True


def remove_temporaries(folder: str | os.PathLike, *, root: str | os.PathLike | None = None) -> int:
    """Removes the temporary files (``.NAME.tmp-<random>``) that interrupted writes left in
    ``folder``; returns how many. Call it only where nothing else is writing (e.g. under the
    run's :class:`~ev3evo.io.lock.RunLock`): another writer's temporary file has such a name
    too. Links are removed, not followed; a missing folder has none."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder) or os.path.islink(folder):
        return 0
    names = [n for n in os.listdir(folder) if _TEMPORARY.match(n)]
    return sum(remove(os.path.join(folder, n), root=folder if root is None else root)
               for n in names)
