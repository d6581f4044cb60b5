"""The ``run`` driver: repeat ``EV3.step`` with callbacks, a time budget and a result object.

A run is three steps: start (a fresh state, or the newest intact checkpoint with
``resume=True``), then one :func:`EV3.step <ev3evo.EV3>` per step number with its record,
callbacks, stall handling and periodic checkpoint, then finish (the final checkpoint, whatever
the status, and ``on_end``).

**Signals.** The whole run is a :func:`ev3evo.interrupts.deferred` scope: SIGINT (Ctrl-C) and
SIGTERM never interrupt a step, a compilation or a checkpoint write; the run stops before the
next step, writes its final checkpoint and ends with ``status="interrupted"`` (under the
``ev3evo`` command it then raises :class:`~ev3evo.interrupts.Interrupted`, which the command
reports in one line with exit code 130 or 143).

**Giving up.** A run that cannot make progress stops with ``status="failed"`` and a
:class:`RunError` saying why, after ``give_up_after`` consecutive steps (5 by default) in
which the same host source raised, or in which no candidate had a finite value of every
metric (a metric that is NaN everywhere, even in a secondary objective only, blocks every
acceptance).

Example::

    import jax, jax.numpy as jnp, ev3evo
    score = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - b["t"]) ** 2, -1))
    engine = ev3evo.EV3([ev3evo.gaussian(8, sigma=0.3)], [score])
    batch = {"t": jnp.ones((64, 3))}
    result = ev3evo.run(engine, jax.random.key(0), {"w": jnp.zeros(3)}, batch, batch, steps=5,
                        callbacks=[ev3evo.JSONLHistory("history.jsonl")])
    assert result.status == "finished" and len(result.history) == 6  # step 0, then 1 … 5
    assert result.history[0]["initial"] and result.history[0]["step"] == 0
    assert result.history[-1]["stable"]["score"] >= result.history[0]["stable"]["score"]
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

from . import interrupts
from ._checks import check_positive_int
from .callbacks import Callback
from .loop import EV3, EV3State
from .types import Batch, Params, PRNGKey

_INIT_SALT = 0x7FFFFFFF  # init's key is fold_in(key, _INIT_SALT); step t's is fold_in(key, t)

#: why a run ended
FINISHED = "finished"  # took every step asked for
TIME_BUDGET = "time_budget"  # the wall-clock budget ran out
STOPPED = "stopped"  # a callback asked to stop (early stopping)
FAILED = "failed"  # an exception in a step or a callback (with throw=False), or gave up
INTERRUPTED = "interrupted"  # SIGINT or SIGTERM: stopped between two steps


class RunError(RuntimeError):
    """The run cannot make progress: the same failure on every step (see ``give_up_after``)."""


@dataclass
class RunResult:
    """What a run returns.

    Attributes:
      state: the final :class:`EV3State` (``state.stable`` is the certified model).
      history: JSON-ready records: the starting model (step 0, ``"initial": True``, see
        :meth:`EV3.initial_record`), then one per step (see :meth:`EV3.record`).
      status: ``"finished"``, ``"time_budget"``, ``"stopped"``, ``"interrupted"`` or
        ``"failed"``.
      steps: steps taken in this call.
      seconds: wall time of this call.
      error: the exception's message when ``status == "failed"``.
      engine: the engine in use at the end (growth may replace it).
      signal: the signal's name (``"SIGINT"``, ``"SIGTERM"``) when one came during the run.
    """

    state: EV3State
    history: list[dict] = field(default_factory=list)
    status: str = FINISHED
    steps: int = 0
    seconds: float = 0.0
    error: str | None = None
    engine: EV3 | None = None
    signal: str | None = None

    @property
    def stable(self) -> Params:
        return self.state.stable

    @property
    def current(self) -> Params:
        return self.state.current


BatchSource = Batch | Callable[[PRNGKey, int], Batch]
StallHook = Callable[[PRNGKey, EV3, EV3State], "tuple[EV3, EV3State] | None"]


def _get_batch(source: Any, key: PRNGKey, step: int) -> Batch:
    return source(key, step) if callable(source) else source


def _check_budget(steps: int, time_budget) -> None:
    check_positive_int(steps, "steps")
    if time_budget is not None and not (
        isinstance(time_budget, numbers.Real) and not isinstance(time_budget, bool)
        and time_budget > 0
    ):
        raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget!r}")


def _check_give_up(value) -> int | None:
    if value is None:
        return None
    return check_positive_int(value, "give_up_after")


class _Watch:
    """Counts consecutive steps in which a host source raised, or no candidate was valid."""

    def __init__(self, limit: int | None):
        self.limit, self.failing, self.no_valid = limit, {}, 0

    def update(self, record: dict) -> str | None:
        """Why the run should give up after this step's ``record``, or ``None``."""
        if self.limit is None:
            return None
        errors: dict[str, dict] = {}
        for e in record.get("host_errors", ()):
            errors.setdefault(e["source"], e)
        self.failing = {name: self.failing.get(name, 0) + 1 for name in errors}
        self.no_valid = self.no_valid + 1 if record["num_valid"] == 0 else 0
        regardless = "give_up_after=None runs on regardless"
        for name, count in self.failing.items():
            if count >= self.limit:
                e = errors[name]
                return (f"source {name!r} failed on each of the last {count} steps "
                        f"({e['phase']}: {e['error']}); fix or remove it ({regardless})")
        if self.no_valid >= self.limit:
            bad = [m for m, v in record["current"].items() if not math.isfinite(v)]
            also = (f"; metric {', '.join(map(repr, bad))} is not finite for the current model "
                    "either: a metric that is NaN or infinite on every model blocks every "
                    "acceptance") if bad else ""
            return (f"no candidate had a finite value of every metric on each of the last "
                    f"{self.no_valid} steps{also} (check the metrics, the data and the sources; "
                    f"{regardless})")
        return None


