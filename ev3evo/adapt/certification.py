"""Certification rules: when the step's winner becomes the new stable model.

A rule is ``(gate, keys, evidence, winner, state) -> (Certification, state)`` (``keys``: one
per objective; ``state``: what a rule keeps between steps, ``()`` for the stateless ones) built for a :class:`Gate`'s settings by
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
* **fresh** (``"fresh"``): as the split gate, but the test runs on a batch drawn afresh for
  the step (``Evaluation.fresh``, e.g. thousands of teacher-labelled transfer examples), on
  the gate's *evidence* metric (``Gate.evidence``, a per-example score in ``[0, 1]`` such as
  agreement with the teacher): the winner, chosen without these examples, is tested alone at
  level ``alpha``. The objectives must not be reliably worse than the stable model on the
  held-out validation half (upper bound ``≥ -tolerance``), nor lower on all of it.
* **sequential** (``"sequential"``): evidence that accumulates. A *challenger* (the current
  model, frozen) is compared with the stable model on every step's fresh batch by an
  anytime-valid betting test (:mod:`ev3evo.assess.sequential`): it is certified as soon as its
  wealth reaches ``1/alpha`` (with the guards of ``"fresh"``), however many steps that takes,
  so a long run certifies a smaller gain than one fresh batch can. After ``Gate.period``
  steps, or a certification, the current model becomes the next challenger (a new test at
  level ``alpha``): every challenger's false-certification probability is at most ``alpha``.

Example::

    from ev3evo.adapt.certification import CERTIFICATION
    assert sorted(CERTIFICATION) == ["bonferroni", "fresh", "holm", "none", "sequential", "split"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from .. import _tree
from ..assess import sequential as seq
from ..assess import stats as st
from ..assess.stats import compare
from ..types import Array


class Certification(NamedTuple):
    """The certification test of one step.

    Attributes:
      significant: the tested arm is significantly better than the stable model.
      guards: the other requirements hold (secondary objectives not reliably worse; for the
        held-out tests also: not lower on all the examples, feasible on all the examples).
      pvalue: the p-value of the path that decided (uncorrected; anytime-valid for
        ``"sequential"``).
      gain: the tested arm's point gain over the stable model on the test's metric, on the
        examples of the test (higher is better).
      needed: the gain that would be significant there at the test's level, given the spread
        of the paired differences (``z·se``, or the bootstrap's equivalent).
      arm: the arm that becomes the stable model if certified (the winner, or the
        challenger of ``"sequential"``).
    """

    significant: Array
    guards: Array
    pvalue: Array
    gain: Array
    needed: Array
    arm: Array


class SequentialState(NamedTuple):
    """What ``"sequential"`` keeps between steps (its challenger's parameters live in the
    engine state).

    Attributes:
      test: the challenger's betting test against the stable model.
      age: steps the challenger has been tested.
      active: whether a challenger is under test.
    """

    test: seq.BettingState
    age: Array
    active: Array


def sequential_init() -> SequentialState:
    return SequentialState(seq.init(), jnp.zeros((), jnp.int32), jnp.zeros((), bool))


def _secondary_guards(objectives, comparisons, index) -> Array:
    ok = jnp.asarray(True)
    for o, cmp in zip(objectives[1:], comparisons[1:]):
        ok = ok & (cmp.upper[index] >= -o.tolerance)
    return ok


def _stable(evidence) -> int:
    return evidence.valid.shape[0] + 1  # arms: [candidates, current, stable, ...]


def corrected(reject: Callable[[Array, Array, float], Array]):
    """A rule testing every candidate on all examples, ``reject(pvalues, tested, alpha)``."""

    def certify(gate, keys, evidence, w, state):
        del keys
        primary = evidence.vs_stable[0]
        p = evidence.valid.shape[0]
        tested = evidence.valid & (evidence.violation[:p] <= 0)
        significant = reject(primary.pvalue[:p], tested, gate.alpha)[w]
        guards = _secondary_guards(evidence.objectives, evidence.vs_stable, w)
        return Certification(significant, guards, primary.pvalue[w], primary.diff[w],
                             primary.diff[w] - primary.lower[w], w), state

    return certify


def _full_guards(evidence, arm) -> Array:
    """Never lower the stable model's primary value on all the examples, nor certify an
    infeasible model."""
    full, stab = evidence.full_utilities[0], _stable(evidence)
    return (full[arm] >= full[stab]) & (evidence.full_violation[arm] <= 0)


def split(gate, keys, evidence, w, state):
    """The winner alone against the stable model on the held-out half (see the module doc)."""
    objectives, metrics = evidence.objectives, evidence.objective_metrics
    stab = _stable(evidence)
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
    guards = _secondary_guards(objectives, tests, 0) & _full_guards(evidence, w)
    return Certification(significant, guards, pvalue, tests[0].diff[0],
                         tests[0].diff[0] - tests[0].lower[0], w), state


def _held_out_guards(gate, keys, evidence, arm) -> Array:
    """Every objective not reliably worse than the stable model on the held-out half, and the
    full-data guards."""
    stab = _stable(evidence)
    ok = _full_guards(evidence, arm)
    for k, o, m, s in zip(keys, evidence.objectives, evidence.objective_metrics,
                          evidence.held_out):
        test = compare(k, m, s[jnp.stack([arm, stab])], 1, gate.alpha, gate.bootstrap)
        ok = ok & (test.upper[0] >= -o.tolerance)
    return ok


def fresh(gate, keys, evidence, w, state):
    """The winner against the stable model on the step's fresh batch (see the module doc)."""
    u = evidence.fresh  # (A, N) evidence scores
    stab = _stable(evidence)
    test = st.paired_normal(u[w][None], u[stab], gate.alpha)
    guards = _held_out_guards(gate, keys, evidence, w)
    return Certification(test.pvalue[0] <= gate.alpha, guards, test.pvalue[0], test.diff[0],
                         test.diff[0] - test.lower[0], w), state


def sequential(gate, keys, evidence, w, state: SequentialState):
    """The challenger's accumulated evidence against the stable model (see the module doc)."""
    del w
    u = evidence.fresh
    stab, challenger = _stable(evidence), _stable(evidence) + 1
    d = u[challenger] - u[stab]
    updated = seq.update(state.test, d, gate.alpha)
    test = _tree.where(state.active, updated, state.test)
    significant = state.active & seq.rejected(test, gate.alpha)
    guards = _held_out_guards(gate, keys, evidence, challenger)
    age = jnp.where(state.active, state.age + 1, 0).astype(jnp.int32)
    gain = jnp.where(test.count > 0, test.total / jnp.maximum(test.count, 1.0), 0.0)
    certification = Certification(significant, guards, seq.pvalue(test), gain,
                                  _needed(test, gate.alpha), jnp.asarray(challenger, jnp.int32))
    # The challenger keeps its test until certified or ``period`` steps old; the engine then
    # freezes the current model as the next one (a fresh test).
    keep = state.active & ~(significant & guards) & (age < gate.period)
    return certification, SequentialState(
        _tree.where(keep, test, seq.init()), jnp.where(keep, age, 0).astype(jnp.int32), keep)


def _needed(test: seq.BettingState, alpha: float) -> Array:
    """The mean gain that, as steady as the differences seen so far, would reach the
    threshold with the evidence gathered so far (a normal approximation; for reports)."""
    n = jnp.maximum(test.count, 1.0)
    var = jnp.maximum(test.total_sq / n - (test.total / n) ** 2, 1e-12)
    return jnp.sqrt(2.0 * var * jnp.log(1.0 / alpha) / n)


def _bonferroni(pvalues, tested, alpha):
    return tested & (pvalues <= alpha / jnp.maximum(jnp.sum(tested), 1))


def _uncorrected(pvalues, tested, alpha):
    return tested & (pvalues <= alpha)


#: ``Gate.correction`` -> rule ``(gate, keys, evidence, winner, state) -> (Certification, state)``
CERTIFICATION: dict[str, Callable[..., tuple]] = {
    "holm": corrected(lambda pvalues, tested, alpha: st.holm(pvalues, alpha, tested)),
    "bonferroni": corrected(_bonferroni),
    "none": corrected(_uncorrected),
    "split": split,
    "fresh": fresh,
    "sequential": sequential,
}

#: corrections that hold the second half of the evaluation examples out of selection
HOLD_OUT = frozenset({"split", "fresh", "sequential"})
#: corrections that test on ``Evaluation.fresh`` with the gate's evidence metric
FRESH = frozenset({"fresh", "sequential"})
#: corrections that keep a state between steps, and how it starts
STATEFUL = {"sequential": sequential_init}
