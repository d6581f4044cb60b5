"""Anytime-valid tests by betting: evidence that accumulates over fresh batches.

A fixed-sample test spends its error level once; a run that looks at its data every step and
stops when it likes needs a test whose guarantee holds at *every* time at once. Betting gives
one (Waudby-Smith & Ramdas 2024, "Estimating means of bounded random variables by betting";
Shafer & Vovk's game-theoretic probability): to test ``H0: E[d] ≤ 0`` for paired differences
``d ∈ [-1, 1]`` (e.g. ``1[candidate right] − 1[stable right]``), a gambler starts with wealth 1
and bets a fraction ``λ_i ∈ [0, 1)`` of it on each observation,

    K_t = Π_{i ≤ t} (1 + λ_i d_i),

where ``λ_i`` depends only on ``d_1 … d_{i-1}`` (predictable). Under ``H0`` every factor has
conditional expectation ``≤ 1``, so ``K`` is a non-negative supermartingale and Ville's
inequality gives ``P(sup_t K_t ≥ 1/α) ≤ α``: rejecting as soon as the wealth reaches ``1/α`` is
a level-``α`` test however long the run goes and whenever it looks. Evidence from every fresh
batch adds up, so a longer run certifies a smaller gain.

The bets are Waudby-Smith & Ramdas's *predictable plug-in empirical-Bernstein* fractions, in
their one-sided form:

    λ_i = min( sqrt( 2 log(1/α) / (σ̂²_{i-1} · i · log(1 + i)) ), cap ),

with ``σ̂²`` a running variance estimate of the differences seen so far (prior ``1/4``): they
bet more when the differences are steady.
Within a batch the running statistics are prefix sums, so a batch of ``n`` observations costs
``O(n)`` vectorized work.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.assess import sequential as seq
    state = seq.init()
    for t in range(20):                 # 20 fresh batches, each 5% better on average
        d = (jax.random.uniform(jax.random.key(t), (200,)) < 0.15).astype(jnp.float32)
        d = d - (jax.random.uniform(jax.random.key(100 + t), (200,)) < 0.10)
        state = seq.update(state, d, alpha=0.05)
    assert bool(seq.rejected(state, 0.05))
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ..types import Array

#: prior variance of the differences (the largest a [0, 1] variable can have)
PRIOR_VARIANCE = 0.25


class BettingState(NamedTuple):
    """The gambler's record (every field may carry leading axes, one test per entry).

    Attributes:
      log_wealth: ``log K_t``.
      count: observations so far.
      total: their sum.
      total_sq: the sum of their squares.
    """

    log_wealth: Array
    count: Array
    total: Array
    total_sq: Array


def init(shape: tuple = ()) -> BettingState:
    """A fresh test (wealth 1) for each entry of ``shape``."""
    zero = jnp.zeros(shape, jnp.float32)
    return BettingState(zero, zero, zero, zero)


def bets(state: BettingState, d: Array, alpha: float, cap: float = 0.5) -> Array:
    """The predictable fractions ``λ_i`` for the observations ``d`` (``(..., n)``)."""
    previous = jnp.cumsum(d, axis=-1) - d  # sums of the observations before each one
    previous_sq = jnp.cumsum(d * d, axis=-1) - d * d
    i = state.count[..., None] + jnp.arange(1, d.shape[-1] + 1, dtype=jnp.float32)
    s1 = state.total[..., None] + previous
    s2 = state.total_sq[..., None] + previous_sq
    seen = i - 1.0
    mean = s1 / jnp.maximum(seen, 1.0)
    variance = (PRIOR_VARIANCE + jnp.maximum(s2 - seen * mean**2, 0.0)) / i
    fraction = jnp.sqrt(2.0 * jnp.log(1.0 / alpha) / (variance * i * jnp.log1p(i)))
    return jnp.minimum(fraction, cap)


def update(state: BettingState, d: Array, alpha: float, cap: float = 0.5,
           mask: Array | None = None) -> BettingState:
    """The test after betting on a fresh batch of differences ``d`` in ``[-1, 1]``.

    Args:
      state: the test so far.
      d: ``(..., n)`` paired differences (values outside ``[-1, 1]`` are clipped).
      alpha: the level the bets are tuned for (the rejection threshold is separate).
      cap: the largest fraction bet (``< 1`` keeps every factor positive).
      mask: optional ``(..., n)`` bool, observations to count (the others are not bet on).
    """
    d = jnp.clip(jnp.asarray(d, jnp.float32), -1.0, 1.0)
    if mask is not None:
        d = jnp.where(mask, d, 0.0)
    lam = bets(state, d, alpha, cap)
    if mask is not None:
        lam = jnp.where(mask, lam, 0.0)
    counted = d.shape[-1] if mask is None else jnp.sum(mask, axis=-1)
    return BettingState(
        state.log_wealth + jnp.sum(jnp.log1p(lam * d), axis=-1),
        state.count + counted,
        state.total + jnp.sum(d, axis=-1),
        state.total_sq + jnp.sum(d * d, axis=-1),
    )


def rejected(state: BettingState, alpha: float) -> Array:
    """Whether the wealth has reached ``1/alpha`` (``H0: E[d] ≤ 0`` rejected at level alpha)."""
    return state.log_wealth >= jnp.log(1.0 / alpha)


def pvalue(state: BettingState) -> Array:
    """The anytime-valid p-value ``min(1, 1/K_t)`` (valid at any stopping time)."""
    return jnp.minimum(1.0, jnp.exp(-state.log_wealth))
