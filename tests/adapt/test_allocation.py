"""Allocation of population slots: budget, capacities, floors, and a shift toward credit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.adapt import allocation as alloc

# budget and min_slots are static (Python ints); one compiled program per combination.
counts_from_credit = jax.jit(alloc.counts_from_credit, static_argnums=(2, 3, 4))


@pytest.mark.parametrize(
    "capacities, budget, min_slots",
    [([8, 8, 8, 8], 12, 1), ([2, 10, 3, 20], 20, 2), ([1, 16, 4, 4], 9, 1), ([5, 5, 5, 5], 20, 3)],
)
def test_counts_sum_to_budget_within_capacity_and_floor(capacities, budget, min_slots):
    caps = np.asarray(capacities, np.int32)
    rng = np.random.default_rng(budget)
    for trial in range(25):
        credit = rng.exponential(size=4).astype(np.float32) * rng.integers(0, 2, 4)
        if trial == 0:
            credit = np.array([50.0, 0, 0, 0], np.float32)  # one source takes all it can
        counts = np.asarray(counts_from_credit(jnp.asarray(credit), caps, budget, min_slots, 0.25))
        assert counts.sum() == budget, (credit, counts)
        assert np.all(counts <= caps), (credit, counts)
        assert np.all(counts >= np.minimum(caps, min_slots)), (credit, counts)


def test_counts_shift_toward_credit():
    caps = np.full(3, 10, np.int32)
    even = np.asarray(counts_from_credit(jnp.zeros(3), caps, 12, 1, 0.25))
    np.testing.assert_array_equal(even, [4, 4, 4])
    skewed = np.asarray(counts_from_credit(jnp.array([2.0, 0.0, 0.0]), caps, 12, 1, 0.25))
    assert skewed[0] == skewed.max() and skewed[0] >= 8 and skewed.min() >= 1
    # Monotone: more credit never means fewer slots.
    previous = 0
    for c in [0.0, 0.1, 0.5, 1.0, 3.0]:
        n = int(counts_from_credit(jnp.array([c, 0.5, 0.5]), caps, 12, 1, 0.25)[0])
        assert n >= previous
        previous = n


def test_counts_from_credit_on_numpy_equals_jax():
    rng = np.random.default_rng(0)
    caps = np.array([3, 7, 2, 9], np.int32)
    for n in (1, 4, 9, 21):
        credit = rng.exponential(size=4).astype(np.float32)
        host = alloc.counts_from_credit(credit, caps, n, 0, 0.1)
        assert isinstance(host, np.ndarray)
        np.testing.assert_array_equal(host, np.asarray(counts_from_credit(
            jnp.asarray(credit), jnp.asarray(caps), n, 0, 0.1)))


def test_update_credits_the_winner_and_never_starves():
    caps = np.array([8, 8], np.int32)
    allocator = alloc.proportional(caps, 8, alloc.Allocation(8, 2, 0.8, 0.25))
    state = allocator.init()
    np.testing.assert_array_equal(state.counts, [4, 4])
    update = jax.jit(allocator.update)

    def step(state, winner, accepted, certified):
        credit = alloc.winner_credit(2, jnp.int32(winner), jnp.bool_(accepted),
                                     jnp.bool_(certified))
        return update(state, credit)

    history = []
    for _ in range(15):  # source 0 wins and is certified every step
        state = step(state, 0, True, True)
        history.append(np.asarray(state.counts))
    history = np.stack(history)
    assert np.all(history.sum(1) == 8) and np.all(history >= 2)
    assert history[-1, 0] == 6 and history[-1, 1] == 2  # as much as the floor of 1 allows
    np.testing.assert_array_equal(state.wins, [15, 0])
    np.testing.assert_array_equal(state.certified, [15, 0])
    # A rejected winner earns nothing; then source 1 recovers once it wins.
    for _ in range(15):
        state = step(state, 1, True, False)
    assert int(state.counts[1]) > int(state.counts[0])
    np.testing.assert_array_equal(state.wins, [15, 15])
    np.testing.assert_array_equal(state.certified, [15, 0])
    before = state
    state = step(state, 0, False, False)
    np.testing.assert_array_equal(state.wins, before.wins)  # not accepted: not a win...
    assert float(state.credit[0]) > float(before.credit[0])  # ...but the best candidate counts


def test_reward_grows_with_what_the_winner_became():
    rewards = [float(alloc.winner_credit(2, jnp.int32(0), jnp.bool_(a), jnp.bool_(c)).reward[0])
               for a, c in [(False, False), (True, False), (True, True), (False, True)]]
    assert rewards == [1.0, 2.0, 3.0, 1.0]  # certification counts only for an accepted winner
    none = alloc.winner_credit(2, jnp.int32(-1), jnp.bool_(False), jnp.bool_(False))
    assert float(jnp.sum(none.reward)) == 0.0


@pytest.mark.parametrize(
    "settings, message",
    [
        (alloc.Allocation(population_size=40), "exceeds the sources' total size 16"),
        (alloc.Allocation(population_size=1), "below the 2 slots"),
        (alloc.Allocation(credit_decay=1.0), "credit_decay"),
        (alloc.Allocation(credit_prior=0.0), "credit_prior"),
        (alloc.Allocation(min_slots=0), "min_slots"),
    ],
)
def test_settings_are_validated_against_the_capacities(settings, message):
    with pytest.raises((ValueError, TypeError), match=message):
        settings.validated([8, 8])
    assert alloc.Allocation().validated([8, 8]).population_size == 16


def test_active_mask():
    mask = alloc.active_mask(jnp.array([2, 0, 3]), np.array([0, 0, 0, 1, 1, 2, 2, 2, 2]),
                             (0, 3, 5, 9))
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 0, 1, 1, 1, 0])
