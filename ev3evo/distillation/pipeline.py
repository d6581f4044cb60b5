"""The distillation run: teacher → EV3 student (optionally grown) → final check → baselines.

:func:`distill` (also ``ev3evo.distill``) is the Python front door of ``ev3evo distill``. One
call, in named steps:

1. checks the settings (:mod:`~ev3evo.distillation.options`,
   :func:`~ev3evo.distillation.engine.engine_settings`) before any work;
2. loads the data (:mod:`~ev3evo.distillation.data`) and a teacher (trained and cached under
   the output folder, or loaded from a checkpoint);
3. runs EV3 on a small student (:mod:`~ev3evo.distillation.engine`), assessed on the
   **validation** split with the chosen objectives and constraints, growing the student when
   the run stalls (:mod:`~ev3evo.distillation.student`), checkpointed and resumable
   (:mod:`~ev3evo.distillation.resume`);
4. with the split gate, tests the final current model against the stable one on the held-out
   half (:mod:`~ev3evo.distillation.final_check`);
5. gives each baseline (KD with every optimizer of the grid, a pure evosax ES;
   :mod:`~ev3evo.distillation.baselines`) EV3's wall time;
6. reports test and validation metrics of every method: ``summary.json``, ``history.jsonl``
   and PNG plots under ``out`` (:mod:`~ev3evo.distillation.report`).

Example::

    import ev3evo
    result = ev3evo.distill(steps=5, baselines=False, teacher_epochs=5, progress=False)
    assert 0.0 <= result.methods["ev3"]["test"]["accuracy"] <= 1.0
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np

from ..callbacks import Callback, JSONLHistory, ProgressBar
from ..run import RunResult, run
from ..types import Params
from . import baselines as B
from . import data as D
from . import models, report
from . import teacher as T
from .engine import EngineSettings, build_engine, engine_settings
from .final_check import describe, final_check
from .grid import named_loss, optimizer_grid
from .history import Annotate, Replay, append_event, write_event
from .options import DistillConfig, checked, configure
from .resume import Checkpointing, checkpointing, resumed_student, run_config
from .scores import logit_metrics
from .student import Growth, Student


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
      summary: the dict written to ``summary.json`` (``summary["methods"][name]["test"]`` ...).
      history: EV3's per-step records and events (also in ``history.jsonl``).
      arch: the final student architecture (a dict for :mod:`ev3evo.distillation.models`).
      stable: the final certified student's parameters.
      out: the output folder.
    """

    summary: dict
    history: list = field(default_factory=list)
    arch: dict = field(default_factory=dict)
    stable: Params = None
    out: str = ""

    @property
    def methods(self) -> dict:
        return self.summary["methods"]

    @property
    def teacher(self) -> dict:
        return self.summary["teacher"]


class EV3Outcome(NamedTuple):
    """What the EV3 phase of a run gives the rest of it (see :func:`run_ev3`)."""

    result: RunResult
    student: Student  # the architecture reached (grown or not)
    stable: Params  # the certified student, after the final check
    final_check: dict | None
    events: list  # growth events
    seconds: float  # EV3's wall time, final check included


def distill(config: DistillConfig | None = None, /, **options) -> DistillResult:
    """Distills a teacher into a small student with EV3, against baselines at equal wall time.

    Args:
      config: a :class:`~ev3evo.distillation.options.DistillConfig`; keyword arguments
        replace its fields (``distill(steps=50, metrics=["macro_f1"])``).

    Returns:
      A :class:`DistillResult`; its ``summary`` is also written to ``out/summary.json``.

    Raises:
      ValueError, TypeError: bad settings; ``ev3evo.distillation.data.DataError`` (a
        ``ValueError``) for unusable data.
    """
    c = checked(configure(config, **options))
    settings = engine_settings(c)
    log = _logger(c.progress)
    out = c.out or tempfile.mkdtemp(prefix="ev3evo-distill-")
    os.makedirs(out, exist_ok=True)
    ckpt = checkpointing(c, out)
    ds = load_data(c)
    teacher = _teacher(ds, c, out, log)
    splits = T.teacher_splits(ds, teacher)
    k_run, k_kd, k_es = run_keys(c.seed)
    student, params0 = Student.create(int(np.prod(ds.feature_shape)), c.student_hidden,
                                      ds.num_classes, c.seed)
    names = settings.metric_names
    ev3 = run_ev3(k_run, c, settings, ds.name, splits, student, params0, ckpt, out, log)
    methods = {"ev3": _ev3_method(ev3, splits, names)}
    if c.baselines:
        budget = c.baseline_seconds or ev3.seconds
        methods.update(run_baselines(k_kd, k_es, c, student, params0, splits, names,
                                     settings.objectives[0].metric, budget, log))
    teacher_report = _teacher_report(teacher, splits, names, ds.num_classes)
    summary = _summary(c, settings, ds, splits, teacher_report, methods, ev3)
    history = _write_outputs(out, summary)
    if c.progress:
        _print(summary, c, ev3, out)
    return DistillResult(summary, history, ev3.student.arch, ev3.stable, out)


