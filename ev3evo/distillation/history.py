"""The run's ``history.jsonl``: step records with the student's size, and the events between.

Besides :class:`ev3evo.JSONLHistory`'s one line per step, a distillation history holds events:
growth (``{"event": "grow", ...}``, written when it happens) and the final check
(``{"event": "final_check", ...}``, appended after the run). :class:`Annotate` adds the
student's architecture (``arch``, e.g. ``"mlp:8"``), the widths growth changes (``widths``)
and its parameter count to every step record; :class:`Replay` rewrites the
file on resume with the restored records and the growth events at their steps.

Example::

    import os, tempfile
    from ev3evo.distillation.history import append_event
    path = os.path.join(tempfile.mkdtemp(), "history.jsonl")
    append_event(path, {"event": "final_check", "certified": False})
    assert open(path).read() == '{"event": "final_check", "certified": false}\\n'
"""

from __future__ import annotations

import json
import os

from ..callbacks import Callback, JSONLHistory
from ..io.atomic import open_append
from ..io.strict_json import dumps


class Annotate(Callback):
    """Adds the student's shape (``arch``, ``widths``, ``params``) to every step record, read
    from a :class:`~ev3evo.distillation.growing.Growth` (list it before the JSONL writer)."""

    def __init__(self, growth):
        self.growth = growth

    def on_step(self, record, state, engine):
        from .models import widths

        student = self.growth.student
        record["arch"] = student.describe()
        record["widths"] = widths(student.arch) if student.arch is not None else None
        record["params"] = self.growth.size


class Replay(Callback):
    """On resume, rewrites ``history.jsonl`` with the restored records, the growth events and
    a ``{"event": "resume", "step": s}`` after the last restored step ``s`` (the earlier
    resumes of the run kept: the plots break their lines there)."""

    def __init__(self, jsonl: JSONLHistory, events: list):
        self.jsonl, self.events = jsonl, events
        self.resumes = _resumes(jsonl.path)  # read before the run rewrites the file

    def on_resume(self, history):
        # JSONLHistory.on_resume wrote the step records alone; write them again interleaved
        # with the growth events and the resumes, in place of that.
        self.jsonl.file.seek(0)
        self.jsonl.file.truncate()
        last = max((r["step"] for r in history), default=0)
        resumes = [e for e in self.resumes if e["step"] < last]
        at: dict = {}
        for event in [*self.events, *resumes, {"event": "resume", "step": last}]:
            at.setdefault(event["step"], []).append(event)
        for record in history:
            self.jsonl.on_step(record, None, None)
            for event in at.get(record["step"], []):
                self.jsonl.file.write(dumps(event) + "\n")
        self.jsonl.file.flush()


def _resumes(path: str) -> list[dict]:
    """The resume events already in the history file at ``path`` (``[]`` when none)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if '"resume"' in line]
    events = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: not a resume worth keeping
            continue
        if record.get("event") == "resume":
            events.append(record)
    return events


def write_event(jsonl: JSONLHistory, event: dict) -> None:
    """Writes ``event`` into the open history of a running run (nothing when it is closed)."""
    if jsonl.file is not None:
        jsonl.file.write(dumps(event) + "\n")
        jsonl.file.flush()


def append_event(path: str | os.PathLike, event: dict, *,
                 root: str | os.PathLike | None = None) -> None:
    """Appends ``event`` (strict JSON) to the history file at ``path`` after the run, never
    through a link (``root``: the folder trusted as given, see :mod:`ev3evo.io.atomic`)."""
    with open_append(path, root=root) as f:
        f.write(dumps(event) + "\n")
