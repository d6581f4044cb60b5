"""The ``run`` driver: repeat ``EV3.step`` with callbacks, a time budget and a result object.

Example::

    import jax, jax.numpy as jnp, ev3evo
    score = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - b["t"]) ** 2, -1))
    engine = ev3evo.EV3([ev3evo.gaussian(8, sigma=0.3)], [score])
    batch = {"t": jnp.ones((64, 3))}
    result = ev3evo.run(engine, jax.random.key(0), {"w": jnp.zeros(3)}, batch, batch, steps=5)
    assert result.status == "finished" and len(result.history) == 5
    assert result.history[-1]["stable"]["score"] >= result.history[0]["stable"]["score"]
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

from ._checks import check_positive_int
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
    def current(self) -> Params:
        return self.state.current


BatchSource = Batch | Callable[[PRNGKey, int], Batch]
StallHook = Callable[[PRNGKey, EV3, EV3State], "tuple[EV3, EV3State] | None"]


def _get_batch(source: Any, key: PRNGKey, step: int) -> Batch:
    return source(key, step) if callable(source) else source


def _final_checkpoint(checkpointer, result: RunResult, key: PRNGKey) -> str:
    """Writes the last good state (if not yet on disk); returns a note for error messages."""
    try:
        checkpointer.save(result.engine, key, result.state, result.history, force=True)
    except Exception as e:  # the run's own error matters more; report both
        return f" (and its final checkpoint could not be written: {type(e).__name__}: {e})"
    return f" (last checkpoint: step {checkpointer.last_saved} in {checkpointer.directory})"


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
    checkpoint_every: int = 1,
    resume: bool = False,
    keep_checkpoints: int = 3,
    checkpoint_metadata: dict | Callable[[EV3, EV3State], dict] | None = None,
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
        leaves its last good state on disk). Without ``resume`` the directory must not hold
        checkpoints already.
      checkpoint_every: steps between checkpoints.
      resume: continue from the newest intact checkpoint in ``checkpoint_dir`` (state, key
        check and history); starts afresh when there is none yet. A JAX-only run resumed this
        way ends bit-identical to the uninterrupted run. After growth, pass the grown engine
        and params (``ev3evo.io.read_checkpoint(dir).metadata`` tells what was saved).
      keep_checkpoints: how many checkpoints to keep.
      checkpoint_metadata: JSON-ready dict, or ``(engine, state) -> dict``, saved with each
        checkpoint (e.g. the architecture); its ``"config"`` entry is part of the fingerprint.
    """
    start = time.perf_counter()
    check_positive_int(steps, "steps")
    if time_budget is not None and not (
        isinstance(time_budget, numbers.Real) and not isinstance(time_budget, bool)
        and time_budget > 0
    ):
        raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    checkpointer, history = None, []
    if checkpoint_dir is not None:
        from .io.checkpoint import Checkpointer

        checkpointer = Checkpointer(
            checkpoint_dir, checkpoint_every, keep_checkpoints, checkpoint_metadata
        )
    elif resume:
        raise ValueError("resume=True needs checkpoint_dir (the directory of the run to resume)")
    if state is None and params is None:
        raise ValueError("run() needs params or a state to continue from")
    restored = None
    if checkpointer is not None and resume:
        template = state
        if template is None:  # the structure to restore into (and the fresh start if none)
            template = state = engine.init(jax.random.fold_in(key, _INIT_SALT), params)
        restored = checkpointer.resume(engine, key, template)
    elif checkpointer is not None:
        checkpointer.check_fresh()
    if restored is not None:
        state, history = restored.state, list(restored.history)
    elif state is None:
        state = engine.init(jax.random.fold_in(key, _INIT_SALT), params)
    result = RunResult(state=state, engine=engine, history=history)
    for cb in callbacks:
        cb.on_start(engine, state)
    if restored is not None:  # callbacks with a memory (early stopping) may replay it
        for cb in callbacks:
            if callable(getattr(cb, "on_resume", None)):
                cb.on_resume(result.history)
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
            if checkpointer is not None:
                checkpointer.save(engine, key, state, result.history)
            if stop:
                result.status = STOPPED
                break
    except Exception as e:  # keep what we had: callbacks still see the last good state
        result.status, result.error = FAILED, f"{type(e).__name__}: {e}"
        if checkpointer is not None:
            result.error += _final_checkpoint(checkpointer, result, key)
        result.seconds = time.perf_counter() - start
        for cb in callbacks:
            cb.on_end(result)
        if throw:
            raise
        return result
    if checkpointer is not None:
        _final_checkpoint(checkpointer, result, key)
    result.seconds = time.perf_counter() - start
    for cb in callbacks:
        cb.on_end(result)
    return result
