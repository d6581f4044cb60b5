"""A distillation run's output folder: claimed for the run, written only inside it.

:func:`claimed` creates the folder (refusing symbolic links below it, see
:mod:`ev3evo.io.atomic`), holds an OS lock on ``OUT/.lock`` for the whole run
(:class:`~ev3evo.io.lock.RunLock`: a second run on the same folder is refused while the first
lives, and allowed once it is gone, however it died) and removes the temporary files that a
killed run left. Every file of the run is then written without following a link:
``summary.json`` as strict JSON (:func:`write_summary`), the plots rendered into a private
temporary folder and moved in atomically (:func:`write_files`), the history, checkpoints and
teacher cache by their writers with ``root=OUT``. A link planted at any of these names, or a
linked sub-folder, is refused (:class:`~ev3evo.io.UnsafePathError`), never written through.

Example::

    import os, tempfile
    from ev3evo.distillation import outputs
    from ev3evo.io.lock import RunLockedError
    out = os.path.join(tempfile.mkdtemp(), "run")
    with outputs.claimed(out):
        try:
            with outputs.claimed(out):   # a second run on the same folder
                pass
        except RunLockedError as e:
            assert "only one run" in str(e)
        outputs.write_summary(out, {"accuracy": float("nan")})
    assert open(os.path.join(out, "summary.json")).read().startswith('{\\n  "accuracy": null')
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from ..io.atomic import atomic_write, make_dirs, remove_temporaries
from ..io.lock import RunLock
from ..io.strict_json import dumps

__all__ = ["LOCK", "claimed", "write_files", "write_summary"]

#: the lock file's name in the output folder
LOCK = ".lock"


@contextlib.contextmanager
def claimed(*folders: str) -> Iterator[list[RunLock]]:
    """Creates each folder and holds its lock until the block ends (the same folder named
    twice is locked once).

    Raises:
      ev3evo.io.lock.RunLockedError: another live run holds one of them.
      OSError: a folder cannot be created (a file in the way, read-only, ...).
    """
    with contextlib.ExitStack() as stack:
        locks, seen = [], set()
        for folder in folders:
            full = make_dirs(folder)
            if os.path.realpath(full) in seen:
                continue
            seen.add(os.path.realpath(full))
            locks.append(stack.enter_context(RunLock(os.path.join(full, LOCK), root=full)))
            remove_temporaries(full)  # a killed run's: nothing else writes here now
        yield locks


def write_summary(out: str, summary: dict, name: str = "summary.json") -> str:
    """Writes ``summary`` to ``OUT/name`` as indented strict JSON (non-finite numbers are
    ``null``), atomically and without following a link."""
    text = dumps(summary, indent=2) + "\n"
    return atomic_write(os.path.join(out, name), text.encode("utf-8"), root=out)


def write_files(out: str, render: Callable[[str], object]) -> list[str]:
    """Runs ``render(folder)`` on a new private folder, then moves every file it wrote into
    ``out`` atomically and without following links (for writers that open paths themselves,
    such as matplotlib's ``savefig``); returns the paths written in ``out``."""
    scratch = tempfile.mkdtemp(prefix="ev3evo-")
    try:
        render(scratch)
        written = []
        for name in sorted(os.listdir(scratch)):
            with open(os.path.join(scratch, name), "rb") as f:
                written.append(atomic_write(os.path.join(out, name), f.read(), root=out))
        return written
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
