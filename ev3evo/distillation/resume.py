"""Checkpoints of a distillation run: where they go, and what a resumed run continues from.

``checkpoint_every=N`` writes ``OUT/checkpoints`` every N steps (and at the end);
``resume=DIR`` (an output folder, or its ``checkpoints`` folder) continues the run saved there
and keeps checkpointing into it (every N steps as before, unless given again). A resumed run
must have the settings of the saved one that shape it (:func:`run_config`: the options marked
``same_on_resume``); it continues with the architecture the run had reached and its growth
events (see :func:`ev3evo.io.checkpoint.read_checkpoint` for what a checkpoint holds).

Example::

    from ev3evo.distillation.options import DistillConfig
    from ev3evo.distillation.resume import checkpointing, run_config
    assert checkpointing(DistillConfig(), "unused").directory is None
    assert run_config(DistillConfig(seed=3))["seed"] == 3
    assert "steps" not in run_config(DistillConfig())   # a resumed run may take more steps
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from .options import OPTIONS
from .report import jsonable
from .student import Student


class Checkpointing(NamedTuple):
    """How the EV3 run is checkpointed (the checkpoint arguments of :func:`ev3evo.run`).

    Attributes:
      directory: the checkpoint folder, ``None`` for no checkpoints.
      every: steps between checkpoints.
      resume: continue the run saved in ``directory``.
      saved: the newest checkpoint (:class:`ev3evo.io.Checkpoint`, metadata only) when resuming.
    """

    directory: str | None
    every: int
    resume: bool
    saved: Any


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
    if saved is None:
        raise ValueError(f"--resume {config.resume}: no checkpoint in {directory}")
    before, now = saved.metadata.get("config") or {}, run_config(config)
    changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if changed:  # refuse before any work (the fingerprint would refuse later anyway)
        details = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now"
                            for k in changed[:4])
        raise checkpoint.CheckpointError(
            f"--resume {config.resume}: the checkpointed run had other settings ({details}); "
            "resume with the same settings"
        )
    every = config.checkpoint_every or int(saved.metadata.get("every", 10))
    return Checkpointing(directory, every, True, saved)


def checkpointing(config, out: str) -> Checkpointing:
    """The checkpoint settings of a run writing to ``out`` (see the module docstring).

    Raises:
      ValueError: ``resume`` names no folder or one without a checkpoint; ``out`` already
        holds checkpoints of another run.
      ev3evo.io.CheckpointError: the saved run had other settings.
    """
    if config.resume:
        return _resumed(config)
    if not config.checkpoint_every:
        return Checkpointing(None, 1, False, None)
    from ..io import checkpoint

    directory = os.path.join(out, "checkpoints")
    if checkpoint.list_checkpoints(directory):
        raise ValueError(
            f"{directory} already holds checkpoints of a run: continue it with --resume {out}, "
            "or choose another --out"
        )
    return Checkpointing(directory, config.checkpoint_every, False, None)


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
