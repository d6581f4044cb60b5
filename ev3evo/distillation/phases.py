"""The phases of a distillation run that are done: what a resumed run does not do again.

A run keeps ``phases.json`` beside its EV3 checkpoints (``OUT/checkpoints``), strict JSON
written atomically and never through a link (:mod:`ev3evo.io.atomic`). It holds the settings
that shape the run (:func:`~ev3evo.distillation.resume.run_config`) from the start, then one
record per phase as each ends: ``"teacher"`` (its fingerprint), ``"ev3"`` (its wall time,
status and steps) and one per baseline (its metrics, seconds and steps). A resumed run reads it
(:func:`read`): the teacher must be the one it had; a finished EV3 phase is not run again (its
state comes from its last checkpoint) and keeps its wall time, which is the budget every
baseline is due; a finished baseline keeps its record and the others run with that budget.

Example::

    import os, tempfile
    from ev3evo.distillation.phases import Phases, read
    out = tempfile.mkdtemp()
    folder = os.path.join(out, "checkpoints")
    log = Phases.start(folder, out, {"seed": 1})
    log.done("teacher", {"kind": "built-in", "sha256": "ab"})
    log.done("ev3", {"seconds": 2.5, "status": "finished", "steps": 6, "asked": {"steps": 6}})
    assert read(folder).teacher["sha256"] == "ab"
    assert read(folder).record("ev3")["seconds"] == 2.5
    assert read(folder).record("kd_adam") is None
    more = Phases.start(folder, out, {"seed": 1}, read(folder), asked={"steps": 9})
    assert more.record("ev3") is None and more.teacher is not None   # EV3 continues
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..io.atomic import atomic_write, open_nofollow
from ..io.strict_json import dumps

__all__ = ["FILE", "Phases", "read"]

#: the file's name in the checkpoint folder
FILE = "phases.json"
_FORMAT = "ev3evo-distill-phases"


class Phases:
    """The phase record of one run (see the module docstring); :meth:`done` writes it."""

    def __init__(self, directory: str, root: str | None, data: dict):
        self.path, self.root, self.data = os.path.join(directory, FILE), root, data

    @classmethod
    def start(cls, directory: str, root: str | None, config: dict,
              previous: Phases | None = None, asked: dict | None = None) -> Phases:
        """The record of a run starting, written at once. ``previous``: the resumed run's,
        whose finished phases it keeps, the EV3 phase and the baselines only when that phase
        was ``asked`` the same (its ``"asked"``)."""
        data = {"format": _FORMAT, "config": config, "phases": {}}
        if previous is not None:
            data["phases"] = dict(previous.data.get("phases", {}))
            ev3 = data["phases"].get("ev3")
            if ev3 is not None and ev3.get("asked") != json.loads(dumps(asked)):
                data["phases"] = {k: v for k, v in data["phases"].items() if k == "teacher"}
        log = cls(directory, root, data)
        log._write()
        return log

    @property
    def teacher(self) -> dict | None:
        """The teacher's fingerprint, once its phase is done (see
        :mod:`~ev3evo.distillation.teachers`)."""
        return self.record("teacher")

    def record(self, phase: str) -> dict | None:
        """The record of a finished ``phase`` (``"ev3"``, ``"kd_adam"``, ...), else ``None``."""
        return self.data["phases"].get(phase)

    def done(self, phase: str, record: dict[str, Any]) -> dict:
        """Notes that ``phase`` ended with ``record``, written atomically; returns the record
        as it is kept (through strict JSON: what a resumed run reads back)."""
        self.data["phases"][phase] = kept = json.loads(dumps(record))
        self._write()
        return kept

    def _write(self) -> None:
        atomic_write(self.path, (dumps(self.data, indent=1) + "\n").encode("utf-8"),
                     root=self.root)


def read(directory: str, root: str | None = None) -> Phases | None:
    """The record in ``directory`` (``None`` when there is none).

    Raises:
      ValueError: the file is not a phase record (damaged, or someone else's file).
      ev3evo.io.UnsafePathError: it is a symbolic link.
    """
    path = os.path.join(directory, FILE)
    if not os.path.lexists(path):
        return None
    with os.fdopen(open_nofollow(path, os.O_RDONLY, root=root or directory), "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise ValueError(f"{path}: not a readable record of the run's phases") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(
            data.get("phases"), dict):
        raise ValueError(f"{path}: not a record of a distillation run's phases")
    return Phases(directory, root, data)
