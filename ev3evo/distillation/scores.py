"""Metric values of one model on one split, by metric name: the numbers every report shows.

The metrics come from :data:`ev3evo.assess.metrics.REGISTRY`; :data:`REPORTED` are shown for
every method whatever the objectives are.

Example::

    import jax.numpy as jnp
    from ev3evo.distillation.scores import evaluate, logit_metrics
    apply = lambda p, x: x @ p
    batch = {"x": jnp.eye(3), "y": jnp.arange(3), "teacher": 5.0 * jnp.eye(3)}
    assert evaluate(apply, jnp.eye(3), batch, ["accuracy"], 3) == {"accuracy": 1.0}
    assert logit_metrics(batch["teacher"], batch, ["agreement"], 3) == {"agreement": 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence

from ..assess import metrics as M
from ..types import Metric
from . import report

#: the metrics every run reports, in order (the objectives may add others)
REPORTED = report.METRICS


def metric_objects(apply, names: Sequence[str], num_classes: int) -> list[Metric]:
    """The registry's metrics ``names`` for a model ``apply`` with ``num_classes`` outputs."""
    return [M.get(n, apply, num_classes) for n in names]


def evaluate(apply, params, batch, names: Sequence[str], num_classes: int) -> dict[str, float]:
    """``{name: value}`` of the metrics ``names`` for the model ``(apply, params)`` on ``batch``."""
    out = {}
    for m in metric_objects(apply, names, num_classes):
        out[m.name] = float(M.value(m, m.stats(params, batch)))
    return out


def logit_metrics(logits, batch, names: Sequence[str], num_classes: int) -> dict[str, float]:
    """:func:`evaluate` for a model known only by its ``logits`` on ``batch`` (the teacher)."""
    ident = lambda params, x: x
    return evaluate(ident, None, {**batch, "x": logits}, names, num_classes)