def _checkpointer(directory, every, keep, metadata, resume: bool, trust_pickles: bool,
                  seconds, root):
    """The run's :class:`~ev3evo.io.Checkpointer`, or ``None`` without ``checkpoint_dir``."""
    if directory is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir (the directory of the run to resume)")
        return None
    from .io.checkpointer import Checkpointer

    return Checkpointer(directory, every, keep, metadata, seconds=seconds, root=root,
                        trust_pickles=trust_pickles)


def _start(engine: EV3, key: PRNGKey, params, state, checkpointer, resume: bool) -> tuple:
    """Start or resume: ``(result, restored)``; ``restored`` is the checkpoint or ``None``."""
    if state is None and params is None:
        raise ValueError("run() needs params or a state to continue from")
    restored = None
    if checkpointer is not None and resume:
        if state is None:  # the structure to restore into (and the fresh start if none)
            state = engine.init(jax.random.fold_in(key, _INIT_SALT), params)
        restored = checkpointer.resume(engine, key, state)
    elif checkpointer is not None:
        checkpointer.check_fresh()
    history: list[dict] = []
    if restored is not None:
        state, history = restored.state, list(restored.history)
    elif state is None:
        state = engine.init(jax.random.fold_in(key, _INIT_SALT), params)
    return RunResult(state=state, engine=engine, history=history), restored


def _notify_start(callbacks, result: RunResult, restored) -> None:
    for cb in callbacks:
        cb.on_start(result.engine, result.state)
    if restored is not None:  # callbacks with a memory (early stopping) may replay it
        for cb in callbacks:
            if callable(getattr(cb, "on_resume", None)):
                cb.on_resume(result.history)


def _step(result: RunResult, key: PRNGKey, t: int, data: tuple, callbacks, on_stall,
          clock: Callable[[], float], checkpointer) -> bool:
    """Step ``t``: the engine step, its record, callbacks, stall handling and the checkpoint.

    Updates ``result`` in place; returns true when a callback asked to stop.
    """
    engine, (train, evaluation) = result.engine, data
    k_train, k_eval, k_step, k_grow = jax.random.split(jax.random.fold_in(key, t), 4)
    train_batch = _get_batch(train, k_train, t)
    eval_batch = _get_batch(evaluation, k_eval, t)
    first = int(result.state.step) == 0 and not result.history
    state, info = engine.step(k_step, result.state, train_batch, eval_batch)
    records = [engine.initial_record(info)] if first else []  # the model the run starts from
    records.append(engine.record(info))
    seconds = clock()
    for record in records:
        record["seconds"] = 0.0 if record.get("initial") else seconds
    result.state, result.steps = state, result.steps + 1
    stop = False
    for record in records:
        result.history.append(record)
        for cb in callbacks:
            stop = bool(cb.on_step(record, state, engine)) or stop
    if on_stall is not None and record["stalled"]:
        grown = on_stall(k_grow, engine, state)
        if grown is not None:
            result.engine, result.state = grown
    if checkpointer is not None:
        checkpointer.save(result.engine, key, result.state, result.history)
    return stop


