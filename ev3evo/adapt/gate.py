"""The safety gate: which candidate wins, and what it may replace.

Arms are laid out as ``[candidate_0 … candidate_{P-1}, current, stable]``, all scored on the
same examples. One step decides, with the rules of the :class:`Gate`:

1. **Winner** (:mod:`ev3evo.adapt.selection`): among valid candidates, the least constraint
   violation (with ``Gate.constraint_margin``: short of a one-sided bound counts as a
   violation), then the lexicographic best over the objectives.
2. **Accept** (current ← winner) by the acceptance rule (:mod:`ev3evo.adapt.acceptance`); an
   infeasible current model is replaced by any candidate with less violation.
3. **Certify** (stable ← winner) when the winner is accepted, feasible, and passes the
   certification rule (:mod:`ev3evo.adapt.certification`).
4. **Roll back** (current ← stable) when the model kept is reliably worse than the stable one
   on the primary objective, or infeasible while the stable model is feasible.

With ``correction="split"`` steps 1, 2 and 4 see only the even validation examples; the odd
ones serve only the certification test. With ``"fresh"`` and ``"sequential"`` the test runs on
a batch drawn afresh every step (:class:`~ev3evo.Evaluation`), on the gate's evidence metric,
and the held-out half guards the objectives. With an ``Evaluation.selection`` batch (drawn
afresh every step) steps 1, 2 and 4 see that batch instead, and the whole validation batch
guards; with ``Gate.thresholdout`` as well, the even validation examples answer where the
batch misleads (:func:`thresholdout_gains`) and the odd ones guard. The false-certification
rates of every
configuration are simulated in ``tests/adapt/test_gate.py``.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.adapt.gate import Gate, decide
    from ev3evo.assess.metrics import per_example
    from ev3evo.types import Objective
    score = per_example("score", lambda params, batch: batch)
    u = jnp.zeros((4, 200)).at[0].set(1.0)          # 2 candidates, current, stable
    d = decide(jax.random.key(0), [score], [u[..., None]], [Objective("score")], [],
               jnp.ones(2, bool), Gate())
    assert int(d.winner) == 0 and bool(d.certified)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._checks import check_finite_nonnegative, check_positive_int, check_probability
from ..assess.stats import compare
from ..types import Array, Constraint, Metric, Objective, PRNGKey
from .acceptance import ACCEPTANCE
from .certification import CERTIFICATION, FRESH, HOLD_OUT, STATEFUL
from .selection import (
    constraint_margins,
    least_violation_winner,
    metric_values,
    utilities,
    violations,
)

#: the values of ``Gate.certify``
CERTIFY = ("primary", "lexicographic")


class Gate(NamedTuple):
    """Settings of the gate (static; :meth:`validated` checks them).

    Attributes:
      alpha: one-sided error level of every bound, and the family-wise level of certification.
      correction: a key of :data:`~ev3evo.adapt.certification.CERTIFICATION`: ``"holm"``
        (default), ``"bonferroni"`` or ``"none"`` across the candidates of a step, or
        ``"split"`` (select on half of the examples, test the winner alone on the other half).
      accept: a key of :data:`~ev3evo.adapt.acceptance.ACCEPTANCE`: ``"not_worse"``,
        ``"better"`` or ``"lexicographic"``.
      certify: ``"primary"`` (a significant gain on the primary objective) or
        ``"lexicographic"`` (``correction="split"`` only: also a winner tied with the stable
        model on every higher-priority objective and significantly better on a later one).
      bootstrap: resamples for metrics that are not means of per-example scores.
      evidence: with ``correction="fresh"`` or ``"sequential"``: the metric tested on each
        step's fresh batch (``Evaluation.fresh``), a per-example score in ``[0, 1]`` (e.g.
        ``"agreement"`` with a teacher).
      period: with ``correction="sequential"``: the steps a challenger is tested before the
        current model replaces it.
      thresholdout: with an ``Evaluation.selection`` batch: Thresholdout's threshold (Dwork et
        al. 2015), in units of the primary objective, on each candidate's gain over the
        current model (:func:`thresholdout_gains`); ``0``: the selection batch alone.
    """

    alpha: float = 0.05
    correction: str = "holm"
    accept: str = "not_worse"
    certify: str = "primary"
    bootstrap: int = 500
    evidence: str | None = None
    period: int = 8
    thresholdout: float = 0.0
    constraint_margin: float = 0.0

    def validated(self) -> Gate:
        """These settings, checked; raises ``ValueError``/``TypeError`` naming the problem."""
        _known("correction", self.correction, CERTIFICATION)
        _known("accept", self.accept, ACCEPTANCE)
        _known("certify", self.certify, CERTIFY)
        if self.certify == "lexicographic" and self.correction not in HOLD_OUT:
            raise ValueError('certify="lexicographic" needs correction="split" (the winner is '
                             "then tested alone, so the paths need no correction over candidates)")
        if self.correction in FRESH and not isinstance(self.evidence, str):
            raise ValueError(f'correction="{self.correction}" needs evidence=, the name of the '
                             "metric tested on the fresh batches (e.g. evidence=\"agreement\")")
        return self._replace(alpha=check_probability(self.alpha, "alpha"),
                             thresholdout=check_finite_nonnegative(self.thresholdout,
                                                                   "thresholdout"),
                             constraint_margin=check_finite_nonnegative(self.constraint_margin,
                                                                        "constraint_margin"),
                             bootstrap=check_positive_int(self.bootstrap, "bootstrap"),
                             period=check_positive_int(self.period, "period"))


def _known(what: str, value, choices) -> None:
    if value not in choices:
        names = [repr(c) for c in choices]
        listed = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise ValueError(f"{what} must be {listed}, got {value!r}")


class Decision(NamedTuple):
    """What the gate decided in one step (all arrays, usable under ``jit``)."""

    winner: Array  # int32 candidate index, -1 when no candidate is valid
    accepted: Array  # bool
    certified: Array  # bool
    rolled_back: Array  # bool
    values: Array  # (A, M) metric values of every arm
    violation: Array  # (A,) total constraint violation on all examples (0 = feasible)
    valid: Array  # (P,) bool
    fitness: Array  # (P,) primary utility, -inf where invalid
    pvalue: Array  # float, the winner's (uncorrected) p-value against stable
    # The winner against stable on the primary objective, on the examples of the certification
    # test: the point gain and the gain that would be significant there (see Certification).
    gain: Array
    needed: Array
    certified_arm: Array = None  # int32: the arm that became stable (when certified)
    gate_state: Any = ()  # what a stateful certification rule keeps for the next step


class Evidence(NamedTuple):
    """Everything the rules read in one step.

    Attributes:
      objectives, objective_metrics: the objectives and their metrics (static).
      values: ``(A, M)`` metric values on all evaluation examples (what is reported).
      held_out: per objective, ``(A, N/2, k)`` statistics of the held-out examples (``()``
        when nothing is held out).
      violation: ``(A,)`` constraint violation on the selection examples.
      full_violation: ``(A,)`` on all examples.
      selection_violation: ``(A,)`` on the selection examples with the gate's
        ``constraint_margin``: what selection and acceptance compare (``violation`` without
        a margin).
      utilities, full_utilities: ``(O, A)`` objectives' utilities on the selection / all
        examples.
      valid: ``(P,)`` usable candidates with finite scores.
      vs_current, vs_stable: per objective, the paired comparison of every arm against the
        current / stable model on the selection examples.
      fresh: ``(A, N)`` the evidence metric's per-example scores of every arm on the fresh
        batch (``None`` without one).
    """

    objectives: tuple
    objective_metrics: tuple
    values: Array
    held_out: tuple
    violation: Array
    full_violation: Array
    selection_violation: Array
    utilities: Array
    full_utilities: Array
    valid: Array
    vs_current: tuple
    vs_stable: tuple
    fresh: Array | None = None


def gather_evidence(keys, metrics, stats, objectives, constraints, usable, gate,
                    fresh=None, selection=None, noise_key=None) -> Evidence:
    """The values, violations, utilities and comparisons every rule reads (see :class:`Evidence`).

    ``keys``: ``(2, O)`` keys, for the bootstrap comparisons against the current and the stable
    model. ``selection``: per metric, the statistics on a separate selection batch
    (``Evaluation.selection``); the selection examples are then those, and every validation
    example is held out. With ``gate.thresholdout`` the even validation examples instead answer
    for the primary objective's gains where the selection batch misleads
    (:func:`thresholdout_gains`, its Laplace noise drawn with ``noise_key``), and the odd ones
    are held out.
    """
    index = {m.name: i for i, m in enumerate(metrics)}
    obj_metrics = tuple(metrics[index[o.metric]] for o in objectives)
    hold_out = gate.correction in HOLD_OUT
    if selection is not None:
        select = list(selection)
    else:
        select = [s[:, 0::2] for s in stats] if hold_out else list(stats)
    values = metric_values(metrics, stats)
    separate = hold_out or selection is not None
    sel_values = metric_values(metrics, select) if separate else values
    finite = jnp.all(jnp.isfinite(values), axis=1) & jnp.all(jnp.isfinite(sel_values), axis=1)
    for s in [*stats, *(selection or ())]:
        finite = finite & jnp.all(jnp.isfinite(s), axis=(1, 2))
    p = usable.shape[0]
    comparisons = [
        [compare(keys[j][i], m, select[index[m.name]], p + j, gate.alpha, gate.bootstrap)
         for i, m in enumerate(obj_metrics)]
        for j in (0, 1)
    ]
    reuse = selection is not None and gate.thresholdout > 0
    whole = selection is not None and not reuse
    held = () if not hold_out else tuple(
        stats[index[m.name]] if whole else stats[index[m.name]][:, 1::2] for m in obj_metrics)
    sel_utilities = utilities(obj_metrics, sel_values, index)
    n_select = select[0].shape[1]
    violation = jnp.where(finite, violations(sel_values, index, constraints, n_select), jnp.inf)
    if constraints and gate.constraint_margin:
        margins = constraint_margins(metrics, select, index, constraints, gate.constraint_margin)
        with_margin = jnp.where(finite, violations(sel_values, index, constraints, n_select,
                                                   margins), jnp.inf)
    else:
        with_margin = violation
    if reuse:
        holdout = metric_values(metrics, [s[:, 0::2] for s in stats])
        sel_utilities, comparisons[0][0] = thresholdout_gains(
            noise_key, sel_utilities, utilities(obj_metrics, holdout, index), comparisons[0][0],
            p, gate.thresholdout)
    return Evidence(
        objectives=tuple(objectives), objective_metrics=obj_metrics, values=values, held_out=held,
        violation=violation,
        full_violation=jnp.where(finite, violations(values, index, constraints,
                                                    stats[0].shape[1]), jnp.inf),
        selection_violation=with_margin,
        utilities=sel_utilities,
        full_utilities=utilities(obj_metrics, values, index),
        valid=usable & finite[:p], vs_current=tuple(comparisons[0]),
        vs_stable=tuple(comparisons[1]),
        fresh=None if fresh is None else jnp.asarray(fresh, jnp.float32),
    )


def thresholdout_gains(key: PRNGKey, chosen_on: Array, holdout: Array, vs_current,
                       current: int, threshold: float):
    """Thresholdout (Dwork et al. 2015) on the primary objective's gains over the current model.

    Every step's candidates are compared on a fresh selection batch (the *training* estimate:
    it cannot be overfitted, but it need not measure the objective itself, e.g. agreement with
    the teacher on transfer examples for accuracy) and on the same held-out examples every
    step (the *holdout*: the objective itself, but selecting on it fits the current model to
    it). A candidate's gain is the selection batch's, unless the holdout's differs from it by
    more than ``threshold`` plus Laplace noise (scale ``threshold``): then the holdout's gain
    plus Laplace noise (scale ``threshold / 4``) answers. The holdout thus speaks only where
    the selection batch misleads, and then through noise: little of it is fitted. Its
    threshold is redrawn (scale ``threshold / 2``) every step; there is no answer budget, as
    nothing certified rests on these answers (the odd validation examples guard).

    Args:
      key: for the Laplace noise.
      chosen_on, holdout: ``(O, A)`` objectives' utilities on the selection batch and on the
        holdout examples (arms ``[candidates…, current, stable, …]``).
      vs_current: the selection batch's paired comparison against the current model (its
        primary objective); its point estimates become the answered gains, its bounds move
        with them.
      current: the current model's arm.
      threshold: in units of the primary objective.

    Returns:
      ``(utilities, comparison)``: ``chosen_on`` with the answered primary utilities, and the
      comparison with the answered gains.

    Example::

        import jax, jax.numpy as jnp
        from ev3evo.adapt.gate import thresholdout_gains
        from ev3evo.assess.stats import Comparison
        chosen_on = jnp.asarray([[0.70, 0.62, 0.60]])   # two candidates, then the current model
        holdout = jnp.asarray([[0.50, 0.62, 0.60]])     # candidate 0 misleads the selection batch
        diff = chosen_on[0] - chosen_on[0, 2]
        cmp = Comparison(diff, diff - 0.01, diff + 0.01, jnp.zeros(3))
        u, answered = thresholdout_gains(jax.random.key(0), chosen_on, holdout, cmp, 2, 0.02)
        assert float(u[0, 0]) < 0.6 and abs(float(u[0, 1]) - 0.62) < 1e-6
        assert abs(float(answered.upper[0] - answered.diff[0]) - 0.01) < 1e-6
    """
    k_threshold, k_test, k_answer = jax.random.split(key, 3)
    arms = chosen_on.shape[1]
    gain = chosen_on[0] - chosen_on[0, current]
    held_gain = holdout[0] - holdout[0, current]
    bar = threshold + threshold / 2 * jax.random.laplace(k_threshold)
    misleads = jnp.abs(gain - held_gain) > bar + threshold * jax.random.laplace(k_test, (arms,))
    answered = jnp.where(misleads, held_gain + threshold / 4 * jax.random.laplace(k_answer,
                                                                                 (arms,)), gain)
    answered = answered.at[current].set(0.0)
    shift = answered - vs_current.diff
    moved = vs_current._replace(diff=answered, lower=vs_current.lower + shift,
                                upper=vs_current.upper + shift)
    return chosen_on.at[0].set(chosen_on[0, current] + answered), moved


def decide(
    key: PRNGKey,
    metrics: Sequence[Metric],
    stats: Sequence[Array],
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint],
    usable: Array,
    gate: Gate,
    fresh: Array | None = None,
    state=(),
    selection: Sequence[Array] | None = None,
) -> Decision:
    """Runs selection and the gate for one step.

    Args:
      key: for bootstrap resampling (shared by all arms so comparisons stay paired).
      metrics: every metric, in the order of ``stats``.
      stats: per metric, ``(A, N, k)`` statistics of ``[candidates…, current, stable]``
        (``A = P + 2``), followed by the challenger with ``correction="sequential"``.
      objectives: priority order; the first is the primary objective.
      constraints: requirements on metric values.
      usable: ``(P,)`` bool, candidates that are active and have finite parameters.
      gate: the gate's settings (a validated :class:`Gate`).
      fresh: ``(A, N')`` the evidence metric's per-example scores on the fresh batch (the
        fresh-data rules only).
      state: the certification rule's state (``()`` for stateless rules; see
        :func:`initial_state`).
      selection: per metric, the arms' statistics on ``Evaluation.selection`` (selection and
        acceptance there; see :func:`gather_evidence`).
    """
    if gate.correction in HOLD_OUT and stats[0].shape[1] < 4:
        raise ValueError(
            f'correction="{gate.correction}" needs at least 4 evaluation examples, got '
            f"{stats[0].shape[1]}"
        )
    # Per objective: one key for the comparison with the current model, one with the stable
    # model, one for the certification test.
    noise_key = None
    if selection is not None and gate.thresholdout > 0:
        key, noise_key = jax.random.split(key)
    keys = jax.random.split(key, 3 * len(objectives)).reshape(len(objectives), 3)
    ev = gather_evidence(keys[:, :2].T, metrics, stats, objectives, constraints, usable, gate,
                         fresh, selection, noise_key)
    p = ev.valid.shape[0]
    cur, stab = p, p + 1
    winner = least_violation_winner(ev.utilities[:, :p], [o.tolerance for o in objectives],
                                    ev.valid, ev.selection_violation[:p])
    has_winner = winner >= 0
    w = jnp.maximum(winner, 0)
    v = ev.selection_violation
    w_feasible = v[w] <= 0
    good = ACCEPTANCE[gate.accept](ev, w, ev.objectives, gate.alpha)
    accepted = has_winner & jnp.where(v[cur] <= 0, w_feasible & good, v[w] < v[cur])
    accepted = accepted | (has_winner & (v[cur] > 0) & w_feasible)
    test, state = CERTIFICATION[gate.correction](gate, keys[:, 2], ev, w, state)
    stab_feasible = ev.full_violation[stab] <= 0
    # An infeasible stable model is replaced by any accepted feasible winner (feasible at the
    # point value: the margin steers selection, it does not bar a model that meets the
    # constraints on every example).
    feasible_winner = accepted & (ev.violation[w] <= 0) & (ev.full_violation[w] <= 0)
    if gate.correction in STATEFUL:  # the rule tests its own arm (the challenger)
        by_test = test.significant & test.guards & stab_feasible
        certified = by_test | (feasible_winner & ~stab_feasible)
        certified_arm = jnp.where(by_test, test.arm, w)
        reported = jnp.asarray(True)
    else:
        certified = feasible_winner & jnp.where(stab_feasible, test.significant & test.guards,
                                                True)
        certified_arm, reported = w, has_winner
    kept = jnp.where(accepted, w, cur)
    rolled_back = ~certified & ((ev.vs_stable[0].upper[kept] < 0)
                                | (stab_feasible & (ev.full_violation[kept] > 0)))
    return Decision(
        winner=winner, accepted=accepted, certified=certified, rolled_back=rolled_back,
        values=ev.values, violation=ev.full_violation, valid=ev.valid,
        fitness=jnp.where(ev.valid, ev.utilities[0, :p], -jnp.inf),
        pvalue=jnp.where(reported, test.pvalue, 1.0),
        gain=jnp.where(reported, test.gain, 0.0),
        needed=jnp.where(reported, test.needed, 0.0),
        certified_arm=jnp.asarray(certified_arm, jnp.int32), gate_state=state,
    )


def initial_state(gate: Gate):
    """The certification rule's state before the first step (``()`` for stateless rules)."""
    start = STATEFUL.get(gate.correction)
    return () if start is None else start()