def _logger(progress: bool):
    if progress:
        return lambda *a: print(*a, file=sys.stderr, flush=True)
    return lambda *a: None


def run_keys(seed: int):
    """The keys of a run with ``seed``: ``(EV3's run, the KD baselines, the ES baseline)``."""
    _, k_run, k_kd, k_es = jax.random.split(jax.random.key(seed), 4)
    return k_run, k_kd, k_es


def load_data(c: DistillConfig) -> D.Dataset:
    """The run's dataset, every example flattened to a feature vector (the student is an MLP)."""
    ds = D.load(c.data, label=c.label, seed=c.seed)
    if len(ds.feature_shape) != 1:
        flat = lambda s: {**s, "x": s["x"].reshape(len(s["y"]), -1)}
        ds = ds._replace(train=flat(ds.train), val=flat(ds.val), test=flat(ds.test))
    return ds


def _teacher(ds, c: DistillConfig, out: str, log) -> T.Teacher:
    kwargs: dict[str, Any] = {"seed": c.seed}
    if c.teacher_epochs is not None:
        kwargs["epochs"] = c.teacher_epochs
    if c.teacher_hidden:
        kwargs["hidden"] = tuple(c.teacher_hidden)
    t0 = time.perf_counter()
    teacher = T.load_or_train_teacher(ds, os.path.join(out, "teacher"), path=c.teacher, **kwargs)
    log(f"teacher ready in {time.perf_counter() - t0:.1f}s")
    return teacher


def _teacher_report(teacher: T.Teacher, splits: dict, names, num_classes: int) -> dict:
    return {
        "test": logit_metrics(splits["test"]["teacher"], splits["test"], names, num_classes),
        "validation": logit_metrics(splits["val"]["teacher"], splits["val"], names, num_classes),
        "params": int(models.count_params(teacher.params)),
    }


def run_ev3(key, c: DistillConfig, settings: EngineSettings, name: str, splits: dict,
            student: Student, params, ckpt: Checkpointing, out: str, log) -> EV3Outcome:
    """The EV3 phase: the engine, growth, callbacks, the run and the final check."""
    train, val = splits["train"], splits["val"]
    names = settings.metric_names
    rebuild = lambda apply: build_engine(apply, c, settings, student.num_classes, len(val["y"]))
    if ckpt.saved is not None:
        log(f"resuming from step {ckpt.saved.step} ({ckpt.saved.path})")
    student, params, events = resumed_student(ckpt.saved, student, params)
    engine = rebuild(student.apply)
    jsonl = JSONLHistory(os.path.join(out, "history.jsonl"), mode="w")
    growth = Growth(c, student, params, val, names, rebuild, events,
                    on_event=lambda event: _record_growth(jsonl, event, log))
    log(f"EV3 on {name}: student {student.arch['hidden']} ({growth.size} params), "
        f"objectives {[o.metric for o in settings.objectives]}, constraints "
        f"{list(c.constraints)}, {len(engine.source_names)} sources, population "
        f"{engine.population_size}")
    if c.warmup:
        _warm_up(engine, key, params, train, val, log)
    start = time.perf_counter()
    growth.start()
    metadata = {"config": run_config(c), "every": ckpt.every}
    result = run(engine, key, params, train, val, c.steps,
                 callbacks=_callbacks(c, growth, jsonl), time_budget=c.time_budget,
                 on_stall=growth, checkpoint_dir=ckpt.directory, checkpoint_every=ckpt.every,
                 resume=ckpt.resume,
                 checkpoint_metadata=lambda engine, state: {
                     **metadata, "arch": growth.student.arch, "events": growth.events})
    stable, checked_event = result.stable, None
    if c.final_check and c.correction == "split" and result.engine is not None:
        checked_event = final_check(key, result.engine, result.current, result.stable, val)
        checked_event["step"] = int(result.state.step)
        append_event(os.path.join(out, "history.jsonl"), checked_event)
        if checked_event["certified"]:
            stable = result.current
        log(describe(checked_event))
    return EV3Outcome(result, growth.student, stable, checked_event, growth.events,
                      time.perf_counter() - start)