def _final_checkpoint(checkpointer, result: RunResult, key: PRNGKey) -> Exception | None:
    """Writes the last good state (if not yet on disk); returns the write's error, if any."""
    try:
        checkpointer.save(result.engine, key, result.state, result.history, force=True)
    except Exception as e:
        return e
    return None


def _checkpoint_note(checkpointer, failed: Exception | None) -> str:
    where = f"step {checkpointer.last_saved} in {checkpointer.directory}"
    if failed is None:
        return f"last checkpoint: {where}"
    last = f"; the last one written is {where}" if checkpointer.last_saved is not None else ""
    return f"its final checkpoint could not be written: {type(failed).__name__}: {failed}{last}"


def _short_note(checkpointer, failed: Exception | None, error: Exception | None) -> str:
    """What is on disk, for a message that already names ``error``."""
    where = f"step {checkpointer.last_saved} in {checkpointer.directory}"
    if failed is None:
        return f"last checkpoint: {where}"
    same = (isinstance(failed, OSError) and isinstance(error, OSError)
            and failed.errno == error.errno) or failed is error
    why = "" if same else f" ({type(failed).__name__}: {failed})"
    if checkpointer.last_saved is None:
        return f"the final checkpoint could not be written{why}; no checkpoint was written"
    return f"the final checkpoint could not be written{why}; the last one written is {where}"


