"""The distillation run: teacher → EV3 student (optionally grown) → final check → baselines.

:func:`distill` (also ``ev3evo.distill``) is the Python front door of ``ev3evo distill``. One
call, in named steps:

1. **settings**: the settings and the objects it was given (:mod:`~ev3evo.distillation.inputs`,
   :func:`~ev3evo.distillation.engine.engine_settings`), checked before any work;
2. **data** (:mod:`~ev3evo.distillation.data`): a name, a path, arrays or splits, examples of
   any shape;
3. **student** (:mod:`~ev3evo.distillation.student`): the user's nnx Module or a built-in
   one, checked against the data (before any training);
4. **teacher** (:mod:`~ev3evo.distillation.teachers`): its logits on every split: given with
   the data, computed once by the user's module or callable, or from a built-in teacher
   trained and cached under the output folder (or loaded from a checkpoint);
5. **EV3** (:mod:`~ev3evo.distillation.engine`): assessed on the **validation** split with the
   chosen objectives and constraints, growing the student when the run stalls
   (:mod:`~ev3evo.distillation.growing`), checkpointed and resumable
   (:mod:`~ev3evo.distillation.resume`);
6. **final check**: with the split gate, the final current model against the stable one on
   the held-out half (:mod:`~ev3evo.distillation.final_check`);
7. **certified student**: the certified model as an nnx Module of the student's own class,
   at the size it was certified at, its calibration head folded in
   (:meth:`~ev3evo.distillation.student.Student.certified`);
8. **baselines**: KD with every optimizer of the grid and a pure evosax ES, each given EV3's
   wall time (:mod:`~ev3evo.distillation.baselines`);
9. **report**: test and validation metrics of every method, the best one chosen on
   validation, and whether EV3 certified anything: ``summary.json`` (every setting too, so
   the run can be repeated from it), ``history.jsonl`` and PNG plots under ``out``
   (:mod:`~ev3evo.distillation.report`).

Where the outputs go: ``out``; a resumed run's own folder; with neither (``out=None``, the
Python default) a temporary folder, deleted before :func:`distill` returns: the results are
in the returned :class:`DistillResult` only (:meth:`DistillResult.save` writes them).

Example::

    import ev3evo
    result = ev3evo.distill(steps=5, student="mlp:3", population_size=8, rollout_steps=50,
                            baselines=False, teacher_epochs=1, progress=False)
    assert 0.0 <= result.methods["ev3"]["test"]["accuracy"] <= 1.0
    assert type(result.student).__name__ == "MLP"          # the certified student, nnx
    assert result.out is None                               # out=None: nothing left on disk
    result.save("runs/five-steps")                          # summary, history and plots
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from .. import __version__, interrupts
from ..adapt.certification import FRESH
from ..assess.objectives import parse_constraint
from ..callbacks import Callback, JSONLHistory, ProgressBar, TensorBoard
from ..run import RunResult, run
from ..timing import describe_shares, time_shares
from ..types import Evaluation
from . import baselines as B
from . import inputs, models, outputs, report, resume
from .data import Dataset
from .engine import EngineSettings, build_engine, engine_settings
from .evidence import gate_power, teacher_misses
from .final_check import CHECKED, describe, final_check, final_check_program
from .grid import named_loss, optimizer_grid
from .growing import Growth
from .history import Annotate, Replay, append_event, write_event
from .options import DistillConfig
from .resume import Checkpointing, checkpointing, resumed_student, run_config
from .scores import evaluate, logit_metrics
from .student import Student
from .teachers import Labeller, teacher_of
from .transfer import fresh_batches


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
      summary: the dict written to ``summary.json`` (``summary["methods"][name]["test"]`` ...).
      history: EV3's per-step records and events (also in ``history.jsonl``).
      arch: the certified student's architecture dict when it is built in (else ``None``).
      stable: the certified student as the engine holds it (an :class:`ev3evo.Stateful`).
      out: the output folder; ``None`` when nothing was kept on disk (``out=None``: see
        :meth:`save`).
      student: the certified student, an nnx Module of the student's own class in eval mode
        (its calibration head folded into its output layer; when that is impossible, a
        :class:`~ev3evo.distillation.head.Calibrated` around it, as ``summary["student"]``
        says). It takes examples as :meth:`standardize` makes them.
      dataset: the run's :class:`~ev3evo.distillation.data.Dataset` (standardized splits).
    """

    summary: dict
    history: list = field(default_factory=list)
    arch: dict | None = None
    stable: Any = None
    out: str | None = None
    student: nnx.Module | None = None
    dataset: Dataset | None = None

    @property
    def methods(self) -> dict:
        return self.summary["methods"]

    @property
    def teacher(self) -> dict:
        return self.summary["teacher"]

    def standardize(self, x) -> np.ndarray:
        """Raw examples ``x`` as the student takes them (the run's train statistics; the
        identity when the run did not standardize)."""
        return self.dataset.standardize(x)

    def save(self, folder: str | os.PathLike) -> str:
        """Writes ``summary.json``, ``history.jsonl`` and the plots into ``folder`` (made if
        needed), as a run with ``out=folder`` would have; returns the folder."""
        return outputs.save(folder, self.summary, self.history)


