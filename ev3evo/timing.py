"""Where a run's wall time goes: the step's stages, measured.

A step has three stages (see :mod:`ev3evo.loop`): *explore* (every source's candidates:
gradient rollouts, mutations, evolution strategies, host sources), *assess* (every arm scored
on the evaluation batches) and *gate* (the decision, telling the sources, the allocation).
``EV3(timed=True)`` runs them as three compiled programs and waits for each, so that every
step's record carries the seconds of each stage (``record["stage_seconds"]``); the stages are
the same computations as in the fused step, so a timed run makes the same decisions.
:func:`time_shares` turns the records of a run into the shares of its wall time, the rest
(dispatch, callbacks, checkpoints, the final check) counted as ``"other"``.

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.timing import time_shares
    metric = ev3evo.metrics.per_example("neg_sq", lambda p, b: -jnp.sum(p["w"] ** 2) + 0 * b["y"])
    engine = ev3evo.EV3([ev3evo.gaussian(4, 0.1)], [metric], timed=True)
    batch = {"y": jnp.zeros(8)}
    state = engine.init(jax.random.key(0), {"w": jnp.ones(3)})
    state, info = engine.step(jax.random.key(1), state, batch, batch)
    record = engine.record(info)
    assert set(record["stage_seconds"]) == {"explore", "assess", "gate"}
    shares = time_shares([record], sum(record["stage_seconds"].values()) + 0.01)
    assert abs(sum(shares.values()) - 1.0) < 1e-9 and shares["other"] > 0
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from typing import NamedTuple

import jax
import numpy as np

#: the stages of a step, in order
STAGES = ("explore", "assess", "gate")


class StageSeconds(NamedTuple):
    """The wall time of one step's stages (host floats)."""

    explore: float
    assess: float
    gate: float


class Laps:
    """A stopwatch over a step's stages: :meth:`lap` waits for a stage's outputs and returns
    the seconds since the previous lap (or since the stopwatch was made)."""

    __slots__ = ("last",)

    def __init__(self):
        self.last = time.perf_counter()

    def lap(self, outputs) -> float:
        jax.block_until_ready(outputs)
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return seconds


def time_shares(records: Iterable[dict], total: float) -> dict[str, float]:
    """The shares of ``total`` seconds spent in each stage over the step ``records`` that carry
    ``"stage_seconds"``, and ``"other"`` for the rest; the shares sum to 1.

    Raises:
      ValueError: no record carries stage seconds (the engine was not ``timed``), or
        ``total`` is not positive.
    """
    sums = dict.fromkeys(STAGES, 0.0)
    timed = 0
    for r in records:
        seconds = r.get("stage_seconds")
        if seconds:
            timed += 1
            for stage in STAGES:
                sums[stage] += float(seconds[stage])
    if not timed:
        raise ValueError("no step record carries stage_seconds: build the engine with "
                         "EV3(..., timed=True)")
    if not total > 0:
        raise ValueError(f"the total wall time must be positive, got {total!r}")
    # The stages are timed inside the total; clock granularity aside they cannot exceed it.
    total = max(float(total), sum(sums.values()))
    shares = {stage: s / total for stage, s in sums.items()}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def describe_shares(shares: dict[str, float]) -> str:
    """One line: ``"explore 61% (rollouts and the other sources), assess 27% ..."``."""
    what = {"explore": "rollouts and the other sources", "assess": "evaluation",
            "gate": "the decision, telling the sources, the allocation",
            "other": "dispatch, callbacks, checkpoints, the final check"}
    return ", ".join(f"{name} {100 * shares[name]:.0f}% ({what[name]})" for name in what)


def profile(engine, key, state, train_batch, eval_batch, repeats: int = 3) -> dict:
    """Where a step's time goes: each stage compiled alone and timed on these inputs.

    The stages are as in a ``timed`` engine (host sources included in explore). Each is timed
    ``repeats`` times after one warm-up call; the median seconds and the shares of their sum
    are returned. Compiling the three stages costs about what compiling the step costs: a
    ``timed`` engine measures the same every step at no extra compilation.

    Returns:
      ``{"explore": s, "assess": s, "gate": s, "shares": {...}}``.
    """
    from ._checks import check_positive_int
    from .explore.mix import ask_parts
    from .loop import _evaluation, assess, explore, settle

    prog, layout = engine.program, engine.program.source.layout
    evaluation = _evaluation(prog, eval_batch)
    key_ask, key_gate, key_tell = jax.random.split(key, 3)
    ask_keys = jax.random.split(key_ask, len(layout.parts))
    tell_keys = jax.random.split(key_tell, len(layout.parts))
    explore_jit = jax.jit(functools.partial(explore, prog))
    assess_jit = jax.jit(functools.partial(assess, prog))
    settle_jit = jax.jit(functools.partial(settle, prog))

    def explore_all():
        blocks, sources, active = explore_jit(ask_keys, state, train_batch)
        if prog.source.host:
            blocks, sources = ask_parts(layout, True, ask_keys, sources, state.current,
                                        train_batch, active, blocks, [])
        return blocks, sources, active

    blocks, sources, active = explore_all()
    assessed = assess_jit(state, blocks, active, evaluation)
    stages = {
        "explore": explore_all,
        "assess": lambda: assess_jit(state, blocks, active, evaluation),
        "gate": lambda: settle_jit(key_gate, tell_keys, state, sources, blocks, assessed),
    }
    repeats = check_positive_int(repeats, "repeats")
    seconds = {name: median_seconds(run, repeats) for name, run in stages.items()}
    total = sum(seconds.values())
    return {**seconds, "shares": {n: v / total for n, v in seconds.items()}}


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls, after one warm-up call."""
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return float(np.median(times))
