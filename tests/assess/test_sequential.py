"""Anytime-valid betting tests: the error level holds under optional stopping; power grows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.assess import sequential as seq

ALPHA, TRIALS, BATCHES, N = 0.05, 2000, 40, 100
SLACK = 3 * np.sqrt(ALPHA * (1 - ALPHA) / TRIALS)


def _paths(mean_gain: float, key, base: float = 0.1):
    """Per trial and batch: did the test reject by then (checked after every batch)?

    Differences are ``1[candidate right] − 1[stable right]`` on examples where the two
    disagree (a fraction ``2·base`` of them), shifted by ``mean_gain`` in expectation.
    """

    def trial(k):
        def batch(state, kb):
            u = jax.random.uniform(kb, (N,))
            win = u < base + mean_gain / 2
            loss = (u >= base + mean_gain / 2) & (u < 2 * base)
            d = win.astype(jnp.float32) - loss.astype(jnp.float32)
            state = seq.update(state, d, ALPHA)
            return state, seq.rejected(state, ALPHA)

        _, rejected = jax.lax.scan(batch, seq.init(), jax.random.split(k, BATCHES))
        return jnp.cumsum(rejected) > 0  # rejected at some look so far

    return np.asarray(jax.jit(jax.vmap(trial))(jax.random.split(key, TRIALS)))


@pytest.mark.parametrize("gain", [0.0, -0.02])
def test_the_false_rejection_rate_holds_at_every_look(gain):
    ever = _paths(gain, jax.random.key(1))[:, -1].mean()
    print(f"\n[betting, E[d]={gain}] {TRIALS} trials, {BATCHES} looks of {N}: "
          f"ever rejected {ever:.4f}")
    assert ever <= ALPHA + SLACK


def test_power_grows_with_the_evidence():
    rejected_by = _paths(0.03, jax.random.key(2)).mean(axis=0)  # after each batch
    print(f"\n[betting, E[d]=0.03] rejected by batch 5/10/20/40: "
          f"{rejected_by[4]:.3f} {rejected_by[9]:.3f} {rejected_by[19]:.3f} {rejected_by[39]:.3f}")
    assert np.all(np.diff(rejected_by) >= 0)
    assert rejected_by[4] < 0.5 < rejected_by[-1]


def test_masked_observations_are_not_bet_on():
    d = jnp.array([1.0, -1.0, 1.0, 1.0])
    mask = jnp.array([True, False, True, True])
    a = seq.update(seq.init(), d, ALPHA, mask=mask)
    b = seq.update(seq.init(), d[mask], ALPHA)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    assert float(seq.pvalue(a)) < 1.0
