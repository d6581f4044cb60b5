"""Selection and the safety gate: which candidate wins, and what it may replace.

Arms are laid out as ``[candidate_0 … candidate_{P-1}, current, stable]``, all scored on the
same examples. One step decides:

1. **Winner.** Among valid candidates (active, finite parameters, finite scores), those with the
   least constraint violation; among them the lexicographic best over the objectives, where
   values within an objective's tolerance of the best count as ties.
2. **Accept** (current ← winner) when the winner is *not reliably worse* than the current
   model on the primary objective: the upper confidence bound of the paired difference is
   ``≥ 0`` (or, with ``accept="better"``, when its point estimate is higher). An infeasible
   current model is replaced by any candidate with less violation.
3. **Certify** (stable ← winner) only when the winner is accepted, feasible, and *significantly
   better* than the stable model on the primary objective, with Holm's correction over every
   valid candidate tested in the step; secondary objectives must not be reliably worse than
   the stable model by more than their tolerance.
4. **Roll back** (current ← stable) when the resulting current model is reliably worse than
   the stable one.

With ``correction="split"`` the evaluation examples are split once and for all (even / odd
positions): steps 1, 2 and 4 use only the even half, and the winner — already chosen — is tested
**alone** against the stable model on the odd half at level ``alpha``. Selection and test use
disjoint examples, so the one test needs no multiplicity correction however many candidates
competed (a sample-splitting test; the price is half the examples in the test). Certification
also requires the winner's point value on *all* examples to be at least the stable model's, so
the stable model's reported metric never decreases.

**Lexicographic certification** (``certify="lexicographic"``, split gate): objectives are
ranked, and ties within a tolerance pass to the next one, so "better" also means "tied on the
primary objective and better on the next". A small validation set rarely shows a significant
gain in accuracy between two good models (one example is 0.28 points of 360), while a
continuous secondary objective (fidelity to a teacher) does. With ``O`` objectives the winner is
certified through path ``j`` when it is non-inferior to the stable model on every objective
before ``j`` (lower confidence bound ``≥ -tolerance``) and significantly better on objective
``j``; every bound and test of the ``O`` paths is at level ``alpha / O`` (Bonferroni over the
paths), so the probability of certifying a winner that is not lexicographically better stays
at most ``alpha`` (tested by simulation in ``tests/adapt/test_gate.py``). The point-value guard on the
primary objective over all examples still applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..assess import stats as st
from ..assess.metrics import utility
from ..types import Array, Constraint, Metric, Objective, PRNGKey


class GateConfig(NamedTuple):
    """Static settings of the gate.

    Attributes:
      alpha: one-sided error level of every bound, and the family-wise level of certification.
      correction: ``"holm"`` (default), ``"bonferroni"`` or ``"none"`` across the candidates of
        a step, or ``"split"`` (select on half of the examples, test the winner alone on the
        other half; see the module docstring).
      accept: ``"not_worse"`` (upper bound of the paired difference to current ``≥ 0``),
        ``"better"`` (point estimate higher than current), or ``"lexicographic"`` (better than
        current beyond the tolerance on an objective with every earlier one tied, a gain on a
        later objective being significant at ``alpha``).
      bootstrap: resamples for metrics that are not means of per-example scores.
      certify: ``"primary"`` (significant improvement on the primary objective) or
        ``"lexicographic"`` (with ``correction="split"`` only: also certify a winner that is
        *tied* with the stable model on every higher-priority objective — non-inferior within
        its tolerance, and never lower on all the examples — and significantly better on a
        later one; see the module docstring).
    """

    alpha: float = 0.05
    correction: str = "holm"
    accept: str = "not_worse"
    bootstrap: int = 500
    certify: str = "primary"


class Decision(NamedTuple):
    """What the gate decided in one step (all arrays, usable under ``jit``)."""

    winner: Array  # int32 candidate index, -1 when no candidate is valid
    accepted: Array  # bool
    certified: Array  # bool
    rolled_back: Array  # bool
    values: Array  # (A, M) metric values of every arm
    violation: Array  # (A,) total constraint violation (0 = feasible)
    valid: Array  # (P,) bool
    fitness: Array  # (P,) primary utility, -inf where invalid
    pvalue: Array  # float, the winner's (uncorrected) p-value against stable
    # The winner against stable on the primary objective, on the examples of the certification
    # test (the held-out half with "split"): the point gain (higher is better) and the gain
    # that would be significant there at the test's level given the spread of the paired
    # differences (z·se, or the bootstrap's equivalent). 0 when there is no winner.
    gain: Array
    needed: Array


def compare(
    key: PRNGKey, metric: Metric, stats: Array, ref: int, alpha: float, replicates: int
) -> st.Comparison:
    """Paired comparison of every arm's utility against arm ``ref``.

    Args:
      stats: ``(A, N, k)`` per-example statistics of this metric.
    """
    sign = 1.0 if metric.maximize else -1.0
    if metric.decomposable:
        u = sign * stats[..., 0]
        return st.paired_normal(u, u[ref], alpha)
    counts = st.bootstrap_counts(key, stats.shape[1], replicates)
    boot = sign * st.bootstrap_values(stats, counts, metric.aggregate)  # (A, R)
    point = sign * metric.aggregate(jnp.mean(stats, axis=1))
    return st.paired_bootstrap(boot, boot[ref], point - point[ref], alpha)


def violations(values: Array, index: dict[str, int], constraints: Sequence[Constraint]) -> Array:
    """``(A,)`` sum of constraint violations (0 where every constraint holds)."""
    total = jnp.zeros(values.shape[0], values.dtype)
    for c in constraints:
        v = values[:, index[c.metric]]
        gap = c.threshold - v if c.op == ">=" else v - c.threshold
        total = total + jnp.maximum(gap, 0.0)
    return total


_ROUNDING = 1e-6


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
        # A rounding allowance of a few float32 ulps: a boundary written in decimal (accuracy
        # 0.79 against 0.80 with tolerance 0.01) must count as a tie, as it does on paper.
        slack = tol + _ROUNDING * jnp.maximum(1.0, jnp.abs(best))
        keep = keep & (u >= best - slack)
    final = jnp.where(keep, utilities[-1], -jnp.inf)
    # Among exact ties on the last objective, prefer the best primary value.
    final_best = keep & (final >= jnp.max(final))
    winner = jnp.argmax(jnp.where(final_best, utilities[0], -jnp.inf))
    return jnp.where(jnp.any(eligible), winner, -1).astype(jnp.int32)


def _reject(pvalues: Array, valid: Array, config: GateConfig) -> Array:
    if config.correction == "holm":
        return st.holm(pvalues, config.alpha, valid)
    if config.correction == "bonferroni":
        return valid & (pvalues <= config.alpha / jnp.maximum(jnp.sum(valid), 1))
    return valid & (pvalues <= config.alpha)


def decide(
    key: PRNGKey,
    metrics: Sequence[Metric],
    stats: Sequence[Array],
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint],
    usable: Array,
    config: GateConfig,
) -> Decision:
    """Runs selection and the gate for one step.

    Args:
      key: for bootstrap resampling (shared by all arms so comparisons stay paired).
      metrics: every metric, in the order of ``stats``.
      stats: per metric, ``(P + 2, N, k)`` statistics of ``[candidates…, current, stable]``.
      objectives: priority order; the first is the primary objective.
      constraints: requirements on metric values.
      usable: ``(P,)`` bool, candidates that are active and have finite parameters.
      config: the gate's settings.
    """
    index = {m.name: i for i, m in enumerate(metrics)}
    num_arms = stats[0].shape[0]
    p = num_arms - 2
    cur, stab = p, p + 1
    split = config.correction == "split"
    if split and stats[0].shape[1] < 4:
        raise ValueError(
            f'correction="split" needs at least 4 evaluation examples, got {stats[0].shape[1]}'
        )
    # Selection (and acceptance, rollback) data; with "split", the held-out half tests alone.
    select = [s[:, 0::2] for s in stats] if split else list(stats)
    values = _values(metrics, stats)  # (A, M) on every example: what is reported
    sel_values = _values(metrics, select) if split else values
    finite = jnp.all(jnp.isfinite(values), axis=1) & jnp.all(jnp.isfinite(sel_values), axis=1)
    for s in stats:
        finite = finite & jnp.all(jnp.isfinite(s), axis=(1, 2))
    valid = usable & finite[:p]
    violation = jnp.where(finite, violations(sel_values, index, constraints), jnp.inf)

    obj_metrics = [metrics[index[o.metric]] for o in objectives]
    utils = _utilities(obj_metrics, sel_values, index)  # (O, A)

    least = jnp.min(jnp.where(valid, violation[:p], jnp.inf))
    eligible = valid & (violation[:p] <= least)
    winner = lexicographic_winner(utils[:, :p], [o.tolerance for o in objectives], eligible)
    has_winner = winner >= 0
    w = jnp.maximum(winner, 0)

    keys = jax.random.split(key, 3 * len(obj_metrics))
    vs_current, vs_stable = [], []
    for i, m in enumerate(obj_metrics):
        s = select[index[m.name]]
        vs_current.append(compare(keys[3 * i], m, s, cur, config.alpha, config.bootstrap))
        vs_stable.append(compare(keys[3 * i + 1], m, s, stab, config.alpha, config.bootstrap))
    primary_cur, primary_stab = vs_current[0], vs_stable[0]

    w_feasible = violation[w] <= 0
    cur_feasible = violation[cur] <= 0
    stab_feasible = violation[stab] <= 0
    if config.accept == "better":
        good_enough = primary_cur.diff[w] > 0
    elif config.accept == "lexicographic":
        # Better than the current model beyond the tolerance on some objective, every earlier
        # one tied (within its tolerance), where "better" on a later objective must also be
        # significant: a copy of the current model that is luckier by an example or two on
        # the primary objective (a tie) is not accepted for a noise-level gain on the next.
        tol0 = objectives[0].tolerance
        good_enough = primary_cur.diff[w] > tol0
        tied = primary_cur.diff[w] >= -tol0
        for o, cmp_ in zip(objectives[1:], vs_current[1:]):
            good_enough = good_enough | (tied & (cmp_.pvalue[w] <= config.alpha))
            tied = tied & (cmp_.diff[w] >= -o.tolerance)
    else:
        good_enough = primary_cur.upper[w] >= 0
    accepted = has_winner & jnp.where(
        cur_feasible, w_feasible & good_enough, violation[w] < violation[cur]
    )
    accepted = accepted | (has_winner & ~cur_feasible & w_feasible)

    if split:
        # The winner alone against stable on the held-out half: [winner, stable] arms.
        held = [s[:, 1::2][jnp.stack([w, stab])] for s in stats]
        lexi = config.certify == "lexicographic"
        level = config.alpha / len(obj_metrics) if lexi else config.alpha
        tests = [compare(keys[3 * i + 2], m, held[index[m.name]], 1, level,
                         config.bootstrap) for i, m in enumerate(obj_metrics)]
        pvalue = tests[0].pvalue[0]
        gain, needed = tests[0].diff[0], tests[0].diff[0] - tests[0].lower[0]
        significant = pvalue <= level
        if lexi:
            tied = jnp.asarray(True)  # non-inferior on every objective before j
            for j in range(1, len(obj_metrics)):
                o_prev, t_prev = objectives[j - 1], tests[j - 1]
                tied = tied & (t_prev.lower[0] >= -o_prev.tolerance)
                better = tests[j].pvalue[0] <= level
                pvalue = jnp.where(~significant & tied & better, tests[j].pvalue[0], pvalue)
                significant = significant | (tied & better)
        guards = jnp.asarray(True)
        for o, cmp_ in zip(objectives[1:], tests[1:]):
            guards = guards & (cmp_.upper[0] >= -o.tolerance)
        full_violation = jnp.where(finite, violations(values, index, constraints), jnp.inf)
        full_utils = _utilities(obj_metrics, values, index)
        # Never lower the stable model's metric on all the examples, nor certify infeasible.
        guards = guards & (full_utils[0, w] >= full_utils[0, stab]) & (full_violation[w] <= 0)
        w_feasible = w_feasible & (full_violation[w] <= 0)
        stab_feasible = full_violation[stab] <= 0
        violation = full_violation
    else:
        reject = _reject(primary_stab.pvalue[:p], valid & (violation[:p] <= 0), config)
        significant = reject[w]
        pvalue = primary_stab.pvalue[w]
        gain, needed = primary_stab.diff[w], primary_stab.diff[w] - primary_stab.lower[w]
        guards = jnp.asarray(True)
        for o, cmp_ in zip(objectives[1:], vs_stable[1:]):
            guards = guards & (cmp_.upper[w] >= -o.tolerance)
    certified = accepted & w_feasible & jnp.where(stab_feasible, significant & guards, True)

    # Roll back when the model we would keep is reliably worse than stable (or infeasible while
    # stable is feasible).
    kept = jnp.where(accepted, w, cur)
    rolled_back = ~certified & (
        (primary_stab.upper[kept] < 0) | (stab_feasible & (violation[kept] > 0))
    )
    fitness = jnp.where(valid, utils[0, :p], -jnp.inf)
    return Decision(
        winner=winner,
        accepted=accepted,
        certified=certified,
        rolled_back=rolled_back,
        values=values,
        violation=violation,
        valid=valid,
        fitness=fitness,
        pvalue=jnp.where(has_winner, pvalue, 1.0),
        gain=jnp.where(has_winner, gain, 0.0),
        needed=jnp.where(has_winner, needed, 0.0),
    )


def _values(metrics: Sequence[Metric], stats: Sequence[Array]) -> Array:
    """``(A, M)`` metric values of every arm."""
    return jnp.stack([m.aggregate(jnp.mean(s, axis=1)) for m, s in zip(metrics, stats)], axis=1)


def _utilities(obj_metrics: Sequence[Metric], values: Array, index: dict[str, int]) -> Array:
    """``(O, A)`` higher-is-better utilities of the objectives, ``-inf`` where not finite."""
    utils = jnp.stack([utility(m, values[:, index[m.name]]) for m in obj_metrics])
    return jnp.where(jnp.isfinite(utils), utils, -jnp.inf)
