"""``run()`` under SIGINT and SIGTERM: the step in progress completes, the run stops before the
next one with its final checkpoint, and resuming ends as the uninterrupted run, bit for bit.

Signals are real: ``signal.raise_signal`` delivers them to this process while a step is in
progress (inside the training-batch function the step calls) or between a step and its
checkpoint (inside a callback).
"""

from __future__ import annotations

import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _history import untimed

import ev3evo
from ev3evo import interrupts
from ev3evo.io import read_checkpoint

STEPS = 8


def _leaves(state):
    out = []
    for x in jax.tree.leaves(jax.device_get(state)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def _assert_same(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def problem():
    from _problems import linear_two_class

    batch, apply = linear_two_class()
    engine = ev3evo.EV3(
        [ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)], [optax.adam(0.05)],
                                  steps=2, batch_size=16),
         ev3evo.gaussian(3, sigma=0.1)],
        [ev3evo.metrics.neg_loss(apply)],
        allocation=ev3evo.Allocation(population_size=4),
    )
    params = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    key = jax.random.key(11)
    reference = ev3evo.run(engine, key, params, batch, batch, STEPS)
    return engine, params, batch, key, reference


def _signal_during_step(batch, at: int, signum: int):
    """A training-batch function that delivers ``signum`` while step ``at`` is being built."""

    def train(key, step):
        if step == at:
            signal.raise_signal(signum)
        return batch

    return train


class _SignalAfterStep(ev3evo.Callback):
    def __init__(self, at: int, signum: int):
        self.at, self.signum, self.ended = at, signum, None

    def on_step(self, record, state, engine):
        if record["step"] == self.at:
            signal.raise_signal(self.signum)

    def on_end(self, result):
        self.ended = result.status


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_step_stops_after_it_with_a_checkpoint(problem, tmp_path, signum):
    engine, params, batch, key, reference = problem
    result = ev3evo.run(engine, key, params, _signal_during_step(batch, 2, signum), batch,
                        STEPS, checkpoint_dir=tmp_path, checkpoint_every=100)
    assert result.status == "interrupted" and result.signal == signal.Signals(signum).name
    assert result.steps == 3 and int(result.state.step) == 3  # step index 2 was completed
    assert read_checkpoint(tmp_path).step == 3  # written although checkpoint_every=100
    assert untimed(result.history) == untimed(reference.history[:4])  # the start and 3 steps
    resumed = ev3evo.run(engine, key, params, batch, batch, STEPS, checkpoint_dir=tmp_path,
                         resume=True)
    assert resumed.status == "finished" and resumed.steps == STEPS - 3
    assert untimed(resumed.history) == untimed(reference.history)
    _assert_same(resumed.state, reference.state)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_signal_between_a_step_and_its_checkpoint_keeps_both(problem, tmp_path):
    engine, params, batch, key, reference = problem
    callback = _SignalAfterStep(5, signal.SIGTERM)
    result = ev3evo.run(engine, key, params, batch, batch, STEPS, callbacks=[callback],
                        checkpoint_dir=tmp_path, checkpoint_every=2)
    assert result.status == callback.ended == "interrupted"
    saved = read_checkpoint(tmp_path)
    assert saved.step == 5 and result.steps == 5  # step 5 was not a multiple of every=2
    assert untimed(saved.history) == untimed(reference.history[:6])  # the start and 5 steps


def test_under_a_stopping_scope_run_raises_interrupted_after_saving(problem, tmp_path):
    """What the ev3evo command sees: Interrupted naming the step and the checkpoint."""
    engine, params, batch, key, _ = problem
    callback = _SignalAfterStep(2, signal.SIGINT)
    with interrupts.deferred(stop=True), pytest.raises(interrupts.Interrupted) as e:
        ev3evo.run(engine, key, params, batch, batch, STEPS, callbacks=[callback],
                   checkpoint_dir=tmp_path)
    assert e.value.exit_code == 130
    assert str(e.value) == f"interrupted by SIGINT at step 2; last checkpoint: step 2 in {tmp_path}"
    assert callback.ended == "interrupted" and read_checkpoint(tmp_path).step == 2


def test_a_signal_during_the_last_step_leaves_the_run_finished(problem):
    engine, params, batch, key, reference = problem
    result = ev3evo.run(engine, key, params, _signal_during_step(batch, STEPS - 1,
                                                                 signal.SIGINT), batch, STEPS)
    assert result.status == "finished" and result.signal == "SIGINT"
    _assert_same(result.state, reference.state)


def test_without_checkpoints_the_interrupted_state_is_in_the_result(problem):
    engine, params, batch, key, reference = problem
    result = ev3evo.run(engine, key, params, _signal_during_step(batch, 0, signal.SIGINT),
                        batch, STEPS)
    assert result.status == "interrupted" and result.steps == 1
    continued = ev3evo.run(engine, key, None, batch, batch, STEPS, state=result.state)
    _assert_same(continued.state, reference.state)
