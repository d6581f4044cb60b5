"""A timed engine: the same decisions as the fused step, every stage's seconds, their shares."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from _history import untimed

import ev3evo
from ev3evo.timing import STAGES, describe_shares, time_shares

STEPS = 5


def _engine(apply, timed):
    return ev3evo.EV3(
        sources=[ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)],
                                          [optax.adam(0.02)], steps=3, batch_size=64),
                 ev3evo.gaussian(4, sigma=0.02)],
        metrics=[ev3evo.metrics.accuracy(apply)],
        allocation=ev3evo.Allocation(population_size=4),
        timed=timed,
    )


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)
            if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]


@pytest.fixture(scope="module")
def runs(digits_mlp):
    apply, params, train, val = digits_mlp
    return {timed: ev3evo.run(_engine(apply, timed), jax.random.key(0), params, train, val,
                              STEPS) for timed in (False, True)}


def test_a_timed_engine_makes_the_same_decisions(runs):
    fused, timed = runs[False], runs[True]
    assert not fused.engine.timed and timed.engine.timed
    assert hasattr(fused.engine.step, "lower") and len(timed.engine.step.stages) == 3
    assert untimed(timed.history) == untimed(fused.history)
    for a, b in zip(_leaves(timed.state), _leaves(fused.state)):
        np.testing.assert_array_equal(a, b)
    for stage in timed.engine.step.stages:  # each stage compiled once
        assert stage._cache_size() == 1


def test_every_timed_step_records_its_stages_and_the_shares_sum_to_one(runs):
    timed, fused = runs[True], runs[False]
    steps = [r for r in timed.history if not r.get("initial")]
    assert len(steps) == STEPS
    for r in steps:
        assert set(r["stage_seconds"]) == set(STAGES) and min(r["stage_seconds"].values()) > 0
    assert all("stage_seconds" not in r for r in fused.history)
    shares = time_shares(timed.history, timed.seconds)
    assert set(shares) == {*STAGES, "other"} and sum(shares.values()) == pytest.approx(1.0)
    assert all(shares[s] > 0 for s in STAGES), shares
    # which stage costs most is a matter of the machine: benchmarks compare the shares, not tests
    described = describe_shares(shares)
    assert all(f"{s} {100 * shares[s]:.0f}%" in described for s in STAGES), described


def test_time_shares_needs_timed_records(runs):
    with pytest.raises(ValueError, match="timed=True"):
        time_shares(runs[False].history, runs[False].seconds)
    with pytest.raises(ValueError, match="positive"):
        time_shares(runs[True].history, 0.0)


def test_a_timed_engine_cannot_be_sharded(digits_mlp):
    apply = digits_mlp[0]
    mesh = ev3evo.parallel.population_mesh()
    with pytest.raises(ValueError, match="timed=False"):
        ev3evo.EV3([ev3evo.gaussian(4, 0.1)], [ev3evo.metrics.accuracy(apply)], mesh=mesh,
                   timed=True)
