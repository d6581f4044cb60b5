"""Faults inside a run: non-finite candidates, non-finite scores, failing assessment, bad losses.

The gate's guarantee must hold on the fault paths too: in the main test a third of the
candidates have NaN parameters, two more have a NaN or a ``+inf`` score, and the rest are
truly worse than the stable model (by three standard errors of the paired difference), and
over many steps nothing is ever certified and the stable model never changes.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ev3evo
from ev3evo.explore import sampling
from ev3evo.explore.gradient import rollout
from ev3evo.io import read_checkpoint

TARGET = np.array([0.5, -1.0, 2.0], np.float32)
SIZE = 9
NAN_PARAMS = (0, 1, 2)  # a third of the candidates
NAN_SCORE, INF_SCORE = 3, 4  # finite parameters, non-finite scores
RADIUS = 0.3  # worse candidates sit at this distance from the optimum: true gap RADIUS**2
SIGMA, N = 0.8, 64  # per-example noise of the score: standard error = SIGMA*RADIUS/sqrt(N)


def _score(params, batch):
    """Per-example ``-|w - t|^2 + e_n . (w - t)``; NaN / +inf for the marked candidates."""
    w = params["w"]
    base = -jnp.sum((w - TARGET) ** 2) + batch["e"] @ (w - TARGET)
    return jnp.where(w[0] > 1e3, jnp.inf, jnp.where(w[0] < -1e3, jnp.nan, base))


def _faulty_source():
    """Candidates: 3 with NaN parameters, one NaN score, one +inf score, 4 truly worse.

    Its state records the fitness it was told and how often each slot was selected.
    """

    def init(key, params):
        del key, params
        return {"told": jnp.zeros(SIZE), "selected": jnp.zeros(SIZE, jnp.int32)}

    def ask(key, state, params, batch, active):
        del batch, active
        w = params["w"]
        d = jax.random.normal(key, (SIZE, 3))
        worse = w + RADIUS * d / jnp.linalg.norm(d, axis=1, keepdims=True)
        ws = jnp.where(jnp.arange(SIZE)[:, None] < len(NAN_PARAMS), jnp.nan, worse)
        ws = ws.at[NAN_SCORE].set(jnp.array([-1e4, 0.0, 0.0]))  # finite, but a NaN score
        ws = ws.at[INF_SCORE].set(jnp.array([1e4, 0.0, 0.0]))  # finite, but a +inf score
        return {"w": ws}, state

    def tell(key, state, population, feedback):
        del key, population
        return {
            "told": feedback.fitness,
            "selected": state["selected"] + feedback.selected.astype(jnp.int32),
        }

    return ev3evo.Source(init, ask, tell, SIZE, "faulty")


@pytest.fixture(scope="module")
def faulty():
    engine = ev3evo.EV3(
        [_faulty_source()],
        [ev3evo.metrics.per_example("score", _score)],
        gate=ev3evo.Gate(alpha=0.05),
    )
    e = SIGMA * np.random.default_rng(1).normal(size=(N, 3)).astype(np.float32)
    batch = {"e": jnp.asarray(e)}
    params = {"w": jnp.asarray(TARGET)}  # start at the optimum: every proposal is worse
    return engine, params, batch


def test_nan_and_inf_candidates_are_discarded_counted_and_never_certified(faulty):
    engine, params, batch = faulty
    steps = 40
    result = ev3evo.run(engine, jax.random.key(0), params, batch, batch, steps)
    assert result.status == "finished" and len(result.history) == steps + 1  # + the start
    certified = sum(r["certified"] for r in result.history)
    assert certified == 0
    # 3 NaN-parameter candidates, a NaN score and a +inf score: 5 invalid every step.
    assert all(r["num_invalid"] == 5 and r["num_valid"] == 4 for r in result.history[1:])
    stable_values = [r["stable"]["score"] for r in result.history]
    assert all(b >= a for a, b in itertools.pairwise(stable_values))
    np.testing.assert_array_equal(np.asarray(result.state.stable["w"]), TARGET)
    src = result.state.sources.parts[0]
    bad = [*NAN_PARAMS, NAN_SCORE, INF_SCORE]
    assert np.all(np.asarray(src["told"])[bad] == -np.inf)  # told as the worst possible
    assert np.all(np.isfinite(np.asarray(src["told"])[5:]))
    assert np.all(np.asarray(src["selected"])[bad] == 0)  # never the current model
    assert np.all(np.isfinite(np.asarray(result.state.current["w"])))
    # Something did happen: worse candidates were accepted at times and then rolled back.
    assert any(r["accepted"] for r in result.history)
    assert any(r["rolled_back"] for r in result.history)


def test_a_failing_assessment_stops_the_run_cleanly_with_its_last_checkpoint(faulty, tmp_path):
    """The evaluation batch of step 4 lacks the field the metric reads: the metric cannot run."""
    engine, params, batch = faulty

    def evaluation(key, step):
        return {"other": batch["e"]} if step == 3 else batch

    result = ev3evo.run(engine, jax.random.key(0), params, batch, evaluation, 10,
                        checkpoint_dir=tmp_path, throw=False)
    assert result.status == "failed" and result.steps == 3
    assert "metric 'score' failed on the evaluation batch" in result.error
    assert "last checkpoint: step 3" in result.error
    assert read_checkpoint(tmp_path).step == 3
    with pytest.raises(ValueError, match="metric 'score' failed on the evaluation batch"):
        ev3evo.run(engine, jax.random.key(0), params, batch, evaluation, 10,
                   checkpoint_dir=tmp_path / "again")
    assert read_checkpoint(tmp_path / "again").step == 3  # written before the error propagates


# ----------------------------------------------------------------------------- gradient rollouts
def _poisoned():
    """8 examples, one with a NaN feature: minibatches that draw it give a NaN loss."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    x[5, 1] = np.nan
    y = (np.arange(8) % 2).astype(np.int32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _apply(p, x):
    z = x @ p["w"]
    return jnp.stack([z, -z], axis=-1)


def _adam_count(opt_state):
    return int(opt_state[0].count)


def test_non_finite_rollout_steps_are_skipped_and_do_not_poison_the_optimizer():
    loss = ev3evo.losses.cross_entropy(_apply)
    opt = optax.adam(0.1)
    params = {"w": jnp.ones(3)}
    run = jax.jit(rollout(lambda p, b, data: loss(p, b), opt, steps=12, batch_size=4))
    batch = sampling.prepare(jax.random.key(5), _poisoned(), 4)
    new_params, opt_state, values = run(jax.random.key(0), params, opt.init(params), None, batch)
    values = np.asarray(values)
    finite_steps = int(np.sum(np.isfinite(values)))
    assert 0 < finite_steps < 12  # some minibatches drew the poisoned example, some did not
    assert _adam_count(opt_state) == finite_steps  # only finite steps reached adam's state
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(opt_state))
    assert np.all(np.isfinite(np.asarray(new_params["w"])))
    assert not np.array_equal(np.asarray(new_params["w"]), np.ones(3))  # it did move


