"""Where a distillation run's outputs go, and writing them there.

The rules (:func:`output_rules`, applied when a configuration is checked): ``out`` names a
folder (never an empty string); a resumed run writes into the folder it resumes (``out``, when
given, must be that one); checkpoints and TensorBoard files need an ``out``.
``out`` is the run's folder (made if needed; a resumed run's folder must already exist);
``out=None`` runs in a temporary folder removed when the run returns, so nothing is left on
disk (:meth:`~ev3evo.distillation.DistillResult.save` writes the results afterwards).
:func:`write_outputs` writes ``summary.json`` and the plots beside ``history.jsonl``;
:func:`save` writes all three from a finished run's records.

One run per folder, and nothing written outside it: :func:`output_folder` holds an OS lock on
``OUT/.lock`` for the whole run (:class:`~ev3evo.io.lock.RunLock`: a second run on the same
folder is refused while the first lives, and allowed once it is gone, however it died) and
removes the temporary files a killed run left. Every file of the run is written without
following a link (:mod:`ev3evo.io.atomic`): ``summary.json`` as strict JSON (non-finite numbers
are ``null``), the plots rendered into a private temporary folder and moved in atomically
(:func:`write_files`), the history, checkpoints and teacher cache by their writers with
``root=OUT``. A link planted at one of these names is replaced or refused, and a linked
sub-folder refused (:class:`~ev3evo.io.UnsafePathError`), never written through.

Example::

    import os
    from ev3evo.distillation.outputs import output_folder, write_summary
    from ev3evo.io.lock import RunLockedError
    with output_folder(None, None) as folder:
        assert os.path.isdir(folder)
        try:
            with output_folder(folder, None):   # a second run on the same folder
                pass
        except RunLockedError as e:
            assert "only one run may use a folder at a time" in str(e)
        write_summary(folder, {"accuracy": float("nan")})
        assert '"accuracy": null' in open(os.path.join(folder, "summary.json")).read()
    assert not os.path.exists(folder)   # nothing left behind
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable

from ..io.atomic import atomic_write, make_dirs, remove_temporaries
from ..io.lock import RunLock
from ..io.strict_json import dumps
from . import report

#: the lock file's name in the output folder
LOCK = ".lock"


def resume_folder(resume: str) -> str:
    """The output folder of a run resumed from ``resume`` (an output folder, or the
    ``checkpoints`` folder inside one)."""
    path = os.path.normpath(resume)
    if os.path.basename(path) == "checkpoints" and not os.path.isdir(
            os.path.join(path, "checkpoints")):
        return os.path.dirname(path) or "."
    return resume


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def output_rules(values: dict, label) -> dict:
    """The rules of ``out`` and ``resume``: ``out`` names a folder; a resumed run writes into
    the folder it resumes (``out``, when given, must be that one); checkpoints and TensorBoard
    files need a folder that outlives the call."""
    out, resume = values["out"], values["resume"]
    if out is not None and not out.strip():
        raise ValueError(f"{label('out')} must name a folder, got an empty string"
                         + ("" if label("out").startswith("--") else
                            " (out=None keeps nothing on disk)"))
    if resume is not None and not resume.strip():
        raise ValueError(f"{label('resume')} must name a folder, got an empty string")
    if resume is not None:
        folder = resume_folder(resume)
        if out is not None and not _same_folder(out, folder):
            raise ValueError(
                f"{label('resume')} {resume} writes its outputs into {folder}, but "
                f"{label('out')} names {out}: leave {label('out')} out, or give the same "
                "folder (a resumed run continues in its own folder)")
        values = {**values, "out": folder}
    elif out is None:
        for name in ("checkpoint_every", "tensorboard"):
            if values[name]:
                raise ValueError(f"{label(name)} needs {label('out')}: without one the "
                                 "outputs live in a temporary folder deleted when the run "
                                 "returns")
    return values


@contextlib.contextmanager
def _claimed(folder: str):
    """Holds ``folder`` 's lock (see the module docstring) until the block ends."""
    with RunLock(os.path.join(folder, LOCK), root=folder):
        remove_temporaries(folder)  # a killed run's: nothing else writes here now
        yield folder


@contextlib.contextmanager
def output_folder(out: str | None, resume: str | None):
    """``out``, made if needed (a resumed run's folder must exist: it is never made), locked
    for the run; for ``None``, a temporary folder removed afterwards.

    Raises:
      ev3evo.io.lock.RunLockedError: another live run holds the folder.
      OSError: it cannot be made (a file in the way, a read-only file system, ...).
    """
    if out is not None:
        if resume is None:
            make_dirs(out)
        elif not os.path.isdir(out):  # never made: the resume says there is no such run
            yield out
            return
        with _claimed(out):
            yield out
        return
    with tempfile.TemporaryDirectory(prefix="ev3evo-distill-") as folder, _claimed(folder):
        yield folder


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


def write_outputs(out: str, summary: dict) -> list[dict]:
    """Writes ``summary.json`` and the plots (never through a link); returns the full history
    (steps and events)."""
    write_summary(out, summary)
    history = report.read_history(os.path.join(out, "history.jsonl"))
    write_files(out, lambda folder: (report.plot_history(history, folder, summary["primary"]),
                                     report.plot_comparison(summary, folder, summary["primary"])))
    return history


def save(folder: str | os.PathLike, summary: dict, history: list[dict]) -> str:
    """Writes ``history.jsonl``, ``summary.json`` and the plots into ``folder`` (made if
    needed); returns the folder."""
    folder = os.fspath(folder)
    make_dirs(folder)
    lines = "".join(dumps(r) + "\n" for r in history)
    atomic_write(os.path.join(folder, "history.jsonl"), lines.encode("utf-8"))
    write_outputs(folder, summary)
    return folder
