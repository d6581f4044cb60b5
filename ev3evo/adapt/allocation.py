"""Allocation: how many of the population's slots each source fills next step.

Each source has a static capacity (its ``size``); the engine evaluates a fixed *budget* of
slots per step, at most the total capacity. A source's credit is an exponential moving average
of its rewards (what it contributed in a step, see :class:`Credit` and :func:`winner_credit`); its share of the budget is
a floor ``min_slots`` plus a part of the rest proportional to ``credit + prior``, capped by its
capacity. No source is ever starved: the floor guarantees every source keeps proposing, so one
that starts to win again can recover its share.

The allocator is a pair of pure functions, like an optax transform::

    allocator = proportional(capacities, budget, Allocation())
    state = allocator.init()
    state = allocator.update(state, Credit(reward, won, certified))

Counts are integers chosen by the largest-remainder method. :func:`counts_from_credit` works on
numpy arrays as well as on JAX arrays (under ``jit``): the host loop of
:func:`ev3evo.minimize` shares its local-search slots with it too.

Example::

    import numpy as np
    from ev3evo.adapt.allocation import counts_from_credit
    counts = counts_from_credit(np.array([1.0, 0.0]), np.array([8, 8]), 6, 1, 0.25)
    assert counts.tolist() == [4, 2]
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive_int
from ..types import Array


class Allocation(NamedTuple):
    """Settings of the allocation (static; validated by :meth:`validated`).

    Attributes:
      population_size: slots evaluated per step, shared by the sources; ``None`` uses every
        slot the sources offer (the sum of their sizes). Smaller values make allocation matter.
      min_slots: the floor of slots every source keeps.
      credit_decay: EMA factor of source credit, in ``[0, 1)``.
      credit_prior: pseudo-credit that keeps shares from collapsing, ``> 0``.
    """

    population_size: int | None = None
    min_slots: int = 1
    credit_decay: float = 0.8
    credit_prior: float = 0.25

    def validated(self, capacities) -> Allocation:
        """These settings checked against the sources' capacities; ``population_size`` filled in.

        Raises:
          ValueError, TypeError: a setting out of range, or a budget the sources cannot fill.
        """
        caps = [int(c) for c in capacities]
        capacity = sum(caps)
        budget = capacity if self.population_size is None else check_positive_int(
            self.population_size, "population_size")
        min_slots = check_positive_int(self.min_slots, "min_slots")
        if budget > capacity:
            raise ValueError(
                f"population_size {budget} exceeds the sources' total size {capacity}; give "
                "the sources more slots or lower population_size"
            )
        floor = sum(min(min_slots, c) for c in caps)
        if budget < floor:
            raise ValueError(
                f"population_size {budget} is below the {floor} slots needed to give each of "
                f"the {len(caps)} sources min_slots={min_slots}"
            )
        decay, prior = self.credit_decay, self.credit_prior
        if not (_real(decay) and 0.0 <= decay < 1.0):
            raise ValueError(f"credit_decay must be in [0, 1), got {decay!r}")
        if not (_real(prior) and prior > 0):
            raise ValueError(f"credit_prior must be > 0, got {prior!r}")
        return Allocation(budget, min_slots, float(decay), float(prior))


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class AllocationState(NamedTuple):
    """Credit record and the current slot counts.

    Attributes:
      credit: ``(S,)`` EMA of each source's rewards.
      wins: ``(S,)`` how many accepted winners each source produced (int32).
      certified: ``(S,)`` how many certified winners each source produced (int32).
      counts: ``(S,)`` slots each source fills in the next step (int32).
    """

    credit: Array
    wins: Array
    certified: Array
    counts: Array


class Credit(NamedTuple):
    """What each source contributed in one step.

    Attributes:
      reward: ``(S,)`` float, the reward folded into each source's credit.
      won: ``(S,)`` bool, the source made the accepted winner.
      certified: ``(S,)`` bool, the source made a certified winner.
    """

    reward: Array
    won: Array
    certified: Array


class Allocator(NamedTuple):
    """Pure allocation functions: ``init() -> state`` and ``update(state, credit) -> state``."""

    init: object
    update: object


def _namespace(*arrays):
    """``jax.numpy`` when any input is a JAX array (or a tracer), else ``numpy``."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _largest_remainder(quota, total: int, xp):
    base = xp.floor(quota)
    rest = total - xp.sum(base)
    # Rank of each entry by its fractional part (largest first): the first ``rest`` get one more.
    rank = xp.argsort(xp.argsort(-(quota - base), stable=True), stable=True)
    return (base + (rank < rest).astype(base.dtype)).astype(xp.int32)