def test_the_state_kept_for_the_next_step_stays_finite_when_every_step_is_non_finite():
    nan_loss = lambda p, b: jnp.sum(p["w"]) * jnp.nan
    src = ev3evo.gradient_rollouts([nan_loss], [optax.adam(0.1)], steps=3)
    params = {"w": jnp.ones(3)}
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, _poisoned(), jnp.ones(1, bool))
    np.testing.assert_array_equal(np.asarray(pop["w"][0]), np.ones(3))  # no step was taken
    fb = ev3evo.Feedback(jnp.zeros(1), jnp.ones(1, bool), {"w": pop["w"][0]}, jnp.array(False))
    state = src.tell(jax.random.key(2), state, pop, fb)
    committed = jax.tree.map(lambda x: x[0], state.committed[0])  # the one row
    assert _adam_count(committed) == 0
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(committed))


def test_a_raising_host_source_is_isolated_for_the_step_and_reported():
    """A host source (plain Python, like an external optimizer) raises at its 2nd and 3rd ask:
    those steps go on with the other sources, its slots count as invalid, the history says why."""
    calls = {"ask": 0}

    def init(key, params):
        del key, params
        return {"told": jnp.zeros((), jnp.int32)}

    def ask(key, state, params, batch, active):
        calls["ask"] += 1
        if calls["ask"] in (2, 3):
            raise RuntimeError(f"external optimizer crashed (call {calls['ask']})")
        w = np.asarray(params["w"])[None] + np.array([[0.01], [-0.01]], np.float32)
        return {"w": w}, state

    def tell(key, state, population, feedback):
        return {"told": state["told"] + 1}

    host = ev3evo.Source(init, ask, tell, 2, "external", host=True)
    engine = ev3evo.EV3([host, ev3evo.gaussian(2, 0.05)],
                        [ev3evo.metrics.per_example("score", _score)])
    e = SIGMA * np.random.default_rng(2).normal(size=(N, 3)).astype(np.float32)
    batch = {"e": jnp.asarray(e)}
    result = ev3evo.run(engine, jax.random.key(0), {"w": jnp.zeros(3)}, batch, batch, 4)
    assert result.status == "finished" and result.steps == 4
    steps = result.history[1:]  # after the record of the starting model
    errors = [r["host_errors"] for r in steps]
    assert errors[0] == [] and errors[3] == []
    for step in (1, 2):
        (err,) = errors[step]
        assert err["source"] == "external" and err["phase"] == "ask"
        assert "external optimizer crashed" in err["error"]
        assert steps[step]["num_invalid"] >= 1  # its slots were discarded
        assert steps[step]["winner_source"] in (None, "gaussian")
    assert int(result.state.sources.parts[0]["told"]) == 2  # told only when it had asked
