"""Certification rules: when the step's winner becomes the new stable model.

A rule is ``(gate, keys, evidence, winner) -> Certification`` (``keys``: one per objective)
built for a :class:`Gate`'s settings by
the factories in :data:`CERTIFICATION` (keyed by ``Gate.correction``):

* **corrected** (``"holm"``, ``"bonferroni"``, ``"none"``): every valid, feasible candidate is
  tested against the stable model on the primary objective, with that multiplicity control
  over the step's candidates (Holm 1979: family-wise error ``≤ alpha`` per step); the winner is
  significant when its hypothesis is rejected. Secondary objectives must not be reliably worse
  than the stable model by more than their tolerance.
* **split** (``"split"``): the winner, already chosen on the even evaluation examples, is tested
  **alone** against the stable model on the odd ones at level ``alpha``: selection and test
  use disjoint examples, so the one test needs no correction however many candidates competed
  (sample splitting). Its point value on *all* examples must also be at least the stable
  model's, so the stable model's reported metric never decreases.
  With ``Gate.certify="lexicographic"``, objectives are ranked and ties within a tolerance
  pass to the next one: with ``O`` objectives the winner is certified through path ``j`` when
  it is non-inferior to the stable model on every objective before ``j`` (lower bound
  ``≥ -tolerance``) and significantly better on objective ``j``; every bound and test of the
  ``O`` paths is at level ``alpha / O`` (Bonferroni over the paths), so the probability of
  certifying a winner that is not lexicographically better stays at most ``alpha``.

Example::

    from ev3evo.adapt.certification import CERTIFICATION
    assert sorted(CERTIFICATION) == ["bonferroni", "holm", "none", "split"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from ..assess import stats as st
from ..assess.stats import compare
from ..types import Array


class Certification(NamedTuple):
    """The certification test of one step's winner.

    Attributes:
      significant: the winner is significantly better than the stable model.
      guards: the other requirements hold (secondary objectives not reliably worse; for the
        split test also: not lower on all the examples, feasible on all the examples).
      pvalue: the p-value of the path that decided (uncorrected).
      gain: the winner's point gain over the stable model on the primary objective, on the
        examples of the test (higher is better).
      needed: the gain that would be significant there at the test's level, given the spread
        of the paired differences (``z·se``, or the bootstrap's equivalent).
    """

    significant: Array
    guards: Array
    pvalue: Array
    gain: Array
    needed: Array


def _secondary_guards(objectives, comparisons, index) -> Array:
    ok = jnp.asarray(True)
    for o, cmp in zip(objectives[1:], comparisons[1:]):
        ok = ok & (cmp.upper[index] >= -o.tolerance)
    return ok


def corrected(reject: Callable[[Array, Array, float], Array]):
    """A rule testing every candidate on all examples, ``reject(pvalues, tested, alpha)``."""

    def certify(gate, keys, evidence, w) -> Certification:
        del keys
        primary = evidence.vs_stable[0]
        p = evidence.valid.shape[0]
        tested = evidence.valid & (evidence.violation[:p] <= 0)
        significant = reject(primary.pvalue[:p], tested, gate.alpha)[w]
        guards = _secondary_guards(evidence.objectives, evidence.vs_stable, w)
        return Certification(significant, guards, primary.pvalue[w], primary.diff[w],
                             primary.diff[w] - primary.lower[w])

    return certify


def split(gate, keys, evidence, w) -> Certification:
    """The winner alone against the stable model on the held-out half (see the module doc)."""
    objectives, metrics = evidence.objectives, evidence.objective_metrics
    stab = evidence.values.shape[0] - 1
    lexi = gate.certify == "lexicographic"
    level = gate.alpha / len(objectives) if lexi else gate.alpha
    tests = [compare(k, m, s[jnp.stack([w, stab])], 1, level, gate.bootstrap)
             for k, m, s in zip(keys, metrics, evidence.held_out)]
    pvalue = tests[0].pvalue[0]
    significant = pvalue <= level
    if lexi:
        tied = jnp.asarray(True)  # non-inferior on every objective before j
        for j in range(1, len(objectives)):
            tied = tied & (tests[j - 1].lower[0] >= -objectives[j - 1].tolerance)
            better = tests[j].pvalue[0] <= level
            pvalue = jnp.where(~significant & tied & better, tests[j].pvalue[0], pvalue)
            significant = significant | (tied & better)
    guards = _secondary_guards(objectives, tests, 0)
    # Never lower the stable model's metric on all the examples, nor certify infeasible.
    full = evidence.full_utilities[0]
    guards = guards & (full[w] >= full[stab]) & (evidence.full_violation[w] <= 0)
    return Certification(significant, guards, pvalue, tests[0].diff[0],
                         tests[0].diff[0] - tests[0].lower[0])


def _bonferroni(pvalues, tested, alpha):
    return tested & (pvalues <= alpha / jnp.maximum(jnp.sum(tested), 1))


def _uncorrected(pvalues, tested, alpha):
    return tested & (pvalues <= alpha)


#: ``Gate.correction`` -> rule ``(gate, keys, evidence, winner) -> Certification``
CERTIFICATION: dict[str, Callable[..., Certification]] = {
    "holm": corrected(lambda pvalues, tested, alpha: st.holm(pvalues, alpha, tested)),
    "bonferroni": corrected(_bonferroni),
    "none": corrected(_uncorrected),
    "split": split,
}

#: corrections that hold the second half of the evaluation examples out of selection
HOLD_OUT = frozenset({"split"})