def counts_from_credit(credit, capacities, budget: int, min_slots: int, prior: float):
    """Integer slot counts: ``min_slots`` each, the rest proportional to ``credit + prior``.

    Respects capacities by water-filling: sources at capacity give their excess to the others.
    Requires ``budget <= sum(capacities)`` and ``min_slots * S <= budget``. Works on numpy
    arrays (returns numpy) and on JAX arrays (returns JAX, usable under ``jit``).
    """
    xp = _namespace(credit, capacities)
    credit = xp.asarray(credit, xp.float32)
    caps = xp.asarray(capacities).astype(xp.float32)
    alloc = xp.minimum(caps, xp.float32(min_slots))
    weight = credit + xp.float32(prior)
    # At most S rounds: each round either finishes or saturates at least one source.
    for _ in range(int(credit.shape[0])):
        room = caps - alloc
        open_ = room > 0
        remaining = xp.float32(budget) - xp.sum(alloc)
        w = xp.where(open_, weight, xp.float32(0.0))
        w = xp.where(xp.sum(w) > 0, w, open_.astype(xp.float32))
        add = xp.minimum(room, remaining * w / xp.maximum(xp.sum(w), xp.float32(1e-12)))
        alloc = alloc + xp.where(remaining > 1e-6, add, xp.float32(0.0))
    counts = _largest_remainder(alloc, budget, xp)
    return xp.minimum(counts, caps.astype(xp.int32))


def proportional(capacities, budget: int, settings: Allocation) -> Allocator:
    """Slots proportional to an EMA of credit (see the module docstring).

    Args:
      capacities: ``(S,)`` slots each source can fill (its ``size``).
      budget: slots evaluated per step.
      settings: the floor, decay and prior (an :class:`Allocation`).
    """
    caps = np.asarray(capacities, np.int32)
    full = budget >= int(caps.sum())

    def counts(credit):
        if full:  # every slot is evaluated: nothing to share
            return jnp.asarray(caps)
        return counts_from_credit(credit, jnp.asarray(caps), budget, settings.min_slots,
                                  settings.credit_prior)

    def init() -> AllocationState:
        credit = jnp.zeros(caps.shape, jnp.float32)
        zeros = jnp.zeros(caps.shape, jnp.int32)
        return AllocationState(credit, zeros, zeros, counts(credit))

    def update(state: AllocationState, credit: Credit) -> AllocationState:
        decay = settings.credit_decay
        ema = decay * state.credit + (1.0 - decay) * jnp.asarray(credit.reward, jnp.float32)
        return AllocationState(
            ema,
            state.wins + jnp.asarray(credit.won, jnp.int32),
            state.certified + jnp.asarray(credit.certified, jnp.int32),
            counts(ema),
        )

    return Allocator(init, update)


def winner_credit(num_sources: int, winner_source, accepted, certified) -> Credit:
    """The default reward, to the source of the step's winner: 1 for the best candidate of the
    step (even when the gate keeps the current model: the source made the most promising
    proposal), 1 more when it became the current model, 1 more when it was certified.

    Credit from the best candidate alone keeps the allocation learning while acceptance is
    rare (a strict acceptance rule, a hard problem); the other two reward what a source
    contributed to the models the run keeps.
    """
    made = jnp.arange(num_sources) == winner_source
    hit = made & accepted
    reward = made.astype(jnp.float32) * (1.0 + jnp.asarray(accepted, jnp.float32)
                                         + jnp.asarray(hit & certified, jnp.float32))
    return Credit(reward, hit, hit & certified)


def active_mask(counts: Array, source_ids, offsets) -> Array:
    """``(P,)`` bool: slot ``j`` of source ``i`` is active when ``j < counts[i]``."""
    ids = jnp.asarray(source_ids, jnp.int32)
    starts = jnp.asarray(offsets[:-1], jnp.int32)
    position = jnp.arange(ids.shape[0], dtype=jnp.int32) - starts[ids]
    return position < counts[ids]
