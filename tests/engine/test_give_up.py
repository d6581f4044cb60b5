"""A run that cannot make progress says so after a few steps instead of running on.

``run(..., give_up_after=K)`` (5 by default) stops with ``status="failed"`` and a
``RunError`` naming the cause after K consecutive steps in which the same host source raised,
or in which no candidate had a finite value of every metric (a metric NaN everywhere, even a
secondary one, blocks every acceptance). Transient failures never trigger it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo
from ev3evo.io import read_checkpoint
from ev3evo.run import RunError

BATCH = {"t": jnp.ones((32, 3))}
PARAMS = {"w": jnp.zeros(3)}


def _score(params, batch):
    return -jnp.sum((params["w"] - batch["t"]) ** 2, axis=-1)


SCORE = ev3evo.metrics.per_example("score", _score)
NAN = ev3evo.metrics.per_example("broken", lambda p, b: _score(p, b) * jnp.nan)


def _host_source(fails_on):
    """A host source (plain Python) whose ask raises on the calls ``fails_on(call)`` says."""
    calls = {"n": 0}

    def init(key, params):
        return {"told": jnp.zeros((), jnp.int32)}

    def ask(key, state, params, batch, active):
        calls["n"] += 1
        if fails_on(calls["n"]):
            raise RuntimeError(f"external optimizer is down (call {calls['n']})")
        return {"w": np.asarray(params["w"])[None] + np.float32(0.1)}, state

    def tell(key, state, population, feedback):
        return {"told": state["told"] + 1}

    return ev3evo.Source(init, ask, tell, 1, "external", host=True)


def _run(engine, steps=20, **kwargs):
    return ev3evo.run(engine, jax.random.key(0), PARAMS, BATCH, BATCH, steps, **kwargs)


def test_a_host_source_failing_on_every_step_stops_the_run(tmp_path):
    engine = ev3evo.EV3([_host_source(lambda n: True), ev3evo.gaussian(4, 0.1)], [SCORE])
    result = _run(engine, throw=False, checkpoint_dir=tmp_path)
    assert result.status == "failed" and result.steps == 5
    assert result.error.startswith(
        "RunError: source 'external' failed on each of the last 5 steps (ask: RuntimeError: "
        "external optimizer is down (call 5)); fix or remove it")
    assert f"last checkpoint: step 5 in {tmp_path}" in result.error
    assert read_checkpoint(tmp_path).step == 5
    with pytest.raises(RunError, match="source 'external' failed on each of the last 3 steps"):
        _run(engine, give_up_after=3)


def test_transient_failures_and_give_up_after_none_run_on():
    flaky = ev3evo.EV3([_host_source(lambda n: n % 3 != 0), ev3evo.gaussian(4, 0.1)], [SCORE])
    result = _run(flaky, steps=12)  # fails 2 steps in 3: never 5 in a row
    assert result.status == "finished" and sum(bool(r["host_errors"]) for r in result.history) == 8
    down = ev3evo.EV3([_host_source(lambda n: True), ev3evo.gaussian(4, 0.1)], [SCORE])
    result = _run(down, steps=8, give_up_after=None)
    assert result.status == "finished" and all(r["host_errors"] for r in result.history[1:])


def test_nevergrad_ngopt_without_a_budget_never_reaches_the_run():
    with pytest.raises(ValueError, match="nevergrad NGOpt needs a budget"):
        ev3evo.nevergrad_source("NGOpt", 4)


@pytest.mark.parametrize("metrics, objectives, bad", [
    ([NAN], None, "broken"),  # the only metric is NaN everywhere
    ([SCORE, NAN], ["score", "broken"], "broken"),  # NaN in a secondary objective only
    ([SCORE, NAN], ["score"], "broken"),  # NaN in a metric that is only reported
])
def test_a_metric_that_is_nan_everywhere_stops_the_run(metrics, objectives, bad):
    engine = ev3evo.EV3([ev3evo.gaussian(4, 0.1)], metrics, objectives=objectives)
    result = _run(engine, throw=False)
    assert result.status == "failed" and result.steps == 5
    assert result.error.startswith(
        "RunError: no candidate had a finite value of every metric on each of the last 5 steps; "
        f"metric '{bad}' is not finite for the current model either")
    assert not any(r["accepted"] for r in result.history)  # what it would have done forever


def test_candidates_that_are_all_non_finite_stop_the_run():
    """The metric is fine, but every candidate has NaN parameters (a diverging source)."""

    def init(key, params):
        return ()

    def ask(key, state, params, batch, active):
        return {"w": jnp.full((3, 3), jnp.nan)}, state

    def tell(key, state, population, feedback):
        return state

    engine = ev3evo.EV3([ev3evo.Source(init, ask, tell, 3, "diverging")], [SCORE])
    with pytest.raises(RunError, match=r"no candidate had a finite value of every metric on "
                                       r"each of the last 5 steps \(check the metrics"):
        _run(engine)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "5"])
def test_give_up_after_must_be_a_positive_integer_or_none(value):
    engine = ev3evo.EV3([ev3evo.gaussian(4, 0.1)], [SCORE])
    with pytest.raises((TypeError, ValueError), match="give_up_after must be a positive integer"):
        _run(engine, steps=2, give_up_after=value)
