"""Allocation: how many of the population's slots each source fills next step.

Each source has a static capacity (its ``size``); the engine evaluates a fixed *budget* of
slots per step, at most the total capacity. A source's credit is an exponential moving average
of its rewards (1 when it made the accepted winner, 1 more when that winner was certified);
its share of the budget is a floor ``min_slots`` plus a part of the rest proportional to
``credit + prior``, capped by its capacity. No source is ever starved: the floor guarantees
every source keeps proposing, so one that starts to win again can recover its share.

Counts are integers chosen by the largest-remainder method, computed under ``jit``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ..types import Array


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


def _largest_remainder(quota: Array, total: int) -> Array:
    base = jnp.floor(quota)
    rest = total - jnp.sum(base)
    order = jnp.argsort(-(quota - base))
    bonus = jnp.zeros_like(base).at[order].set((jnp.arange(quota.shape[0]) < rest).astype(base.dtype))
    return (base + bonus).astype(jnp.int32)


def counts_from_credit(
    credit: Array, capacities: Array, budget: int, min_slots: int, prior: float
) -> Array:
    """Integer slot counts: ``min_slots`` each, the rest proportional to ``credit + prior``.

    Respects capacities by water-filling: sources at capacity give their excess to the others.
    Requires ``budget <= sum(capacities)`` and ``min_slots * S <= budget``.
    """
    s = credit.shape[0]
    caps = capacities.astype(jnp.float32)
    floor = jnp.minimum(caps, float(min_slots))
    weight = credit + prior
    alloc = floor
    # At most S rounds: each round either finishes or saturates at least one source.
    for _ in range(s):
        room = caps - alloc
        open_ = room > 0
        remaining = budget - jnp.sum(alloc)
        w = jnp.where(open_, weight, 0.0)
        w = jnp.where(jnp.sum(w) > 0, w, open_.astype(jnp.float32))
        add = jnp.minimum(room, remaining * w / jnp.maximum(jnp.sum(w), 1e-12))
        alloc = alloc + jnp.where(remaining > 1e-6, add, 0.0)
    counts = _largest_remainder(alloc, budget)
    return jnp.minimum(counts, capacities.astype(jnp.int32))


def init(capacities, budget: int, min_slots: int, prior: float) -> AllocationState:
    """Uniform credit; counts proportional to capacity within the budget."""
    caps = jnp.asarray(capacities, jnp.int32)
    s = caps.shape[0]
    credit = jnp.zeros(s, jnp.float32)
    zeros = jnp.zeros(s, jnp.int32)
    # Before any evidence, share the budget in proportion to what each source offers.
    counts = counts_from_credit(credit, caps, budget, min_slots, prior) if budget < int(
        jnp.sum(caps)
    ) else caps
    return AllocationState(credit, zeros, zeros, counts)


def update(
    state: AllocationState,
    winner_source: Array,
    accepted: Array,
    certified: Array,
    capacities,
    budget: int,
    min_slots: int,
    prior: float,
    decay: float,
) -> AllocationState:
    """Credits the winning source and recomputes the counts."""
    caps = jnp.asarray(capacities, jnp.int32)
    s = caps.shape[0]
    hit = (jnp.arange(s) == winner_source) & accepted
    reward = hit.astype(jnp.float32) * (1.0 + certified.astype(jnp.float32))
    credit = decay * state.credit + (1.0 - decay) * reward
    counts = counts_from_credit(credit, caps, budget, min_slots, prior)
    return AllocationState(
        credit,
        state.wins + hit.astype(jnp.int32),
        state.certified + (hit & certified).astype(jnp.int32),
        counts,
    )


def active_mask(counts: Array, source_ids, offsets) -> Array:
    """``(P,)`` bool: slot ``j`` of source ``i`` is active when ``j < counts[i]``."""
    ids = jnp.asarray(source_ids, jnp.int32)
    starts = jnp.asarray(offsets[:-1], jnp.int32)
    position = jnp.arange(ids.shape[0], dtype=jnp.int32) - starts[ids]
    return position < counts[ids]
