"""The end-of-run test of the current model against the stable one.

With the split and fresh-data gates the current model was selected on the even validation
examples only; the odd ones served only the certification tests' guards, and the fresh
batches only the tests. So the final current model can be tested once, alone, against the
stable model at level ``alpha``, with the engine's own gate (the current model as the only
candidate): on the odd half with ``correction="split"``, on one more fresh batch with the
fresh-data gates (``"fresh"``; ``"sequential"`` is tested as ``"fresh"``, a single test).
Certification also needs the guards of that rule (its metric on all of the validation split at
least the stable model's, feasibility). The program is compiled once per engine
(:func:`final_check_program`), so a run can compile it before its clock starts.

The record also says how much evidence the held-out half can give: ``gain`` is the current
model's point gain over the stable one on the primary objective there (higher is better, so a
drop in ECE is a positive gain), and ``needed`` the gain that would have been significant at
the gate's level with the observed spread of the paired differences (``z·se`` of the paired
test, or the bootstrap's equivalent). A run whose later gains all stay below ``needed`` has too
few validation examples to certify them, however long it runs.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.distillation.engine import build_engine, engine_settings
    from ev3evo.distillation.final_check import final_check
    from ev3evo.distillation.options import DistillConfig
    y = jnp.arange(200) % 3
    val = {"x": jax.nn.one_hot(y, 3), "y": y, "teacher": 5.0 * jax.nn.one_hot(y, 3)}
    config = DistillConfig(correction="split")
    engine = build_engine(lambda p, x: x @ p["w"], config, engine_settings(config), 3, 200)
    event = final_check(jax.random.key(0), engine, {"w": jnp.eye(3)}, {"w": jnp.zeros((3, 3))},
                        val)
    assert event["certified"] and event["held_out_examples"] == 100
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..adapt.certification import FRESH
from ..adapt.gate import decide
from ..assess.evaluate import evaluate_population
from ..loop import EV3
from ..types import Evaluation, Params

#: corrections whose end-of-run check is valid: the split gate, the fresh-data gates
CHECKED = ("split", *FRESH)


def final_check_program(engine: EV3):
    """``(key, current, stable, evaluation) -> Decision``: the check's compiled program."""
    # The arms are [current as the candidate, current, stable]. Acceptance compares the
    # candidate with the current model, i.e. with itself: under "lexicographic" or "better"
    # it would never pass (no gain over itself) and nothing could ever be certified, so the
    # check accepts on "not_worse" (always true here) and only the certification test decides.
    fresh = engine.gate.correction in FRESH
    gate = engine.gate._replace(accept="not_worse",
                                correction="fresh" if fresh else engine.gate.correction)
    evidence = engine.program.evidence

    @jax.jit  # one compiled program: eager dispatch would compile every primitive separately
    def check(key, current, stable, evaluation):
        arms = jax.tree.map(lambda a, b: jnp.stack([a, a, b]), current, stable)
        validation = evaluation.validation if isinstance(evaluation, Evaluation) else evaluation
        stats = evaluate_population(engine.metrics, arms, validation)
        scores = None
        if fresh:
            (scores,) = evaluate_population([evidence], arms, evaluation.fresh)
            scores = scores[..., 0]
        return decide(key, engine.metrics, stats, engine.objectives, engine.constraints,
                      jnp.ones(1, bool), gate, scores)

    return check


def final_check(key, engine: EV3, current: Params, stable: Params, evaluation,
                program=None) -> dict:
    """Tests ``current`` against ``stable`` with ``engine``'s gate (see the module docstring).

    Args:
      evaluation: the validation split, or with the fresh-data gates an
        :class:`~ev3evo.Evaluation` holding it and a fresh batch.
      program: :func:`final_check_program` of ``engine``, when already compiled.

    Returns:
      A ``{"event": "final_check", ...}`` record: ``certified`` (stable ← current), ``pvalue``,
      ``primary``, ``held_out_examples`` (the examples of the test), ``gain``, ``needed``, and
      the metric values of the ``current`` and ``stable`` models on all of the validation
      split.
    """
    if engine.gate.correction in FRESH and not isinstance(evaluation, Evaluation):
        raise ValueError(f'the final check of a Gate(correction="{engine.gate.correction}") '
                         "tests on a fresh batch: pass ev3evo.Evaluation(validation, fresh)")
    d = (program or final_check_program(engine))(key, current, stable, evaluation)
    names = engine.metric_names
    fresh = isinstance(evaluation, Evaluation) and engine.gate.correction in FRESH
    validation = evaluation.validation if isinstance(evaluation, Evaluation) else evaluation
    examples = (int(evaluation.fresh["y"].shape[0]) if fresh
                else int(validation["y"].shape[0] // 2))
    return {
        "event": "final_check",
        "certified": bool(d.certified),
        "pvalue": float(d.pvalue),
        "primary": engine.gate.evidence if fresh else engine.objectives[0].metric,
        "held_out_examples": examples,
        "examples": "fresh transfer" if fresh else "held-out validation",
        "gain": float(d.gain),
        "needed": float(d.needed),
        "current": {n: float(v) for n, v in zip(names, d.values[0])},
        "stable": {n: float(v) for n, v in zip(names, d.values[2])},
    }


def describe(event: dict) -> str:
    """The one-line account of a :func:`final_check` record the run prints."""
    if event["needed"] > 0:
        power = (f"{event['primary']} gain {event['gain']:+.4f}, a certified gain must "
                 f"exceed {event['needed']:+.4f} here")
    else:  # no spread: the two models score every held-out example alike
        power = f"the two models score every example alike on {event['primary']}"
    where = event.get("examples", "held-out validation")
    return (f"final check: current vs stable on {event['held_out_examples']} {where} "
            f"examples: {power} (p={event['pvalue']:.3g}, "
            f"{'certified' if event['certified'] else 'not certified'})")
