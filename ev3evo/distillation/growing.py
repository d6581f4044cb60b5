"""Growing the student while the run stalls: the ``on_stall`` hook of the distillation run.

When the run stalls, :class:`Growth` widens or deepens both the current and the stable model
function-preservingly (:mod:`ev3evo.distillation.growth`; built-in students only), checks that
the grown stable model computes the same validation metrics (a growth that changes them is
refused), hands the run a new engine built for the new shapes (fresh sources, the allocation
record kept), and compiles its step at once. The compilation is part of the growth's cost: it
is measured (``compile_seconds`` of the event), counted in the run's time budget (the hook
runs inside the run's clock) and drawn as a gap in the time plots.

The stable model keeps its certified function through a growth, but not its size: a growth
pads it with units that compute nothing yet. :meth:`Growth.certified` gives the certified
student at the size it had when it was certified.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.distillation.growing import grow_student
    from ev3evo.distillation.student import Student
    student = Student.build("mlp:3", (4,), 2, seed=0)
    x = jax.random.normal(jax.random.key(0), (20, 4))
    val = {"x": x, "y": jnp.zeros(20, jnp.int32), "teacher": student.apply(student.initial, x)}
    grown = grow_student(jax.random.key(1), student, student.initial, student.initial, "widen",
                         2, val, ["accuracy", "agreement"])
    assert grown.event["accepted"] and grown.student.arch["hidden"] == [5]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..explore.stateful import Stateful
from . import growth, models
from .student import Student


class Grown(NamedTuple):
    """A growth of the current and stable models (see :func:`grow_student`).

    Attributes:
      event: the ``{"event": "grow", ...}`` record; ``accepted`` says if it kept the function.
      student: the grown student.
      current, stable: the grown engine models.
    """

    event: dict
    student: Student
    current: Stateful
    stable: Stateful


def _grown(student: Student, model: Stateful, kind: str, key, amount: int):
    arch, params = growth.grow(student.arch, model.params["model"], kind, key, amount)
    return arch, Stateful({**model.params, "model": params}, model.state)


def grow_student(key, student: Student, current: Stateful, stable: Stateful, kind: str,
                 amount: int, val, names: Sequence[str]) -> Grown:
    """Grows ``current`` and ``stable`` (``kind`` ``"widen"`` by ``amount`` units or channels
    per layer, ``"deepen"`` by one identity layer, ``"residual"`` by one block per stage) and
    checks the grown stable model scores the same validation metrics ``names`` (within 1e-6).
    """
    if student.arch is None:
        raise ValueError(f"growth needs a built-in student (mlp:... or cnn:...); "
                         f"{student.name} is the user's own architecture")
    amount = amount if kind == "widen" else 1  # deepen, residual: one identity layer or block
    arch, grown_current = _grown(student, current, kind, key, amount)
    _, grown_stable = _grown(student, stable, kind, key, amount)
    new = Student.for_arch(arch, student.num_classes)
    before = student.evaluate(stable, val, names)
    after = new.evaluate(grown_stable, val, names)
    gap = float(jnp.max(jnp.abs(student.apply(stable, val["x"])
                                - new.apply(grown_stable, val["x"]))))
    same = all(abs(before[n] - after[n]) <= 1e-6 for n in names)
    event = {
        "event": "grow",
        "kind": kind,
        "arch_before": student.describe(),
        "arch_after": new.describe(),
        "widths_before": models.widths(student.arch),
        "widths_after": models.widths(arch),
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
    only with ``config.grow``), compiles the new engine's step, records the event (with the
    step, the seconds since :meth:`start` when it began, ``compile_seconds`` for the
    recompilation and ``growth_seconds`` for the whole growth: the check, the new engine and
    its compilation) and returns the new engine and state, or ``None`` to go on unchanged.

    Args:
      config: the run's :class:`~ev3evo.distillation.options.DistillConfig`.
      student: the student the run starts with; ``model`` its engine model.
      train, val: the splits (with the teacher's logits): the step is compiled on them, the
        check runs on ``val``.
      names: the metrics checked.
      evaluation: what each step is assessed on, as :func:`~ev3evo.run` takes it (default
        ``val``); the new step is compiled on it.
      rebuild: ``Student -> EV3``, the run's engine for a new architecture.
      events: growth events of the run so far (a resumed run's).
      on_event: called with every event record (to log it).

    Attributes:
      student: the student the run has reached; ``size`` its parameter count.
      events: every growth event, accepted or refused.
    """

    def __init__(self, config, student: Student, model, train, val, names: Sequence[str],
                 rebuild: Callable, events: Sequence[dict] = (),
                 on_event: Callable[[dict], None] | None = None, evaluation=None):
        self.config, self.train, self.val = config, train, val
        self.evaluation = val if evaluation is None else evaluation
        self.names, self.rebuild = list(names), rebuild
        self.student, self.size = student, student.count(model)
        self.events = list(events)
        self.on_event = on_event or (lambda event: None)
        self.started = time.perf_counter()
        self._before: list[tuple[int, Student, Stateful]] = []  # (step, student, stable)

    def start(self) -> None:
        """Starts the clock of the events' ``seconds``."""
        self.started = time.perf_counter()

    def __call__(self, key, engine, state):
        c = self.config
        if not c.grow or len(self.events) >= c.max_growths:
            return None
        began = time.perf_counter() - self.started
        grown = grow_student(key, self.student, state.current, state.stable, c.grow_kind,
                             c.grow_amount, self.val, self.names)
        event = {**grown.event, "step": int(state.step), "seconds": began}
        result = None
        if event["accepted"]:
            new_engine = self.rebuild(grown.student)
            fresh = new_engine.init(key, grown.current)
            new_state = fresh._replace(stable=grown.stable, allocation=state.allocation,
                                       step=state.step)
            t0 = time.perf_counter()  # the recompilation: one throw-away step of the new engine
            batch = (self.evaluation(key, int(state.step)) if callable(self.evaluation)
                     else self.evaluation)
            jax.block_until_ready(new_engine.step(key, new_state, self.train, batch))
            event["compile_seconds"] = time.perf_counter() - t0
            self._before.append((int(state.step), self.student, state.stable))
            self.student, self.size = grown.student, grown.student.count(grown.current)
            result = (new_engine, new_state)
        event["growth_seconds"] = time.perf_counter() - self.started - began  # all of it
        self.events.append(event)
        self.on_event(event)
        return result

    def certified(self, stable: Stateful, last_certified: int) -> tuple[Student, Stateful]:
        """The certified student at the size it was certified at: ``(student, model)``.

        ``stable`` is the run's final stable model and ``last_certified`` the step of its last
        certification (0: the initial model). When a growth of this process came after it, the
        stable model then (before that growth) is the same function at its smaller size.
        """
        for step, student, model in self._before:
            if step >= last_certified:
                return student, model
        return self.student, stable