class EV3Outcome(NamedTuple):
    """What the EV3 phase of a run gives the rest of it (see :func:`run_ev3`)."""

    result: RunResult
    student: Student  # the student reached (grown or not)
    stable: Any  # the certified model, after the final check, at the size reached
    final_check: dict | None
    events: list  # growth events
    seconds: float  # EV3's wall time, final check included
    growth: Growth
    gate: dict | None = None  # the gate in use and its power (see ev3evo.distillation.evidence)
    warnings: tuple = ()  # said before the run (the gate's power, the teacher's constraints)
    time_shares: dict | None = None  # EV3's wall time by stage (ev3evo.timing.time_shares)


class Certified(NamedTuple):
    """The certified student (see :func:`certify`)."""

    student: Student  # at the size it was certified at
    model: Any  # its engine model
    module: nnx.Module  # as an nnx Module, head folded (or wrapped)
    folded: bool


def distill(config: DistillConfig | None = None, /, *, student=None, teacher=None, data=None,
            **options) -> DistillResult:
    """Distills a teacher into a student with EV3, against baselines at equal wall time.

    Args:
      config: a :class:`~ev3evo.distillation.options.DistillConfig`; keyword arguments
        replace its fields (``distill(steps=50, metrics=["macro_f1"])``).
      student: a built-in spec (``"mlp:8"``, ``"cnn:8,16"``) or any flax nnx Module returning
        one logit per class. EV3 explores its ``nnx.Param`` leaves; its other state (batch
        statistics, RNG streams) is carried, updated by the gradient rollouts as training
        would, never by the other sources; it is assessed in eval mode. Your own module sees
        the data as you give it (``standardize=False`` unless you set it).
      teacher: a checkpoint path, an nnx Module, any callable ``x -> logits``, or the logits:
        an array aligned with the examples of ``data`` (one per split for a dict of splits).
      data: a dataset name or a path (the ``data`` setting), arrays ``(x, y)``, or a dict of
        splits ``{"train": (x, y), "val": (x, y), "test": (x, y)}``.

    Returns:
      A :class:`DistillResult`; its ``summary`` is also written to ``out/summary.json``.

    Raises:
      ValueError, TypeError: bad settings, or a student, teacher or data that do not fit
        (``ev3evo.distillation.data.DataError`` and ``ModelError`` are ``ValueError`` s).
    """
    c, objects = inputs.given(config, student, teacher, data, options)
    settings = engine_settings(c)
    with outputs.output_folder(c.out, c.resume) as out:
        return _distill(c, objects, settings, out)