def add_note(error: BaseException, note: str) -> None:
    """Attaches ``note`` to ``error`` (``BaseException.add_note``; ``__notes__`` before 3.11)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        error.__notes__ = [*getattr(error, "__notes__", []), note]


def _finish(result: RunResult, callbacks, checkpointer, key: PRNGKey, start: float,
            error: Exception | None) -> tuple[Exception | None, str]:
    """Final checkpoint, wall time, ``on_end``; returns the exception the run ends with and
    what is on disk (``""`` without checkpoints). The exception carries that as a note."""
    if error is not None:
        result.status, result.error = FAILED, f"{type(error).__name__}: {error}"
    note = ""
    if checkpointer is not None:
        failed = _final_checkpoint(checkpointer, result, key)
        if error is not None:  # the run's own error matters more; report both
            note = _short_note(checkpointer, failed, error)
            result.error += f" ({'and ' if failed is not None else ''}"
            result.error += f"{_checkpoint_note(checkpointer, failed)})"
            add_note(error, note)
        elif failed is not None:  # the steps went well but their final state is not on disk
            note = _short_note(checkpointer, failed, failed)
            result.status, error = FAILED, failed
            result.error = f"the run ended but {_checkpoint_note(checkpointer, failed)}"
            add_note(error, note)
        else:
            note = _checkpoint_note(checkpointer, None)
    result.seconds = time.perf_counter() - start
    for cb in callbacks:
        cb.on_end(result)
    return error, note


def _loop(result: RunResult, key: PRNGKey, steps: int, data: tuple, callbacks, on_stall,
          clock, checkpointer, time_budget, signals, watch: _Watch, start: float) -> None:
    """The steps, until done, stopped (budget, callback, signal) or failed (raises)."""
    for t in range(int(result.state.step), steps):
        if signals.pending is not None:  # a safe point: between two steps
            result.status = INTERRUPTED
            return
        if time_budget is not None and time.perf_counter() - start >= time_budget:
            result.status = TIME_BUDGET
            return
        stop = _step(result, key, t, data, callbacks, on_stall, clock, checkpointer)
        reason = watch.update(result.history[-1])
        if reason is not None:
            raise RunError(reason)
        if stop:
            result.status = STOPPED
            return


def run(
    engine: EV3,
    key: PRNGKey,
    params: Params | None,
    train: BatchSource,
    evaluation: BatchSource,
    steps: int,
    *,
    callbacks: Sequence[Callback] = (),
    time_budget: float | None = None,
    state: EV3State | None = None,
    on_stall: StallHook | None = None,
    throw: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = 1,
    checkpoint_seconds: float | None = None,
    checkpoint_root: str | os.PathLike | None = None,
    resume: bool = False,
    keep_checkpoints: int = 3,
    checkpoint_metadata: dict | Callable[[EV3, EV3State], dict] | None = None,
    trust_pickles: bool = False,
    give_up_after: int | None = 5,
) -> RunResult:
    """Runs ``steps`` EV3 steps (fewer if the time budget or a callback stops it).

    Args:
      engine: the :class:`EV3` configuration.
      key: the run's PRNG key; step ``t`` uses ``fold_in(key, t)``, so a run resumed from a
        state at step ``t`` continues with exactly the keys the uninterrupted run would use.
      params: the initial model (ignored when ``state`` is given).
      train: a batch, or ``(key, step) -> batch`` for the gradient sources.
      evaluation: a batch, or ``(key, step) -> batch``, for assessment (held-out data).
      steps: the total number of steps of the run (counting those already in ``state``).
      callbacks: :class:`Callback` objects (progress bar, JSONL history, early stopping, ...).
      time_budget: wall-clock seconds after which the run stops between steps.
      state: continue from this state instead of initializing from ``params``.
      on_stall: called when the stall counter reaches the engine's patience; it may return a
        new ``(engine, state)`` (growth), or ``None`` to leave things as they are.
      throw: re-raise exceptions from steps and callbacks (after ``on_end``); with ``False``
        the result has ``status="failed"`` and the last good state.
      checkpoint_dir: write checkpoints of the whole run here (see :mod:`ev3evo.io.checkpoint`):
        every ``checkpoint_every`` steps and at the end, whatever the status (a failed run
        leaves its last good state on disk; a final checkpoint that cannot be written makes
        the run fail). Without ``resume`` the directory must not hold checkpoints already.
      checkpoint_every: steps between checkpoints (``None``: only the time trigger).
      checkpoint_seconds: also write a checkpoint after a step that ends at least this many
        seconds of wall time after the last one written (``None``: no time trigger); either
        trigger only reads the state, so it never changes the run.
      checkpoint_root: the folder trusted as given (e.g. the output folder ``checkpoint_dir``
        is in): folders between it and ``checkpoint_dir`` must not be symbolic links (see
        :mod:`ev3evo.io.atomic`; default: ``checkpoint_dir`` itself).
      resume: continue from the newest intact checkpoint in ``checkpoint_dir`` (state, key
        check and history); starts afresh when there is none yet. A JAX-only run resumed this
        way ends bit-identical to the uninterrupted run. After growth, pass the grown engine
        and params (``ev3evo.io.read_checkpoint(dir).metadata`` tells what was saved).
      keep_checkpoints: how many checkpoints to keep.
      checkpoint_metadata: JSON-ready dict, or ``(engine, state) -> dict``, saved with each
        checkpoint (e.g. the architecture); its ``"config"`` entry is part of the fingerprint.
      trust_pickles: on resume, let the sources' ``load`` hooks unpickle the host data they
        saved as pickles (nevergrad optimizers). Unpickling runs whatever code the file holds:
        pass true only for checkpoints you trust (you wrote them and nobody else could change
        them). Without it, resuming a run with such data raises a ``CheckpointError``.
      give_up_after: stop with ``status="failed"`` (a :class:`RunError`, raised with
        ``throw``) after this many consecutive steps in which the same host source raised,
        or in which no candidate had a finite value of every metric; ``None`` never gives up.

    Returns:
      A :class:`RunResult`. The history's ``"seconds"`` continue across a resume (wall time
      spent in the run's steps so far, not counting the time it was stopped). After SIGINT or
      SIGTERM its status is ``"interrupted"`` and ``signal`` names the signal (see the module
      docstring); under the ``ev3evo`` command :class:`~ev3evo.interrupts.Interrupted` is
      raised instead, after the final checkpoint.
    """
    start = time.perf_counter()
    _check_budget(steps, time_budget)
    watch = _Watch(_check_give_up(give_up_after))
    checkpointer = _checkpointer(checkpoint_dir, checkpoint_every, keep_checkpoints,
                                 checkpoint_metadata, resume, trust_pickles, checkpoint_seconds,
                                 checkpoint_root)
    with interrupts.deferred() as signals:
        result, restored = _start(engine, key, params, state, checkpointer, resume)
        offset = float(result.history[-1].get("seconds", 0.0)) if result.history else 0.0
        clock = lambda: offset + time.perf_counter() - start
        _notify_start(callbacks, result, restored)
        error = None
        try:
            _loop(result, key, steps, (train, evaluation), callbacks, on_stall, clock,
                  checkpointer, time_budget, signals, watch, start)
        except Exception as e:  # keep what we had: callbacks still see the last good state
            error = e
        error, note = _finish(result, callbacks, checkpointer, key, start, error)
        if signals.pending is not None:
            result.signal = interrupts.signal_name(signals.pending)
            if not (signals.stop and error is not None and throw):  # else the error first
                detail = f"at step {int(result.state.step)}" + (f"; {note}" if note else "")
                signals.safe_point(detail)  # raises Interrupted under the ev3evo command
    if error is not None and throw:
        raise error
    return result
