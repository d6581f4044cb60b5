"""The ``run`` driver: repeat ``EV3.step`` with callbacks, a time budget and a result object.

Example::

    result = ev3evo.run(engine, key, params, train, val, steps=50,
                        callbacks=[ev3evo.ProgressBar(), ev3evo.JSONLHistory("history.jsonl")])
    result.status, result.state.stable, result.history[-1]["stable"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

from .callbacks import Callback
from .loop import EV3, EV3State
from .types import Batch, Params, PRNGKey

_INIT_SALT = 0x7FFFFFFF  # init's key is fold_in(key, _INIT_SALT); step t's is fold_in(key, t)

#: why a run ended
FINISHED = "finished"  # took every step asked for
TIME_BUDGET = "time_budget"  # the wall-clock budget ran out
STOPPED = "stopped"  # a callback asked to stop (early stopping)
FAILED = "failed"  # an exception in a step or a callback (with throw=False)


@dataclass
class RunResult:
    """What a run returns.

    Attributes:
      state: the final :class:`EV3State` (``state.stable`` is the certified model).
      history: one JSON-ready record per step (see :meth:`EV3.record`).
      status: ``"finished"``, ``"time_budget"``, ``"stopped"`` or ``"failed"``.
      steps: steps taken in this call.
      seconds: wall time of this call.
      error: the exception's message when ``status == "failed"``.
      engine: the engine in use at the end (growth may replace it).
    """

    state: EV3State
    history: list[dict] = field(default_factory=list)
    status: str = FINISHED
    steps: int = 0
    seconds: float = 0.0
    error: str | None = None
    engine: EV3 | None = None

    @property
    def stable(self) -> Params:
        return self.state.stable

    @property
    def params(self) -> Params:
        return self.state.params


BatchSource = Batch | Callable[[PRNGKey, int], Batch]
StallHook = Callable[[PRNGKey, EV3, EV3State], "tuple[EV3, EV3State] | None"]


def _get_batch(source: Any, key: PRNGKey, step: int) -> Batch:
    return source(key, step) if callable(source) else source


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
    """
    start = time.perf_counter()
    if state is None:
        if params is None:
            raise ValueError("run() needs params or a state to continue from")
        state = engine.init(jax.random.fold_in(key, _INIT_SALT), params)
    result = RunResult(state=state, engine=engine)
    for cb in callbacks:
        cb.on_start(engine, state)
    first = int(state.step)
    try:
        for t in range(first, steps):
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                result.status = TIME_BUDGET
                break
            step_key = jax.random.fold_in(key, t)
            k_train, k_eval, k_step, k_grow = jax.random.split(step_key, 4)
            train_batch = _get_batch(train, k_train, t)
            eval_batch = _get_batch(evaluation, k_eval, t)
            state, info = engine.step(k_step, state, train_batch, eval_batch)
            record = engine.record(info)
            record["seconds"] = time.perf_counter() - start
            result.state, result.steps = state, result.steps + 1
            result.history.append(record)
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_step(record, state, engine)) or stop
            if on_stall is not None and record["stalled"]:
                grown = on_stall(k_grow, engine, state)
                if grown is not None:
                    engine, state = grown
                    result.engine, result.state = engine, state
            if stop:
                result.status = STOPPED
                break
    except Exception as e:  # keep what we had: callbacks still see the last good state
        result.status, result.error = FAILED, f"{type(e).__name__}: {e}"
        result.seconds = time.perf_counter() - start
        for cb in callbacks:
            cb.on_end(result)
        if throw:
            raise
        return result
    result.seconds = time.perf_counter() - start
    for cb in callbacks:
        cb.on_end(result)
    return result