def _distill(c: DistillConfig, objects: inputs.Given, settings: EngineSettings,
             out: str) -> DistillResult:
    log = _logger(c.progress)
    ckpt = checkpointing(c, out)
    ds = inputs.dataset(c, objects)
    for note in ds.notes:
        log(note)
    learner = inputs.student(c, objects, ds)  # checked against the data before any training
    ckpt = resume.started(ckpt, c)
    splits, teacher_info, labeller = teacher_of(ds, objects.teacher, c, out, log,
                                                expect=ckpt.teacher)
    ckpt = ckpt._replace(fingerprint=ckpt.log.done("teacher", teacher_info["fingerprint"]))
    interrupts.stop_point("after the teacher (it is cached under OUT/teacher)")
    settings = engine_settings(c, can_label=labeller is not None)  # "auto" resolved
    names = settings.metric_names
    k_run, k_kd, k_es = run_keys(c.seed)
    evaluation = evaluation_batches(c, settings, splits, labeller)
    ev3 = run_ev3(k_run, c, settings, ds.name, splits, learner, ckpt, out, log, evaluation)
    ckpt.log.done("ev3", {"seconds": ev3.seconds, "status": ev3.result.status,
                          "steps": int(ev3.result.state.step), "asked": resume.asked(c)})
    final = certify(ev3, splits)
    methods = {"ev3": _ev3_method(ev3, final, splits, names)}
    if not methods["ev3"]["certified"]:
        log(f"ev3: {report.NOTHING_CERTIFIED}")
    if c.baselines:
        budget = c.baseline_seconds or ev3.seconds
        methods.update(run_baselines(k_kd, k_es, c, learner, splits, names,
                                     settings.objectives[0].metric, budget, log, ckpt.log))
    teacher_report = _teacher_report(teacher_info, splits, names, ds.num_classes)
    summary = _summary(c, settings, ds, splits, teacher_report, methods, ev3, final)
    summary["given"] = inputs.described(objects)
    history = outputs.write_outputs(out, summary)
    if c.progress:
        _print(summary, c, ev3)
    return DistillResult(summary, history, final.student.arch, final.model, c.out,
                         final.module, ds)


def _logger(progress: bool):
    if progress:
        return lambda *a: print(*a, file=sys.stderr, flush=True)
    return lambda *a: None


def run_keys(seed: int):
    """The keys of a run with ``seed``: ``(EV3's run, the KD baselines, the ES baseline)``."""
    _, k_run, k_kd, k_es = jax.random.split(jax.random.key(seed), 4)
    return k_run, k_kd, k_es


def _teacher_report(info: dict, splits: dict, names, num_classes: int) -> dict:
    return {
        "test": logit_metrics(splits["test"]["teacher"], splits["test"], names, num_classes),
        "validation": logit_metrics(splits["val"]["teacher"], splits["val"], names, num_classes),
        **info,
    }


def evaluation_batches(c: DistillConfig, settings: EngineSettings, splits: dict,
                       labeller: Labeller | None):
    """What EV3 is assessed on each step: the validation split, and with the fresh-data gates
    ``(key, step) -> Evaluation(validation, transfer batch[, selection batch])``
    (teacher-labelled examples made afresh from the training inputs,
    :mod:`~ev3evo.distillation.transfer`; with ``select_on`` ``"transfer"`` or
    ``"thresholdout"`` a second one, on which the candidates are selected and accepted)."""
    val = splits["val"]
    if settings.gate.correction not in FRESH:
        return val
    make = fresh_batches(splits["train"]["x"], labeller.fn, c.transfer,
                         traceable=labeller.traceable)
    if c.select_on == "validation":
        return lambda key, step: Evaluation(val, make(key))

    def evaluation(key, step):
        # Selecting on the validation split every step fits the current model to it. On
        # mnist1d (mlp:16, 20 s, 5 seeds) the KD candidates won 2-6 of ~65 steps, the luckiest
        # small perturbations the rest (validation accuracy 0.590); selected here, they won
        # 8-15 of ~51 (0.592). On digits (mlp:8) it was worse: 0.949 against 0.959, so
        # validation stays the default. Thresholdout (the validation half answering where
        # this batch misleads) did not change that: test 0.582 against 0.583 on mnist1d,
        # 0.947 against 0.958 on digits (5 seeds each, EV3 alone).
        k_test, k_select = jax.random.split(key)
        return Evaluation(val, make(k_test), make(k_select))

    return evaluation