def _record_growth(jsonl: JSONLHistory, event: dict, log) -> None:
    write_event(jsonl, event)
    log(f"growth at step {event['step']}: hidden {event['hidden_before']} -> "
        f"{event['hidden_after']} ({'accepted' if event['accepted'] else 'refused'})")


def _callbacks(c: DistillConfig, growth: Growth, jsonl: JSONLHistory) -> list[Callback]:
    callbacks: list[Callback] = [Annotate(growth), jsonl]
    if c.progress:
        callbacks.append(ProgressBar(total=c.steps, desc="ev3", file=sys.stderr))
    callbacks.append(Replay(jsonl, growth.events))
    return callbacks


def _warm_up(engine, key, params, train, val, log) -> None:
    """Compiles the step before the clock starts: one step on a throw-away state."""
    t0 = time.perf_counter()
    jax.block_until_ready(engine.step(key, engine.init(key, params), train, val))
    log(f"EV3 step compiled in {time.perf_counter() - t0:.1f}s (not counted in its time)")


def _ev3_method(ev3: EV3Outcome, splits: dict, names) -> dict:
    final, r = ev3.student, ev3.result
    return {
        "test": final.evaluate(ev3.stable, splits["test"], names),
        "validation": final.evaluate(ev3.stable, splits["val"], names),
        "seconds": ev3.seconds,
        "params": final.count(ev3.stable),
        "steps": r.steps,
        "status": r.status,
        "hidden": list(final.arch["hidden"]),
        "current_test": final.evaluate(r.current, splits["test"], names),
    }


def run_baselines(k_kd, k_es, c: DistillConfig, student: Student, params0, splits: dict,
                  names, primary: str, budget: float, log) -> dict:
    """The baselines, each given ``budget`` seconds: KD with every optimizer of the grid on
    ``c.kd_loss``, and the evosax ES ``c.es_algorithm``; ``{method: record}``."""
    from ..assess import metrics as M

    train, val = splits["train"], splits["val"]
    metric = M.get(primary, student.apply, student.num_classes)
    methods = {}
    for name, opt in optimizer_grid().items():
        log(f"baseline kd_{name}: up to {budget:.1f}s")
        r = B.kd_train(k_kd, student.apply, params0, train, val,
                       named_loss(student.apply, c.kd_loss), opt, metric,
                       time_budget=budget, batch_size=c.batch_size)
        methods[f"kd_{name}"] = {**_method(student, r, splits, names), "budget": budget,
                                 "loss": c.kd_loss}
    es_name = f"es_{c.es_algorithm.lower()}"
    log(f"baseline {es_name}: {budget:.1f}s")
    r = B.es_train(k_es, params0, train, val, metric, time_budget=budget,
                   algorithm=c.es_algorithm)
    methods[es_name] = {**_method(student, r, splits, names), "budget": budget}
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
             methods: dict, ev3: EV3Outcome) -> dict:
    return {
        "dataset": {"name": ds.name, "num_classes": ds.num_classes,
                    "feature_shape": list(ds.feature_shape),
                    "sizes": {s: len(splits[s]["y"]) for s in splits}},
        "config": report.jsonable(dataclasses.asdict(c)),
        "primary": settings.objectives[0].metric,
        "objectives": [o._asdict() for o in settings.objectives],
        "constraints": list(c.constraints),
        "metrics": settings.metric_names,
        "teacher": teacher,
        "methods": methods,
        "growth": ev3.events,
        "final_check": ev3.final_check,
        "status": ev3.result.status,
    }


def _write_outputs(out: str, summary: dict) -> list[dict]:
    """Writes ``summary.json`` and the plots; returns the full history (steps and events)."""
    report.write_summary(os.path.join(out, "summary.json"), summary)
    history = report.read_history(os.path.join(out, "history.jsonl"))
    report.plot_history(history, out, summary["primary"])
    report.plot_comparison(summary, out, summary["primary"])
    return history


def _print(summary: dict, c: DistillConfig, ev3: EV3Outcome, out: str) -> None:
    print(report.table(summary, summary["metrics"]))
    if c.baselines:
        how = "EV3's wall time" if c.baseline_seconds is None else "--baseline-seconds"
        budget = next(r["budget"] for r in summary["methods"].values() if "budget" in r)
        print(f"(EV3 ran {ev3.seconds:.1f}s, {ev3.result.steps} steps, step compiled "
              f"{'before' if c.warmup else 'inside'} its clock; each baseline was given "
              f"{budget:.1f}s ({how}); KD baselines stop early once their validation "
              f"{summary['primary']} stops improving, so 'seconds' is what each used)")
    print(f"outputs in {out}")


__all__ = ["DistillConfig", "DistillResult", "distill", "run_keys"]
