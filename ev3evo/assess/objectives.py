"""Objectives and constraints: what the gate optimizes and what it requires.

Objectives are metric names in priority order (lexicographic, each with a tie tolerance);
constraints are requirements on metric values. Both are written as text on the command line
(``"macro_f1:0.01"``, ``"agreement>=0.95"``) and parsed here, in one place.

Example::

    from ev3evo.assess.objectives import parse_constraint, parse_objective
    assert parse_objective("macro_f1:0.01") == ("macro_f1", 0.01)
    assert parse_constraint("agreement>=0.95") == ("agreement", ">=", 0.95)
"""

from __future__ import annotations

from collections.abc import Sequence

from .._checks import check_nonnegative
from ..types import Constraint, Objective


def parse_objective(spec: str | Objective) -> Objective:
    """``"name"`` or ``"name:tolerance"`` (or an :class:`~ev3evo.Objective`) → an Objective."""
    if isinstance(spec, Objective):
        return spec._replace(tolerance=check_nonnegative(
            spec.tolerance, f"tolerance of objective {spec.metric!r}"))
    if not isinstance(spec, str):
        raise TypeError(f"an objective is a metric name or an ev3evo.Objective, got {spec!r}")
    name, _, tol = spec.partition(":")
    name = name.strip()
    try:
        tolerance = float(tol) if tol.strip() else 0.0
    except ValueError:
        raise ValueError(f"cannot read metric {spec!r}; write NAME or NAME:TOLERANCE") from None
    if not name:
        raise ValueError(f"cannot read metric {spec!r}; write NAME or NAME:TOLERANCE")
    return Objective(name, check_nonnegative(tolerance, f"tolerance of objective {name!r}"))


def parse_constraint(text: str | Constraint) -> Constraint:
    """``"agreement>=0.95"`` → ``Constraint("agreement", ">=", 0.95)``."""
    if isinstance(text, Constraint):
        if text.op not in (">=", "<="):
            raise ValueError(f"constraint operator must be '>=' or '<=', got {text.op!r}")
        return text
    if isinstance(text, str):
        for op in (">=", "<="):
            if op in text:
                name, _, threshold = text.partition(op)
                try:
                    return Constraint(name.strip(), op, float(threshold))
                except ValueError:
                    break
    raise ValueError(
        f"cannot read constraint {text!r}; write it as METRIC>=VALUE or METRIC<=VALUE, "
        "e.g. agreement>=0.95"
    )


def resolve(metric_names: Sequence[str], objectives, constraints, bounds=None):
    """Parsed objectives (default: the first metric) and constraints, checked against the
    metrics: ``(tuple[Objective], tuple[Constraint])``.

    ``bounds`` maps metric names to their ``(lowest, highest)`` values: a constraint that no
    value in that range satisfies (``accuracy>=1.5``) is refused.
    """
    objectives = tuple(parse_objective(o) for o in (objectives or [metric_names[0]]))
    constraints = tuple(parse_constraint(c) for c in constraints)
    for what, name in [("objective", o.metric) for o in objectives] + [
        ("constraint", c.metric) for c in constraints
    ]:
        if name not in metric_names:
            raise ValueError(f"{what} names unknown metric {name!r}; metrics: {list(metric_names)}")
    for c in constraints:
        check_satisfiable(c, (bounds or {}).get(c.metric))
    return objectives, constraints


def check_satisfiable(constraint: Constraint, bounds) -> None:
    """Refuses a constraint no value of the metric can meet (``bounds``: its range, or None)."""
    if bounds is None:
        return
    lo, hi = bounds
    c = constraint
    if (c.op == ">=" and c.threshold > hi) or (c.op == "<=" and c.threshold < lo):
        raise ValueError(
            f"constraint {c.metric}{c.op}{c.threshold:g} cannot hold: {c.metric} lies in "
            f"[{lo:g}, {hi:g}]"
        )