def run_ev3(key, c: DistillConfig, settings: EngineSettings, name: str, splits: dict,
            student: Student, ckpt: Checkpointing, out: str, log, evaluation=None) -> EV3Outcome:
    """The EV3 phase: the engine, growth, callbacks, the run and the final check.

    ``evaluation``: what each step is assessed on (:func:`evaluation_batches`; default the
    validation split)."""
    train, val = splits["train"], splits["val"]
    evaluation = val if evaluation is None else evaluation
    names = settings.metric_names
    counts = np.bincount(np.asarray(val["y"]), minlength=student.num_classes)
    rebuild = lambda s: build_engine(s, c, settings, s.num_classes, len(val["y"]), counts)
    done = None if ckpt.log is None else ckpt.log.record("ev3")
    if ckpt.saved is not None:
        log(f"resuming from step {ckpt.saved.step} ({ckpt.saved.path})"
            + (" (the EV3 phase had ended)" if done else ""))
    student, model, events = resumed_student(ckpt.saved, student, student.initial)
    engine = rebuild(student)
    jsonl = JSONLHistory(os.path.join(out, "history.jsonl"), mode="w", root=out)
    growth = Growth(c, student, model, train, val, names, rebuild, events,
                    on_event=lambda event: _record_growth(jsonl, event, log),
                    evaluation=evaluation)
    log(f"EV3 on {name}: student {student.describe()} ({growth.size} params), "
        f"objectives {[o.metric for o in settings.objectives]}, constraints "
        f"{list(c.constraints)}, {len(engine.source_names)} sources, population "
        f"{engine.population_size}")
    power = gate_power(settings.gate, len(val["y"]), c.transfer, c.gate_period,
                       engine.population_size)
    log(f"the gate certifies on {power['examples']} {power['where']}: the smallest gain it can "
        f"certify is {100 * power['floor']:.2f} points ({100 * power['typical']:.2f} when the "
        "models disagree on 5% of them)")
    warnings = [power["warning"]] if power["warning"] else []
    warnings += teacher_misses(c.constraints, logit_metrics(val["teacher"], val, names,
                                                            student.num_classes))
    for w in warnings:
        log(f"warning: {w}")
    checked = c.final_check and settings.gate.correction in CHECKED
    check_program = final_check_program(engine) if checked else None
    # The final check counts in the time budget: the steps stop early enough to leave it
    # twice its time measured by the warm-up (on a shared machine one call can take longer).
    reserve = 2 * _warm_up(engine, key, model, train, evaluation, log, check_program) if (
        c.warmup and done is None) else 0.0
    start = time.perf_counter()
    growth.start()
    metadata = {"config": run_config(c), "every": ckpt.every, "teacher": ckpt.fingerprint}
    steps, budget = resume.remaining(c, ckpt, done)
    if budget is not None:
        budget = max(budget - reserve - (time.perf_counter() - start), 1e-9)
    result = run(engine, key, model, train, evaluation, steps,
                 callbacks=_callbacks(c, growth, jsonl, out), time_budget=budget,
                 on_stall=growth, checkpoint_dir=ckpt.directory, checkpoint_every=ckpt.every,
                 checkpoint_seconds=ckpt.seconds, checkpoint_root=out, resume=ckpt.resume,
                 checkpoint_metadata=lambda engine, state: {
                     **metadata, "arch": growth.student.arch, "events": growth.events})
    if done is not None:
        result.status = done["status"]
    stable, checked_event = result.stable, None
    if checked and result.engine is not None:
        if result.engine is not engine:  # grown: the check's program is the new engine's
            check_program = final_check_program(result.engine)
        check_key = jax.random.fold_in(key, FINAL_CHECK_SALT)
        batch = evaluation(check_key, -1) if callable(evaluation) else evaluation
        checked_event = final_check(check_key, result.engine, result.current, result.stable,
                                    batch, check_program)
        checked_event["step"] = int(result.state.step)
        append_event(os.path.join(out, "history.jsonl"), checked_event, root=out)
        if checked_event["certified"]:
            stable = result.current
        log(describe(checked_event))
    gate = {**settings.gate._asdict(), **{k: v for k, v in power.items() if k != "warning"}}
    session = time.perf_counter() - start
    seconds = done["seconds"] if done else ckpt.offset + session
    shares = _time_shares(result, session, log)
    return EV3Outcome(result, growth.student, stable, checked_event, growth.events, seconds,
                      growth, gate, tuple(warnings), shares)


