"""Acceptance rules: when the step's winner may replace the current model.

Each rule is ``(evidence, winner, objectives, alpha) -> bool`` on the selection examples, and
:data:`ACCEPTANCE` maps the names :class:`~ev3evo.adapt.gate.Gate` accepts to them:

* ``"not_worse"``: the upper confidence bound of ``winner − current`` on the primary objective
  is ``≥ 0`` (the winner is not reliably worse);
* ``"better"``: its point estimate is higher;
* ``"lexicographic"``: better than the current model beyond the tolerance on some objective
  with every earlier one tied (within its tolerance), where "better" on a later objective must
  also be significant at ``alpha``: a copy of the current model that is luckier by an example
  or two on the primary objective (a tie) is not accepted for a noise-level gain on the next.

Feasibility comes first, in :func:`ev3evo.adapt.gate.decide`: an infeasible current model is
replaced by any candidate with less constraint violation.

Example::

    from ev3evo.adapt.acceptance import ACCEPTANCE
    assert sorted(ACCEPTANCE) == ["better", "lexicographic", "not_worse"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp

from ..types import Array, Objective


def not_worse(evidence, w: Array, objectives: Sequence[Objective], alpha: float) -> Array:
    """The winner's upper bound against the current model is ``≥ 0`` (primary objective)."""
    del objectives, alpha
    return evidence.vs_current[0].upper[w] >= 0


def better(evidence, w: Array, objectives: Sequence[Objective], alpha: float) -> Array:
    """The winner's point estimate is above the current model's (primary objective)."""
    del objectives, alpha
    return evidence.vs_current[0].diff[w] > 0


def lexicographic(evidence, w: Array, objectives: Sequence[Objective], alpha: float) -> Array:
    """Better beyond the tolerance on an objective with every earlier one tied (see above)."""
    primary = evidence.vs_current[0]
    tol0 = objectives[0].tolerance
    good = primary.diff[w] > tol0
    tied = primary.diff[w] >= -tol0
    for o, cmp in zip(objectives[1:], evidence.vs_current[1:]):
        good = good | (tied & (cmp.pvalue[w] <= alpha))
        tied = tied & (cmp.diff[w] >= -o.tolerance)
    return jnp.asarray(good)


#: name -> rule ``(evidence, winner, objectives, alpha) -> bool``
ACCEPTANCE: dict[str, Callable[..., Array]] = {
    "not_worse": not_worse,
    "better": better,
    "lexicographic": lexicographic,
}
