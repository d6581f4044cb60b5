"""What a run's gate can hope to certify, said before the run starts.

Two things are worth a user's attention before any training:

* **the gate's power**: with the split gate the certification test has the held-out half of the
  validation split; with the fresh-data gates a transfer batch per step (``"fresh"``), or the
  batches of a challenger's whole test (``"sequential"``). :func:`ev3evo.adapt.power.smallest_gain`
  turns that into the smallest gain a test on that many examples can certify (its floor, when
  every example the two models disagree on favours the candidate) and a typical one (when
  they disagree on 5 % of the examples, as two good models do). A floor above one point means
  the run cannot certify a gain a small student can hope for: say so, and what would help;
* **constraints the teacher itself misses**: the student learns from the teacher, so a
  constraint the teacher does not meet on the validation split is unlikely to be met.

Example::

    from ev3evo.adapt.gate import Gate
    from ev3evo.distillation.evidence import gate_power
    power = gate_power(Gate(correction="split"), 360, transfer=4096, period=8)
    assert power["examples"] == 180 and power["floor"] > 0.01 and power["warning"]
"""

from __future__ import annotations

from ..adapt.power import smallest_gain
from ..assess.objectives import parse_constraint

#: the share of examples two good models are taken to disagree on, for the typical gain
DISAGREEMENT = 0.05


def gate_power(gate, n_val: int, transfer: int, period: int, population: int = 1) -> dict:
    """``{"examples", "where", "floor", "typical", "warning"}`` of the gate's test.

    The gains are those of a paired normal test at the gate's level (for ``"holm"`` and
    ``"bonferroni"`` at ``alpha / population``, what the best of the population must pass);
    the sequential test spends its level over the challenger's batches and needs somewhat
    more, so for it they are a lower bound.

    Args:
      gate: the run's :class:`~ev3evo.Gate`.
      n_val: validation examples.
      transfer: fresh transfer examples per step (the fresh-data gates).
      period: a challenger's steps (``"sequential"``).
      population: candidates per step (the multiple-testing corrections).
    """
    if gate.correction == "fresh":
        n, where = transfer, "fresh transfer examples per step"
    elif gate.correction == "sequential":
        n, where = transfer * period, f"fresh transfer examples over a challenger's {period} steps"
    elif gate.correction == "split":
        n, where = n_val // 2, "held-out validation examples"
    else:
        n, where = n_val, "validation examples"
    alpha = gate.alpha / population if gate.correction in ("holm", "bonferroni") else gate.alpha
    floor, typical = smallest_gain(n, alpha, DISAGREEMENT)
    warning = None
    if floor > 0.01:
        warning = (f"with {n} {where} the gate cannot certify a gain below {100 * floor:.1f} "
                   f"points ({100 * typical:.1f} when the models disagree on "
                   f"{100 * DISAGREEMENT:.0f}% of them): more validation data, or a teacher "
                   "that can label new inputs (--correction fresh or sequential), would help")
    return {"examples": n, "where": where, "floor": floor, "typical": typical,
            "warning": warning}


def teacher_misses(constraints, teacher_values: dict) -> list[str]:
    """Warnings for the constraints the teacher itself does not meet on validation."""
    out = []
    for text in constraints:
        c = parse_constraint(text)
        value = teacher_values.get(c.metric)
        if value is None:
            continue
        if c.gap(value) > 0:
            out.append(f"the teacher itself has {c.metric} {value:.4g} on the validation split, "
                       f"so a student meeting {c.metric}{c.op}{c.threshold:g} is unlikely")
    return out
