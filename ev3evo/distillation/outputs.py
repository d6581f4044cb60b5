"""Where a distillation run's outputs go, and writing them there.

The rules (:func:`output_rules`, applied when a configuration is checked): ``out`` names a
folder (never an empty string); a resumed run writes into the folder it resumes (``out``, when
given, must be that one); checkpoints and TensorBoard files need an ``out``.
``out`` is the run's folder (made if needed; a resumed run's folder must already exist);
``out=None`` runs in a temporary folder removed when the run returns, so nothing is left on
disk (:meth:`~ev3evo.distillation.DistillResult.save` writes the results afterwards).
:func:`write_outputs` writes ``summary.json`` and the plots beside ``history.jsonl``;
:func:`save` writes all three from a finished run's records.

Example::

    import os
    from ev3evo.distillation.outputs import output_folder
    with output_folder(None, None) as folder:
        assert os.path.isdir(folder)
    assert not os.path.exists(folder)   # nothing left behind
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from . import report


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
def output_folder(out: str | None, resume: str | None):
    """``out``, made if needed (a resumed run's folder must exist: it is never made); for
    ``None``, a temporary folder removed afterwards."""
    if out is not None:
        if resume is None:
            os.makedirs(out, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="ev3evo-distill-") as folder:
        yield folder


def write_outputs(out: str, summary: dict) -> list[dict]:
    """Writes ``summary.json`` and the plots; returns the full history (steps and events)."""
    report.write_summary(os.path.join(out, "summary.json"), summary)
    history = report.read_history(os.path.join(out, "history.jsonl"))
    report.plot_history(history, out, summary["primary"])
    report.plot_comparison(summary, out, summary["primary"])
    return history


def save(folder: str | os.PathLike, summary: dict, history: list[dict]) -> str:
    """Writes ``history.jsonl``, ``summary.json`` and the plots into ``folder`` (made if
    needed); returns the folder."""
    from ..io.atomic import atomic_write, make_dirs
    from ..io.strict_json import dumps

    folder = os.fspath(folder)
    make_dirs(folder)
    lines = "".join(dumps(r) + "\n" for r in history)
    atomic_write(os.path.join(folder, "history.jsonl"), lines.encode("utf-8"))
    write_outputs(folder, summary)
    return folder