def _time_shares(result: RunResult, seconds: float, log) -> dict | None:
    """The shares of this session's ``seconds`` of EV3 in its stages, over the steps it ran
    (the engine is timed: :mod:`ev3evo.timing`), logged; ``None`` when no step ran."""
    if result.steps == 0 or seconds <= 0:
        return None
    shares = time_shares(result.history[len(result.history) - result.steps:], seconds)
    log(f"EV3's {seconds:.1f}s: {describe_shares(shares)}")
    return shares


def certify(ev3: EV3Outcome, splits: dict, check_examples: int = 512) -> Certified:
    """The certified student as an nnx Module, at the size it was certified at.

    The run's stable model, unless a growth came after its last certification: then the
    stable model before that growth, the same function at its smaller size (see
    :meth:`~ev3evo.distillation.growing.Growth.certified`). Its head is folded into its output
    layer, checked on the first ``check_examples`` validation examples.
    """
    if ev3.final_check is not None and ev3.final_check["certified"]:
        student, model = ev3.student, ev3.stable
    else:
        last = max(certified_steps(ev3), default=0)
        student, model = ev3.growth.certified(ev3.stable, last)
    module, folded = student.certified(model, splits["val"]["x"][:check_examples])
    return Certified(student, model, module, folded)


def certified_steps(ev3: EV3Outcome) -> list[int]:
    """The steps at which the run certified a new stable model (the final check's step too
    when it certified); ``[]``: the certified student is the initial model."""
    steps = [int(r["step"]) for r in ev3.result.history if r.get("certified")]
    if ev3.final_check is not None and ev3.final_check["certified"]:
        steps.append(int(ev3.final_check["step"]))
    return steps


def _record_growth(jsonl: JSONLHistory, event: dict, log) -> None:
    write_event(jsonl, event)
    how = (f"accepted; {event['params_before']} -> {event['params_after']} params; "
           f"{event['growth_seconds']:.1f}s, {event['compile_seconds']:.1f}s of them "
           "recompiling the step, counted in the time budget"
           if event["accepted"] else "refused: it changed the stable model's metrics")
    log(f"growth at step {event['step']}: {event['arch_before']} -> {event['arch_after']} "
        f"({how})")


def _callbacks(c: DistillConfig, growth: Growth, jsonl: JSONLHistory,
               out: str) -> list[Callback]:
    callbacks: list[Callback] = [Annotate(growth), jsonl]
    if c.progress:  # it counts what ends the run: the time budget (with step k/N), or steps
        callbacks.append(ProgressBar(total=c.steps, time_budget=c.time_budget, desc="ev3",
                                     file=sys.stderr))
    if c.tensorboard:
        callbacks.append(TensorBoard(os.path.join(out, "tensorboard")))
    callbacks.append(Replay(jsonl, growth.events))
    return callbacks


#: the final check's key is fold_in(the run's key, FINAL_CHECK_SALT): outside the steps' keys
FINAL_CHECK_SALT = 0x5EED


