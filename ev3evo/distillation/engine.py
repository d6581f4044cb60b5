"""The EV3 engine of a distillation run: objectives, tie-break, gate, sources.

:func:`engine_settings` turns a :class:`~ev3evo.distillation.options.DistillConfig` into what
the engine is built from (objectives, constraints, a validated :class:`~ev3evo.Gate`), before
any work is done, so bad settings are reported at once. :func:`build_engine` builds the engine
for one student architecture (the sources close over the student's pure functions; a grown
student gets a new engine). The engine's model is the student's :class:`ev3evo.Stateful`
(:mod:`ev3evo.distillation.student`): its parameters with a calibration head, and its other
state. The sources:

- ``kd``: gradient rollouts of the KD grid (:mod:`ev3evo.distillation.grid`: every loss
  mixture × Adam and SGD with momentum), all in one vmapped group, so they compile one
  rollout body; :data:`KD_SLOTS` slots a step rotate among the rows, the last winner first,
  and only those rows are rolled out. The gradient sources
  train the student in train mode and carry the state each rollout leaves (batch statistics,
  RNG counters);
- deliberately biased gradients: a sparse random mask on the gradient, guided ES;
- an evosax OpenES re-centred on the accepted model, gaussian mutations;
- the output-layer moves (:mod:`ev3evo.distillation.sources`): softmax temperature and
  per-class biases, on the calibration head.

Every source but the gradient ones is wrapped with :func:`ev3evo.on_params`: it moves the
parameters, and each of its candidates carries the current model's state unchanged.

Candidates are assessed on the validation split with the user's objectives and constraints;
with the tie-breaker (:func:`engine_objectives`) fidelity to the teacher is the last objective.

Example::

    import jax.numpy as jnp
    from ev3evo.distillation.engine import build_engine, engine_settings
    from ev3evo.distillation.options import DistillConfig
    config = DistillConfig(metrics=("accuracy",), population_size=8, correction="split")
    settings = engine_settings(config)
    engine = build_engine(lambda p, x: x @ p["w"], config, settings, 3, 200)
    assert engine.population_size == 8 and engine.objectives[-1].metric == "fidelity"
    assert settings.gate.correction == "split" and settings.gate.certify == "lexicographic"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import optax

from ..adapt.allocation import Allocation
from ..adapt.certification import FRESH, HOLD_OUT
from ..adapt.gate import Gate
from ..assess import metrics as M
from ..assess.objectives import parse_constraint, parse_objective
from ..explore import biased
from ..explore.chain import gradient_chain
from ..explore.gradient import gradient_rollouts
from ..explore.mutation import gaussian
from ..explore.stateful import on_params
from ..loop import EV3
from ..types import Constraint, Objective, Source
from .grid import fidelity, grid_rows, kd_grid, kd_loss
from .scores import REPORTED, metric_objects
from .sources import head_bias, temperature


class EngineSettings(NamedTuple):
    """What a run's engines are built from (checked once, before any work).

    Attributes:
      objectives: the user's objectives in priority order (the tie-breaker not yet added).
      constraints: the user's constraints.
      gate: the validated gate settings.
    """

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    gate: Gate

    @property
    def metric_names(self) -> list[str]:
        """Every metric a run reports: objectives, constraints, then the reported ones."""
        return list(dict.fromkeys([o.metric for o in self.objectives]
                                  + [k.metric for k in self.constraints] + list(REPORTED)))


def _known_metric(name: str, message: str) -> None:
    if name not in M.REGISTRY:
        raise ValueError(message.format(name=name, known=", ".join(sorted(M.REGISTRY))))


#: objectives a teacher defines (no true label needed): the fresh-data gates test them on
#: teacher-labelled transfer examples
TEACHER_DEFINED = ("accuracy", "agreement")


def gate_correction(config, first_metric: str, can_label: bool = True) -> str:
    """The gate's correction for ``config``: ``"auto"`` is ``"sequential"`` when the teacher
    can label new inputs (``can_label``) and the first metric is one it defines (accuracy,
    agreement: certified on agreement with it over fresh transfer examples, the validation
    split guarding the metric itself), else ``"split"``.

    Raises:
      ValueError: a fresh-data gate asked for with a teacher that cannot label new inputs.
    """
    if config.correction == "auto":
        fresh = can_label and first_metric in TEACHER_DEFINED
        return "sequential" if fresh else "split"
    if config.correction in FRESH and not can_label:
        raise ValueError(
            f"--correction {config.correction} tests on teacher-labelled transfer examples, "
            "but the teacher came as precomputed logits: give the teacher itself (a module, a "
            "function or a checkpoint) or use --correction split"
        )
    return config.correction


def engine_settings(config, can_label: bool = True) -> EngineSettings:
    """The objectives, constraints and gate of ``config``, checked.

    ``can_label``: whether the teacher can label new inputs (not precomputed logits), which
    the fresh-data gates need (see :func:`gate_correction`).

    Raises:
      ValueError, TypeError: an unknown metric, an unreadable objective or constraint, or a
        gate setting :meth:`ev3evo.Gate.validated` refuses.
    """
    objectives = tuple(parse_objective(spec) for spec in config.metrics)
    if not objectives:
        raise ValueError("give at least one metric to optimize")
    for o in objectives:
        _known_metric(o.metric, "unknown metric {name!r}; known metrics: {known}")
    constraints = tuple(parse_constraint(spec) for spec in config.constraints)
    for k in constraints:
        _known_metric(k.metric, "constraint names unknown metric {name!r}; known: {known}")
    correction = gate_correction(config, objectives[0].metric, can_label)
    gate = Gate(alpha=config.alpha, correction=correction, accept=config.accept,
                certify=certify_mode(config, correction),
                evidence="agreement" if correction in FRESH else None,
                period=config.gate_period,
                constraint_margin=config.constraint_margin).validated()
    return EngineSettings(objectives, constraints, gate)


def certify_mode(config, correction: str) -> str:
    """The gate's certification rule: ``config.certify``, or by default ``"lexicographic"``
    with the split gate and the fidelity tie-breaker (the stable model then also follows a
    winner that ties it on the metric and is significantly closer to the teacher), else
    ``"primary"``."""
    if config.certify is not None:
        return config.certify
    return "lexicographic" if correction == "split" and config.tie_break else "primary"


def engine_objectives(objectives: Sequence[Objective], tie_break: bool, n_val: int,
                      examples: float = 1.5,
                      class_counts: Sequence[int] | None = None) -> list[Objective]:
    """The user's objectives, plus (``tie_break``) the fidelity tie-breaker.

    With the tie-breaker, a primary objective given without tolerance gets ``examples``
    examples' worth, ``examples / n_val`` (for ECE ``0.6 · examples / n_val``): candidates
    within it count as tied and the one closest to the teacher wins, instead of whichever won
    a coin flip on one validation example. Moving one example changes ECE by at most
    ``1 / n_val`` too (one bin's accuracy moves by ``1 / n_bin``, weighted by
    ``n_bin / n_val``), so its band shrinks with the validation split like accuracy's; the
    factor 0.6 gives a band of 0.0133 at 180 selection examples. A fixed band would swallow
    every ECE difference on a large validation split, where the models' ECE is itself about
    0.01–0.03.

    Macro-F1 averages the classes' F1: one example of a class with ``n_c`` of them moves it
    by about ``1 / (C n_c)``, which on imbalanced data is many times ``1 / n_val`` for the
    small classes. With ``class_counts`` (the validation labels' counts per class) its band
    is ``examples`` times that one-example effect averaged over the classes present,
    ``mean_c n_val / (C n_c) / n_val`` (``examples / n_val`` when the classes are balanced).
    """
    objectives = list(objectives)
    if not tie_break:
        return objectives
    first = objectives[0]
    if first.tolerance == 0.0 and first.metric != "neg_loss":
        tolerance = examples * one_example(first.metric, n_val, class_counts)
        objectives[0] = first._replace(tolerance=tolerance)
    return [*objectives, Objective("fidelity", 1e9)]


def one_example(metric: str, n_val: int, class_counts: Sequence[int] | None = None) -> float:
    """About how much one of ``n_val`` examples moves ``metric`` (see
    :func:`engine_objectives`): ``1 / n_val``, for ECE ``0.6 / n_val``, for macro-F1
    :func:`macro_f1_scale` ``/ n_val``."""
    scale = 0.6 if metric == "ece" else 1.0
    if metric == "macro_f1" and class_counts is not None:
        scale = macro_f1_scale(class_counts)
    return scale / n_val


def macro_f1_scale(class_counts: Sequence[int]) -> float:
    """One example's effect on macro-F1 relative to its effect on accuracy, averaged over the
    classes present: ``mean_c n / (C n_c)`` (1 for balanced classes).

    Example::

        from ev3evo.distillation.engine import macro_f1_scale
        assert macro_f1_scale([50, 50, 0]) == 1.0
        assert macro_f1_scale([90, 10]) > 2.5   # (100/180 + 100/20) / 2
    """
    counts = np.asarray(class_counts, np.float64)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 1.0
    return float(np.mean(counts.sum() / (counts.size * counts)))


#: rows of the KD grid rolled out a step (of 18): the last winner and 2 others at random
KD_SLOTS = 3


def distillation_sources(student, config) -> list[Source]:
    """The sources of a run for a ``student`` (see the module docstring and
    :func:`build_engine`)."""
    # The KD grid: every mixture × optimizer in one source, one compiled rollout body. Only
    # KD_SLOTS rows a step are rolled out: the whole grid was 90 % of a step's time, and the
    # allocation never gives it all its rows. On mnist1d (mlp:16, 20 s, 5 seeds) 3 rows took
    # 36 steps where all 18 took 11, with validation accuracy 0.586 (6 rows: 0.577, 2: 0.569).
    sources = [kd_grid(student, grid_rows(), config.rollout_steps, config.batch_size, "kd",
                       slots=KD_SLOTS)]
    kd = kd_loss(student)
    # Deliberately biased gradients: a sparse random mask on the gradient (two streams). A
    # source of its own: inside the grid's group every row would draw the mask (under vmap
    # every optimizer of a choice runs): rollouts a quarter slower on mnist1d.
    sources.append(
        gradient_rollouts([kd], [biased.masked(optax.adam(3e-3), keep=0.3, seed=config.seed)],
                          steps=config.rollout_steps, batch_size=config.batch_size, repeats=2,
                          name="masked")
    )
    sources.append(biased.guided_es(kd, size=5, sigma=0.05, name="guided_es"))
    if config.kd_chain:
        # plain KD inside the loop: a rollout from the current model counts only when it
        # wins, a chain's steps always count (see ev3evo.explore.chain)
        sources.append(gradient_chain(kd, [optax.adam(3e-3)], config.kd_chain,
                                      config.batch_size, config.kd_chain_average or None,
                                      name="kd_chain"))  # fmt: skip
    # The rest see the parameters only; a stateful student's other state is carried.
    moves = [open_es_source(), gaussian(4, sigma=0.01)]
    if hasattr(student, "train_apply"):
        # Output-layer moves on the calibration head: the softmax temperature (calibration)
        # and per-class thresholds.
        moves += [temperature(2), head_bias(2)]
    sources.extend(on_params(s) for s in moves)
    return sources


def open_es_source() -> Source:
    """An evosax OpenES (8 candidates, scale 0.02) re-centred on the accepted model."""
    from ..explore.evosax import evosax_source  # imports evosax: loaded when first needed

    return evosax_source("Open_ES", 8, std_schedule=optax.constant_schedule(0.02),
                         optimizer=optax.sgd(1.0), name="open_es")


def build_engine(student, config, settings: EngineSettings, num_classes: int, n_val: int,
                 class_counts: Sequence[int] | None = None) -> EV3:
    """The EV3 engine of a run for one student architecture.

    Args:
      student: the run's :class:`~ev3evo.distillation.student.Student` (its engine model is
        an :class:`ev3evo.Stateful`: the output-layer moves act on its calibration head), or
        a plain ``(params, x) -> logits`` (then without the output-layer moves).
      config: the run's :class:`~ev3evo.distillation.options.DistillConfig`.
      settings: its :func:`engine_settings`.
      num_classes: the number of classes.
      n_val: the number of validation examples (the tie band is relative to the examples the
        winner is selected on: half of them with the split gate).
      class_counts: the validation labels' counts per class (the macro-F1 tie band is
        scaled by them, see :func:`engine_objectives`).
    """
    apply = getattr(student, "apply", student)
    sources = distillation_sources(student, config)
    # The tie band counts examples of the selection half of the validation split, also when
    # the candidates are selected on transfer batches (as measured there).
    held_out = settings.gate.correction in HOLD_OUT
    objectives = engine_objectives(settings.objectives, config.tie_break,
                                   n_val // 2 if held_out else n_val, config.tie_examples,
                                   class_counts)
    metrics = metric_objects(apply, settings.metric_names, num_classes)
    if config.tie_break:
        metrics.append(fidelity(apply))
    capacity = sum(s.size for s in sources)
    gate = settings.gate
    if config.select_on == "thresholdout" and gate.correction in FRESH:
        # the holdout answers on the even validation half: its examples scale the threshold
        gate = gate._replace(thresholdout=config.thresholdout_examples * one_example(
            settings.objectives[0].metric, n_val // 2, class_counts))
    return EV3(
        sources,
        metrics,
        objectives=objectives,
        constraints=settings.constraints,
        gate=gate,
        allocation=Allocation(population_size=min(config.population_size, capacity)),
        patience=config.patience,
        # Timed: the run reports where EV3's time goes (rollouts and the other sources,
        # evaluation, the gate), measured on every step of the run itself. Profiling the
        # stages after the run instead would compile them a second time; compiled apart
        # during the run they replace the fused step (the same computations, so the same
        # decisions), and the step waits for each stage.
        timed=True,
    )
