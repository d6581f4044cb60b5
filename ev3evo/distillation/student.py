"""The student of a distillation run, and its growth while the run stalls.

A :class:`Student` is an architecture (the dict of :mod:`ev3evo.distillation.models`) with its
pure ``apply``; the engine works on its plain parameter dicts. When the run stalls,
:class:`Growth` (the ``on_stall`` hook of :func:`ev3evo.run`) widens or deepens both the
current and the stable model function-preservingly (:mod:`ev3evo.distillation.growth`),
checks that the grown stable model computes the same validation metrics (a growth that
changes them is refused), and hands the run a new engine built for the new shapes, with fresh
sources and the allocation record kept.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.distillation.student import Student, grow_student
    student, params = Student.create(4, (3,), 2, seed=0)
    x = jax.random.normal(jax.random.key(0), (20, 4))
    val = {"x": x, "y": jnp.zeros(20, jnp.int32), "teacher": student.apply(params, x)}
    grown = grow_student(jax.random.key(1), student, params, params, "widen", 2, val,
                         ["accuracy", "agreement"])
    assert grown.event["accepted"] and grown.student.arch["hidden"] == [5]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..types import Params
from . import growth, models
from .scores import evaluate


class Student:
    """A student architecture and its pure ``apply`` (a new one when the student grows).

    Attributes:
      arch: the architecture dict (:func:`ev3evo.distillation.models.build`).
      functional: its :class:`~ev3evo.distillation.models.Functional` (no weights).
      apply: ``(params, x) -> logits``.
    """

    def __init__(self, arch: dict):
        self.arch = dict(arch)
        self.functional = models.template(self.arch)
        self.apply = self.functional.apply

    @classmethod
    def create(cls, in_features: int, hidden, num_classes: int, seed: int):
        """A fresh MLP student: ``(Student, params)`` initialized from ``seed``."""
        from flax import nnx

        module = models.MLP(in_features, list(hidden), num_classes, rngs=nnx.Rngs(seed))
        f = models.functional(module)
        return cls(f.arch), f.params

    @property
    def num_classes(self) -> int:
        return int(self.arch["num_classes"])

    def count(self, params) -> int:
        """The number of scalar parameters in ``params``."""
        return int(models.count_params(params))

    def zeros(self) -> Params:
        """Zero parameters of this architecture (a template to restore a checkpoint into)."""
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self.functional.params)

    def evaluate(self, params, batch, names: Sequence[str]) -> dict[str, float]:
        """``{metric: value}`` of ``params`` on ``batch``."""
        return evaluate(self.apply, params, batch, names, self.num_classes)


class Grown(NamedTuple):
    """A growth of the current and stable models (see :func:`grow_student`).

    Attributes:
      event: the ``{"event": "grow", ...}`` record; ``accepted`` says if it kept the function.
      student: the grown architecture.
      current, stable: the grown models.
    """

    event: dict
    student: Student
    current: Params
    stable: Params


def grow_student(key, student: Student, current, stable, kind: str, amount: int, val,
                 names: Sequence[str]) -> Grown:
    """Grows ``current`` and ``stable`` (``kind`` ``"widen"`` by ``amount`` units per hidden
    layer, or ``"deepen"`` by one layer) and checks the grown stable model scores the same
    validation metrics ``names`` (within 1e-6)."""
    amount = amount if kind == "widen" else 1  # deepen: one identity layer
    arch, grown_current = growth.grow(student.arch, current, kind, key, amount)
    _, grown_stable = growth.grow(student.arch, stable, kind, key, amount)
    new = Student(arch)
    before = student.evaluate(stable, val, names)
    after = new.evaluate(grown_stable, val, names)
    gap = float(jnp.max(jnp.abs(student.apply(stable, val["x"])
                                - new.apply(grown_stable, val["x"]))))
    same = all(abs(before[n] - after[n]) <= 1e-6 for n in names)
    event = {
        "event": "grow",
        "kind": kind,
        "hidden_before": list(student.arch["hidden"]),
        "hidden_after": list(arch["hidden"]),
        "params_before": student.count(stable),
        "params_after": new.count(grown_stable),
        "stable_before": before,
        "stable_after": after,
        "max_logit_change": gap,
        "accepted": bool(same),
    }
    return Grown(event, new, grown_current, grown_stable)


class Growth:
    """The growth of a run's student: the ``on_stall`` hook of :func:`ev3evo.run`.

    Called when the run stalls, it grows the student (at most ``config.max_growths`` times,
    only with ``config.grow``), records the event (with the step and the seconds since
    :meth:`start`) and returns the new engine and state, or ``None`` to go on unchanged.

    Args:
      config: the run's :class:`~ev3evo.distillation.options.DistillConfig`.
      student: the student the run starts with; ``params`` its parameters.
      val: the validation split (with the teacher's logits) the check runs on.
      names: the metrics checked.
      rebuild: ``apply -> EV3``, the run's engine for a new architecture.
      events: growth events of the run so far (a resumed run's).
      on_event: called with every event record (to log it).

    Attributes:
      student: the architecture the run has reached; ``size`` its parameter count.
      events: every growth event, accepted or refused.
    """

    def __init__(self, config, student: Student, params, val, names: Sequence[str],
                 rebuild: Callable, events: Sequence[dict] = (),
                 on_event: Callable[[dict], None] | None = None):
        self.config, self.val, self.names, self.rebuild = config, val, list(names), rebuild
        self.student, self.size = student, student.count(params)
        self.events = list(events)
        self.on_event = on_event or (lambda event: None)
        self.started = time.perf_counter()

    def start(self) -> None:
        """Starts the clock of the events' ``seconds``."""
        self.started = time.perf_counter()

    def __call__(self, key, engine, state):
        c = self.config
        if not c.grow or len(self.events) >= c.max_growths:
            return None
        grown = grow_student(key, self.student, state.current, state.stable, c.grow_kind,
                             c.grow_amount, self.val, self.names)
        event = {**grown.event, "step": int(state.step),
                 "seconds": time.perf_counter() - self.started}
        self.events.append(event)
        self.on_event(event)
        if not event["accepted"]:
            return None
        new_engine = self.rebuild(grown.student.apply)
        fresh = new_engine.init(key, grown.current)
        new_state = fresh._replace(stable=grown.stable, allocation=state.allocation,
                                   step=state.step)
        self.student, self.size = grown.student, grown.student.count(grown.current)
        return new_engine, new_state