def _warm_up(engine, key, model, train, evaluation, log, check_program=None) -> float:
    """Compiles the step (and the final check) before the clock starts, on throw-away data;
    returns the seconds of one compiled final check (its fresh batch included), 0 without."""
    t0 = time.perf_counter()
    batch = evaluation(key, 0) if callable(evaluation) else evaluation
    state = engine.init(key, model)
    jax.block_until_ready(engine.step(key, state, train, batch))
    check = lambda b: jax.block_until_ready(check_program(key, state.current, state.stable, b))
    if check_program is not None:
        check(batch)
    log(f"EV3 step compiled in {time.perf_counter() - t0:.1f}s"
        f"{' with the final check' if check_program is not None else ''}, before EV3's clock "
        "starts (not counted in its time or its time budget)")
    if check_program is None:
        return 0.0
    t1 = time.perf_counter()
    check(evaluation(key, 1) if callable(evaluation) else evaluation)
    return time.perf_counter() - t1


def _module_apply(module: nnx.Module):
    """``(_, x) -> logits`` of an nnx module, compiled once (for the report's metrics)."""
    graphdef, state = nnx.split(module)
    run = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    return lambda _, x: run(state, x)


def _ev3_method(ev3: EV3Outcome, final: Certified, splits: dict, names) -> dict:
    """EV3's record: the metrics of the returned module itself (what the user gets), its size,
    and the final current model's test metrics and size."""
    apply, r, k = _module_apply(final.module), ev3.result, final.student.num_classes
    steps = certified_steps(ev3)
    return {
        "certified": bool(steps),
        "certified_steps": steps,
        **({} if steps else {"note": report.NOTHING_CERTIFIED}),
        "test": evaluate(apply, None, splits["test"], names, k),
        "validation": evaluate(apply, None, splits["val"], names, k),
        "seconds": ev3.seconds,
        "params": models.count_params(final.module),
        "steps": int(r.state.step),
        "status": r.status,
        "arch": final.student.describe(),
        "current_test": ev3.student.evaluate(r.current, splits["test"], names),
        "current_arch": ev3.student.describe(),
        "current_params": ev3.student.count(r.current),
        "time_shares": ev3.time_shares,
    }


#: metrics that a softmax temperature moves (the argmax does not): with one of them to optimize
#: or to meet, every KD baseline is also reported temperature-scaled on validation ("+ts")
TEMPERATURE_MOVES = frozenset({"ece", "neg_loss"})
SCALED = "temperature_scaled"


def run_baselines(k_kd, k_es, c: DistillConfig, student: Student, splits: dict, names,
                  primary: str, budget: float, log, phases=None) -> dict:
    """The baselines, each given ``budget`` seconds from the initial ``student``: KD with every
    optimizer of the grid on ``c.kd_loss`` (and, when the run optimizes or constrains a metric
    in :data:`TEMPERATURE_MOVES`, each KD student temperature-scaled on validation as well,
    ``kd_...+ts``), and the evosax ES ``c.es_algorithm``;
    ``{method: record}``. With ``phases`` (:class:`~ev3evo.distillation.phases.Phases`), a
    baseline it records as done is not run again, and each one run is recorded as it ends."""
    from ..assess import metrics as M

    train, val = splits["train"], splits["val"]
    model0 = student.initial
    metric = M.get(primary, student.apply, student.num_classes)
    constraints = tuple((M.get(k.metric, student.apply, student.num_classes), k)
                        for k in map(parse_constraint, c.constraints))
    calibrating = bool(TEMPERATURE_MOVES & {primary, *(k.metric for _, k in constraints)})

    def kd(opt) -> dict:
        r = B.kd_train(k_kd, student.apply, model0, train, val, named_loss(student, c.kd_loss),
                       opt, metric, time_budget=budget, batch_size=c.batch_size,
                       constraints=constraints)
        record = {**_method(student, r, splits, names), "budget": budget, "loss": c.kd_loss}
        if calibrating:  # the standard post-hoc fix, so EV3's calibration is not compared
            start = time.perf_counter()  # with uncalibrated networks only
            scaled = r._replace(params=B.temperature_scaled(student.apply, r.params, val))
            record[SCALED] = {**_method(student, scaled, splits, names), "budget": budget,
                              "loss": c.kd_loss,
                              "seconds": r.seconds + time.perf_counter() - start}
        return record

    runs = {f"kd_{name}": lambda opt=opt: kd(opt) for name, opt in optimizer_grid().items()}
    runs[f"es_{c.es_algorithm.lower()}"] = lambda: {
        **_method(student, B.es_train(k_es, model0, train, val, metric, time_budget=budget,
                                      algorithm=c.es_algorithm, constraints=constraints),
                  splits, names),
        "budget": budget}
    methods = {}
    for method, baseline in runs.items():
        kept = None if phases is None else phases.record(method)
        if kept is not None and kept.get("budget") == budget and kept.get("loss") == (
                c.kd_loss if method.startswith("kd_") else None):
            methods[method] = kept
            log(f"baseline {method}: done before the resume")
            continue
        interrupts.stop_point(f"before the baseline {method} (the baselines done are saved)")
        log(f"baseline {method}: up to {budget:.1f}s")
        methods[method] = baseline() if phases is None else phases.done(method, baseline())
    for method in [m for m in methods if SCALED in methods[m]]:
        methods[f"{method}+ts"] = methods[method][SCALED]
        methods[method] = {k: v for k, v in methods[method].items() if k != SCALED}
    return methods


