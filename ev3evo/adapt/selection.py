"""Winner selection: constraint violations, utilities, and the lexicographic best candidate.

Arms are laid out as ``[candidate_0 … candidate_{P-1}, current, stable]``. Among valid
candidates (active, finite parameters, finite scores) the winner is one with the least total
constraint violation, and among those the lexicographic best over the objectives, where values
within an objective's tolerance of the best count as ties and pass to the next objective.

Example::

    import jax.numpy as jnp
    from ev3evo.adapt.selection import lexicographic_winner
    utilities = jnp.array([[0.90, 0.91, 0.80],     # accuracy
                           [-0.3, -0.5, -0.1]])    # fidelity
    # 0.90 and 0.91 tie within 0.02 on accuracy: fidelity picks candidate 0.
    assert int(lexicographic_winner(utilities, [0.02, 0.0], jnp.ones(3, bool))) == 0
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from ..assess.metrics import utility
from ..types import Array, Constraint, Metric

# A rounding allowance of a few float32 ulps: a boundary written in decimal (accuracy 0.79
# against 0.80 with tolerance 0.01) must count as a tie, as it does on paper.
ROUNDING = 1e-6


def metric_values(metrics: Sequence[Metric], stats: Sequence[Array]) -> Array:
    """``(A, M)`` metric values of every arm from per-metric ``(A, N, k)`` statistics."""
    return jnp.stack([m.aggregate(jnp.mean(s, axis=1)) for m, s in zip(metrics, stats)], axis=1)


def utilities(objective_metrics: Sequence[Metric], values: Array, index: dict[str, int]) -> Array:
    """``(O, A)`` higher-is-better utilities of the objectives, ``-inf`` where not finite."""
    u = jnp.stack([utility(m, values[:, index[m.name]]) for m in objective_metrics])
    return jnp.where(jnp.isfinite(u), u, -jnp.inf)


def violations(values: Array, index: dict[str, int], constraints: Sequence[Constraint],
               examples: int | None = None, margins: Sequence[Array] | None = None) -> Array:
    """``(A,)`` sum of constraint violations (0 where every constraint holds).

    With ``examples`` (the number of examples the values come from), a value within half an
    example of the threshold (``0.5 / examples``) meets it: rates are counts divided by the
    number of examples, and a threshold met by exactly its count (396 of 400 for ``>= 0.99``)
    must not fail on float rounding (396 / 400 is 0.98999995 in float32).

    ``margins``: per constraint, ``(A,)`` amounts each arm must clear the threshold by (from
    :func:`constraint_margins`); a value short of that margin violates by the shortfall.
    """
    slack = 0.0 if not examples else 0.5 / examples
    total = jnp.zeros(values.shape[0], values.dtype)
    for i, c in enumerate(constraints):
        gap = c.gap(values[:, index[c.metric]])
        if margins is not None:
            gap = gap + margins[i]
        total = total + jnp.where(gap > slack, gap, 0.0)
    return total


def constraint_margins(metrics: Sequence[Metric], stats: Sequence[Array], index: dict[str, int],
                       constraints: Sequence[Constraint], z: float) -> list[Array]:
    """Per constraint, ``(A,)`` margins of ``z`` standard errors of each arm's metric value.

    A candidate selected as feasible on some examples tends to sit at the threshold there and
    miss it on others (selection favours whatever the noise flattered). Asking the selection
    examples for the one-sided bound ``value - z·se`` instead keeps the selected models inside
    the constraint elsewhere too. The standard error is the per-example scores' over
    ``sqrt(N)`` for a decomposable metric (a mean); a metric that is not (ECE, macro-F1) gets
    no margin.

    Example::

        import jax.numpy as jnp
        from ev3evo.adapt.selection import constraint_margins
        from ev3evo.assess.metrics import per_example
        from ev3evo.types import Constraint
        acc = per_example("acc", lambda params, batch: batch)
        hits = jnp.zeros((1, 100, 1)).at[0, :60].set(1.0)       # 0.6 on 100 examples
        (m,) = constraint_margins([acc], [hits], {"acc": 0}, [Constraint("acc", ">=", 0.5)], 2.0)
        assert abs(float(m[0]) - 2.0 * (0.24 / 100) ** 0.5) < 1e-3
    """
    margins = []
    for c in constraints:
        metric, s = metrics[index[c.metric]], stats[index[c.metric]]
        if metric.decomposable and z > 0:
            n = s.shape[1]
            margins.append(z * jnp.std(s[..., 0], axis=1) / jnp.sqrt(jnp.maximum(n, 1)))
        else:
            margins.append(jnp.zeros(s.shape[0], s.dtype))
    return margins


def lexicographic_winner(utilities: Array, tolerances: Sequence[float], eligible: Array) -> Array:
    """Index of the lexicographic best among ``eligible`` (``-1`` if none).

    Args:
      utilities: ``(O, P)`` higher-is-better values, one row per objective in priority order.
      tolerances: ties within this much of the best on each objective pass to the next one
        (the bound is inclusive, up to float32 rounding).
      eligible: ``(P,)`` bool.
    """
    keep = eligible
    for o, tol in enumerate(tolerances):
        u = jnp.where(keep, utilities[o], -jnp.inf)
        best = jnp.max(u)
        slack = tol + ROUNDING * jnp.maximum(1.0, jnp.abs(best))
        keep = keep & (u >= best - slack)
    final = jnp.where(keep, utilities[-1], -jnp.inf)
    # Among exact ties on the last objective, prefer the best primary value.
    final_best = keep & (final >= jnp.max(final))
    winner = jnp.argmax(jnp.where(final_best, utilities[0], -jnp.inf))
    return jnp.where(jnp.any(eligible), winner, -1).astype(jnp.int32)


def least_violation_winner(utilities: Array, tolerances: Sequence[float], valid: Array,
                           violation: Array) -> Array:
    """The lexicographic best among the valid candidates with the least violation (``-1``)."""
    least = jnp.min(jnp.where(valid, violation, jnp.inf))
    return lexicographic_winner(utilities, tolerances, valid & (violation <= least))
