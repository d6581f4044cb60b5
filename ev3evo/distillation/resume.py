"""Checkpoints of a distillation run: where they go, and what a resumed run continues from.

Every run checkpoints its EV3 state into ``OUT/checkpoints``: every ``checkpoint_seconds`` of
wall time, every ``checkpoint_every`` steps when that is set, and at the end of the phase; the
folder also holds the record of the phases done (:mod:`~ev3evo.distillation.phases`).
``resume=DIR`` (an output folder, or its ``checkpoints`` folder) continues the run saved there
from its newest intact checkpoint, and keeps checkpointing into it; a run killed before its
first checkpoint starts its EV3 phase afresh there. A resumed run must have the settings of the
saved one that shape it (:func:`run_config`: the options marked ``same_on_resume``) and its
teacher; it continues with the architecture the run had reached and its growth events (see
:func:`ev3evo.io.checkpoint.read_checkpoint` for what a checkpoint holds).

Example::

    import os
    from ev3evo.distillation.options import DistillConfig
    from ev3evo.distillation.resume import checkpointing, run_config
    assert checkpointing(DistillConfig(), "out").directory == os.path.join("out", "checkpoints")
    assert run_config(DistillConfig(seed=3))["seed"] == 3
    assert "steps" not in run_config(DistillConfig())   # a resumed run may take more steps
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from . import phases as P
from .options import OPTIONS
from .report import jsonable
from .student import Student


class Checkpointing(NamedTuple):
    """How the EV3 run is checkpointed (the checkpoint arguments of :func:`ev3evo.run`).

    Attributes:
      directory: the checkpoint folder.
      every: steps between checkpoints (``None``: only the time trigger).
      resume: continue the run saved in ``directory``.
      saved: the newest checkpoint (:class:`ev3evo.io.Checkpoint`, metadata only) when resuming
        from one.
      seconds: wall time between checkpoints.
      phases: the resumed run's record of its phases (:class:`~ev3evo.distillation.phases.
        Phases`), ``None`` for a new run.
      log: this run's record of its phases, once started (:func:`started`).
      fingerprint: this run's teacher fingerprint, once known (part of each checkpoint).
    """

    directory: str
    every: int | None
    resume: bool
    saved: Any
    seconds: float | None = None
    phases: Any = None
    log: Any = None  # this run's Phases (see ev3evo.distillation.phases), once started
    fingerprint: dict | None = None  # this run's teacher, once known

    @property
    def teacher(self) -> dict | None:
        """The teacher fingerprint the resumed run had (``None``: a new run)."""
        if self.phases is not None and self.phases.teacher is not None:
            return self.phases.teacher
        return None if self.saved is None else self.saved.metadata.get("teacher")

    @property
    def offset(self) -> float:
        """The EV3 wall time already spent before this run (0 for a new run)."""
        history = [] if self.saved is None else self.saved.history
        return float(history[-1].get("seconds") or 0.0) if history else 0.0


def run_config(config) -> dict:
    """The settings a resumed run must share with the saved one (part of its fingerprint)."""
    return jsonable({o.name: getattr(config, o.name) for o in OPTIONS if o.same_on_resume})


def _resumed(config) -> Checkpointing:
    from ..io import checkpoint

    directory = os.path.join(config.resume, "checkpoints")
    if not os.path.isdir(directory):
        directory = config.resume
    if not os.path.isdir(directory):
        raise ValueError(f"--resume {config.resume}: no such directory")
    saved = checkpoint.read_checkpoint(directory)
    phases = P.read(directory)
    if saved is None and phases is None:
        raise ValueError(f"--resume {config.resume}: no checkpoint in {directory}")
    before = (saved.metadata.get("config") if saved is not None else phases.data.get("config"))
    before, now = before or {}, run_config(config)
    changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if changed:  # refuse before any work (the fingerprint would refuse later anyway)
        details = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now"
                            for k in changed[:4])
        raise checkpoint.CheckpointError(
            f"--resume {config.resume}: the checkpointed run had other settings ({details}); "
            "resume with the same settings"
        )
    every = config.checkpoint_every
    if every is None and saved is not None:
        every = saved.metadata.get("every")
    return Checkpointing(directory, every, True, saved, config.checkpoint_seconds, phases)


def checkpointing(config, out: str) -> Checkpointing:
    """The checkpoint settings of a run writing to ``out`` (see the module docstring).

    Raises:
      ValueError: ``resume`` names no folder or one without a checkpoint or a phase record;
        ``out`` already holds checkpoints of another run.
      ev3evo.io.CheckpointError: the saved run had other settings.
    """
    if config.resume:
        return _resumed(config)
    from ..io import checkpoint

    directory = os.path.join(out, "checkpoints")
    if checkpoint.list_checkpoints(directory):
        raise ValueError(
            f"{directory} already holds checkpoints of a run: continue it with --resume {out}, "
            "or choose another --out"
        )
    return Checkpointing(directory, config.checkpoint_every, False, None,
                         config.checkpoint_seconds)


def asked(config) -> dict:
    """What the EV3 phase was asked to do (a resumed run asking for more continues it)."""
    return {"steps": config.steps, "time_budget": config.time_budget}


def started(ckpt: Checkpointing, config) -> Checkpointing:
    """``ckpt`` with this run's phase record, written at once (see
    :mod:`~ev3evo.distillation.phases`): the settings, and the phases a resumed run had done
    that still hold: its EV3 phase and baselines only when it asks for what they were asked
    (more steps or time continue the EV3 phase, and then the baselines run again)."""
    log = P.Phases.start(ckpt.directory, os.path.dirname(os.path.abspath(ckpt.directory)),
                         run_config(config), ckpt.phases, asked(config))
    return ckpt._replace(log=log)


def remaining(config, ckpt: Checkpointing, done: dict | None):
    """``(steps, time budget)`` of this life of the EV3 phase: none left when it had ended;
    after a kill or a signal cut it, what the previous lives left of the time budget; a phase
    that had ended and is asked for more (steps or time) gets the whole budget again."""
    if done is not None:
        return done["steps"], None
    cut = ckpt.phases is None or ckpt.phases.record("ev3") is None
    if config.time_budget is None or not cut:
        return config.steps, config.time_budget
    return config.steps, max(config.time_budget - ckpt.offset, 1e-9)


def resumed_student(saved, student: Student, model) -> tuple[Student, Any, list]:
    """The student a run starts with: ``(student, model, growth events)``; after a resume,
    the architecture the saved run had reached (its weights come from the checkpoint, so
    ``model`` is a zero template then)."""
    if saved is None:
        return student, model, []
    events = list(saved.metadata.get("events", []))
    arch = saved.metadata.get("arch", student.arch)
    if arch is not None and arch != student.arch:
        grown = Student.for_arch(arch, student.num_classes)
        return grown, grown.zeros(), events
    return student, model, events