def _method(student: Student, r: B.BaselineResult, splits: dict, names) -> dict:
    return {
        "test": student.evaluate(r.params, splits["test"], names),
        "validation": student.evaluate(r.params, splits["val"], names),
        "seconds": r.seconds,
        "params": student.count(r.params),
        "steps": r.steps,
    }


def _summary(c: DistillConfig, settings: EngineSettings, ds, splits: dict, teacher: dict,
             methods: dict, ev3: EV3Outcome, final: Certified) -> dict:
    head = ("folded into its output layer" if final.folded else
            "kept apart: the returned student is Calibrated(student, scale, bias), since no "
            "nnx.Linear computes its logits")
    return {
        "ev3evo": __version__,
        "dataset": {"name": ds.name, "num_classes": ds.num_classes,
                    "feature_shape": list(ds.feature_shape), "standardized": c.standardize,
                    "sizes": {s: len(splits[s]["y"]) for s in splits},
                    "notes": list(ds.notes)},
        "config": report.jsonable(dataclasses.asdict(c)),
        "primary": settings.objectives[0].metric,
        "objectives": [o._asdict() for o in settings.objectives],
        "constraints": list(c.constraints),
        "metrics": settings.metric_names,
        "student": {"class": type(final.module).__name__, "arch": final.student.describe(),
                    "params": models.count_params(final.module), "head": head,
                    "folded": final.folded},
        "teacher": teacher,
        "methods": methods,
        "growth": ev3.events,
        "final_check": ev3.final_check,
        "gate": ev3.gate,
        "warnings": list(ev3.warnings),
        "status": ev3.result.status,
        "best": report.best(methods, settings.objectives[0].metric, c.constraints),
    }


def _print(summary: dict, c: DistillConfig, ev3: EV3Outcome) -> None:
    print(report.table(summary, summary["metrics"]))
    if c.baselines:
        how = "EV3's wall time" if c.baseline_seconds is None else "--baseline-seconds"
        budget = next(r["budget"] for r in summary["methods"].values() if "budget" in r)
        among = " among the checkpoints that meet the constraints" if c.constraints else ""
        print(f"(EV3 ran {ev3.seconds:.1f}s, {int(ev3.result.state.step)} steps, step compiled "
              f"{'before' if c.warmup else 'inside'} its clock; each baseline was given up to "
              f"{budget:.1f}s ({how}); each reports its best checkpoint on validation "
              f"{summary['primary']}{among}, and 'seconds' is what each used)")
    print(f"outputs in {c.out}" if c.out is not None else
          "outputs not kept on disk (out=None): DistillResult.save(folder) writes them")


__all__ = ["Certified", "DistillConfig", "DistillResult", "certify", "distill", "run_keys"]
