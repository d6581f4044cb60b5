"""The distillation run: teacher → EV3 student (optionally grown) → baselines → report.

:func:`distill` is the Python front door of ``ev3evo distill``. One call:

1. loads the data (:mod:`ev3evo.distill.data`) and a teacher (trained and cached under the
   output folder, or loaded from a checkpoint);
2. runs EV3 on a small student: sources are gradient rollouts of KD losses × optax optimizers
   (one source per loss, so the allocation learns which loss pays), deliberately biased
   gradients (masked / per-layer / noisy, guided ES), an evosax strategy (when
   :mod:`ev3evo.explore.evosax` is present) and gaussian mutations; candidates are assessed on
   the **validation** split with the chosen objectives and constraints;
3. with ``grow=True``, widens (or deepens) the student function-preservingly when the run
   stalls; the grown current and stable models are checked to compute the same metrics
   (growth is assessed like any other update and refused otherwise), and a new engine with
   fresh sources is built for the new shapes;
4. gives each baseline (KD with every optimizer of the grid, a pure evosax ES) EV3's wall time;
5. reports test and validation metrics of every method, writes ``summary.json``,
   ``history.jsonl`` and PNG plots under ``out``.

Example::

    from ev3evo.distill.pipeline import distill
    result = distill(steps=5, baselines=False, teacher_epochs=5, progress=False)
    result.methods["ev3"]["test"]["accuracy"]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import losses as L
from ..adapt.allocation import Allocation
from ..adapt.gate import Gate
from ..assess import metrics as M
from ..assess.objectives import parse_constraint
from ..callbacks import Callback, JSONLHistory, ProgressBar
from ..explore import biased
from ..explore.gradient import gradient_rollouts, mixture_grid
from ..explore.mutation import gaussian
from ..loop import EV3
from ..run import run
from ..types import Metric, Objective, Params
from . import baselines as B
from . import report
from .sources import head_bias, temperature

#: metrics every run reports (the objectives may add others from ``ev3evo.metrics.REGISTRY``)
REPORTED = report.METRICS


@dataclass
class DistillConfig:
    """Every setting of a distillation run (the CLI flags map one to one).

    Attributes:
      data: ``None``/``"digits"``, ``"hard"``, ``"hard:N"``, or a ``.npz``/``.csv`` path.
      label: the label column of a ``.csv``.
      metrics: objectives in priority order, ``"name"`` or ``"name:tolerance"``.
      constraints: ``"metric>=value"`` / ``"metric<=value"`` strings.
      steps: EV3 steps (at most).
      time_budget: EV3 wall-clock seconds (at most); baselines get EV3's actual time.
      student_hidden: hidden widths of the student MLP.
      grow: widen/deepen the student when the run stalls.
      grow_kind: ``"widen"`` or ``"deepen"``.
      grow_amount: units added to every hidden layer per widening (deepening adds one layer).
      max_growths: at most this many growth events.
      patience: steps without certification that count as a stall.
      population_size: slots evaluated per step (the sources offer more; allocation decides).
      alpha: the gate's error level.
      correction: the gate's multiplicity control (see :mod:`ev3evo.adapt.gate`): ``"split"``
        (the default: the winner is selected on half of the validation split and tested alone
        on the other half) or ``"holm"`` (every candidate tested on all of it, Holm-corrected).
      accept: when the step's winner replaces the current model (see
        :mod:`ev3evo.adapt.gate`): ``"lexicographic"`` (the default: better than the current
        model beyond the tie tolerance on the metric, or tied and significantly closer to the
        teacher; a copy that is luckier by an example or two is not accepted), ``"not_worse"``
        or ``"better"``.
      certify: ``"primary"`` or ``"lexicographic"`` (see :mod:`ev3evo.adapt.gate`); ``None``
        (default) is lexicographic with the split gate and the fidelity tie-breaker — the
        stable model then also follows a winner that ties it on the metric and is
        significantly closer to the teacher — and primary otherwise.
      final_check: with ``correction="split"``, test the final current model against the
        stable one on the held-out half at the end of the run (see :func:`final_check`).
      rollout_steps: optimizer steps per gradient candidate.
      tie_examples: with ``tie_break``, primary values within this many selection examples of
        the best count as tied (see :func:`engine_objectives`).
      tie_break: break ties on the primary objective (within ``tie_examples``) by
        fidelity to the teacher (see :func:`engine_objectives`).
      batch_size: minibatch size of gradient rollouts and KD baselines.
      seed: seeds the split, the models and the run.
      out: output folder (a temporary one when ``None``).
      baselines: run the baselines.
      baseline_seconds: wall time of each baseline; ``None`` (the default, the fair comparison)
        gives each one EV3's own wall time.
      es_algorithm: the evosax algorithm of the ES baseline.
      kd_loss: the KD baselines' loss, a name of :data:`MIXTURES` (``"kl_t4"``, Hinton et al.'s
        KL at T=4, by default: the best plain-KD loss on digits; which loss is best depends on
        the data, e.g. ``"rkl_t2"`` on the generated ``hard:20000``).
      teacher: path of a teacher checkpoint (else trained and cached under ``out``).
      teacher_hidden: hidden widths of a trained teacher.
      teacher_epochs: training epochs of the teacher (``None``: the teacher module's default).
      progress: show a progress bar and print the table.
      checkpoint_every: save a checkpoint every N steps (needs :mod:`ev3evo.io.checkpoint`).
      resume: continue the EV3 run saved in this folder (needs :mod:`ev3evo.io.checkpoint`).
      warmup: compile EV3's step before its clock starts (the default; EV3's time, which the
        baselines also get, then excludes the one-off compilation; a recompilation after
        growth is still counted).
    """

    data: str | None = None
    label: str | None = None
    metrics: Sequence[str] = ("accuracy",)
    constraints: Sequence[str] = ()
    steps: int = 300
    time_budget: float | None = None
    student_hidden: Sequence[int] = (8,)
    grow: bool = False
    grow_kind: str = "widen"
    grow_amount: int = 4
    max_growths: int = 2
    patience: int = 30
    population_size: int = 16
    alpha: float = 0.05
    correction: str = "split"
    accept: str = "lexicographic"
    certify: str | None = None
    final_check: bool = True
    rollout_steps: int = 200
    tie_break: bool = True
    tie_examples: float = 4.0
    batch_size: int = 128
    seed: int = 0
    out: str | None = None
    baselines: bool = True
    baseline_seconds: float | None = None
    es_algorithm: str = "Open_ES"
    kd_loss: str = "kl_t4"
    teacher: str | None = None
    teacher_hidden: Sequence[int] = (128, 128)
    teacher_epochs: int | None = None
    progress: bool = True
    checkpoint_every: int | None = None
    resume: str | None = None
    warmup: bool = True


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
      summary: the dict written to ``summary.json`` (``summary["methods"][name]["test"]`` ...).
      history: EV3's per-step records and growth events (also in ``history.jsonl``).
      arch: the final student architecture (a dict for :mod:`ev3evo.distill.models`).
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


# --------------------------------------------------------------------------- configuration


def _parse_objectives(specs: Sequence[str]) -> list[Objective]:
    objectives = []
    for spec in specs:
        name, _, tol = str(spec).partition(":")
        name = name.strip()
        try:
            tolerance = float(tol) if tol else 0.0
        except ValueError:
            raise ValueError(f"cannot read metric {spec!r}; write NAME or NAME:TOLERANCE") from None
        if name not in M.REGISTRY:
            raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(M.REGISTRY))}")
        if tolerance < 0:
            raise ValueError(f"tolerance of metric {name!r} must be >= 0, got {tolerance}")
        objectives.append(Objective(name, tolerance))
    if not objectives:
        raise ValueError("give at least one metric to optimize")
    return objectives


def _check_config(c: DistillConfig) -> tuple[list[Objective], list]:
    for name in ("steps", "grow_amount", "population_size", "rollout_steps", "batch_size",
                 "patience"):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if c.max_growths < 0:
        raise ValueError(f"max_growths must be >= 0, got {c.max_growths}")
    hidden = list(c.student_hidden)
    if not hidden or any(not isinstance(h, int) or h <= 0 for h in hidden):
        raise ValueError(f"student_hidden must be positive integers, got {c.student_hidden!r}")
    if c.baseline_seconds is not None and not c.baseline_seconds > 0:
        raise ValueError(f"baseline_seconds must be > 0, got {c.baseline_seconds}")
    if c.time_budget is not None and not c.time_budget > 0:
        raise ValueError(f"time_budget must be > 0 seconds, got {c.time_budget}")
    if c.grow_kind not in ("widen", "deepen"):
        raise ValueError(f"grow_kind must be 'widen' or 'deepen', got {c.grow_kind!r}")
    if not 0 < c.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {c.alpha}")
    if c.correction not in ("split", "holm", "bonferroni"):
        raise ValueError(f"correction must be 'split', 'holm' or 'bonferroni', got {c.correction!r}")
    if c.accept not in ("lexicographic", "not_worse", "better"):
        raise ValueError(
            f"accept must be 'lexicographic', 'not_worse' or 'better', got {c.accept!r}")
    if c.certify not in (None, "primary", "lexicographic"):
        raise ValueError(f"certify must be 'primary' or 'lexicographic', got {c.certify!r}")
    if c.kd_loss not in MIXTURES:
        raise ValueError(f"unknown KD loss {c.kd_loss!r}; known: {', '.join(MIXTURES)}")
    if c.certify == "lexicographic" and c.correction != "split":
        raise ValueError("certify='lexicographic' needs correction='split'")
    objectives = _parse_objectives(c.metrics)
    constraints = [parse_constraint(s) for s in c.constraints]
    for k in constraints:
        if k.metric not in M.REGISTRY:
            raise ValueError(
                f"constraint names unknown metric {k.metric!r}; known: {', '.join(sorted(M.REGISTRY))}"
            )
    return objectives, constraints


# --------------------------------------------------------------------------- the student


class Student:
    """A student architecture and its pure ``apply`` (rebuilt when the student grows)."""

    def __init__(self, arch: dict):
        from . import models

        self.arch = dict(arch)
        self.functional = models.functional(models.build(self.arch))
        self.apply = self.functional.apply

    @classmethod
    def create(cls, in_features: int, hidden, num_classes: int, seed: int):
        """A fresh student with parameters initialized from ``seed``."""
        from flax import nnx

        from . import models

        module = models.MLP(in_features, list(hidden), num_classes, rngs=nnx.Rngs(seed))
        f = models.functional(module)
        return cls(f.arch), f.params

    def count(self, params) -> int:
        from . import models

        return int(models.count_params(params))


def _metric_objects(apply, names: Sequence[str], num_classes: int) -> list:
    return [M.get(n, apply, num_classes) for n in names]


def _evaluate(apply, params, batch, names, num_classes) -> dict[str, float]:
    out = {}
    for m in _metric_objects(apply, names, num_classes):
        out[m.name] = float(M.value(m, m.stats(params, batch)))
    return out


def _logit_metrics(logits, batch, names, num_classes) -> dict[str, float]:
    """Metrics of a model known only by its logits (the teacher)."""
    ident = lambda params, x: x
    return _evaluate(ident, None, {**batch, "x": logits}, names, num_classes)


#: the optimizer grid: name -> (optax factory taking learning_rate, learning rates)
OPTIMIZERS = {
    "adam": (optax.adam, (3e-3, 1e-2)),
    "sgdm": (functools.partial(optax.sgd, momentum=0.9, nesterov=True), (0.05,)),
}


def optimizer_grid() -> dict[str, optax.GradientTransformation]:
    """The optimizers shared by EV3's gradient sources and the KD baselines, by name."""
    return {
        f"{name}_{lr:g}": factory(learning_rate=lr)
        for name, (factory, lrs) in OPTIMIZERS.items()
        for lr in lrs
    }


def kd_loss(apply):
    """Hinton et al.'s KL at T=4: the loss of EV3's biased-gradient sources, and the KD
    baselines' default (see :func:`named_loss` for the others)."""
    return L.kl_to_teacher(apply, 4.0)


def named_loss(apply, name: str):
    """The loss of :data:`MIXTURES` called ``name``: its weighted sum of :func:`_loss_parts`.

    Example::

        from ev3evo.distill.pipeline import named_loss
        loss = named_loss(lambda p, x: x @ p, "kl_t4+ce")  # (params, batch) -> scalar
    """
    if name not in MIXTURES:
        raise ValueError(f"unknown KD loss {name!r}; known: {', '.join(MIXTURES)}")
    terms = [(f, w) for f, w in zip(_loss_parts(apply), MIXTURES[name]) if w]
    return L.mixture([f for f, _ in terms], [w for _, w in terms])


#: EV3's KD loss grid: (name, weights over _loss_parts) — pure losses and mixtures
MIXTURES = {
    "kl_t4": (0, 1, 0, 0, 0),
    "kl_t1": (1, 0, 0, 0, 0),
    "rkl_t2": (0, 0, 1, 0, 0),
    "logit_mse": (0, 0, 0, 1, 0),
    "ce": (0, 0, 0, 0, 1),
    "kl_t4+ce": (0, 0.5, 0, 0, 0.5),
}


def _loss_parts(apply) -> list:
    return [
        L.kl_to_teacher(apply, 1.0),
        L.kl_to_teacher(apply, 4.0),
        L.kl_to_teacher(apply, 2.0, reverse=True),
        L.logit_mse(apply),
        L.cross_entropy(apply),
    ]


def fidelity(apply) -> Metric:
    """``-KL(teacher ‖ student)`` per example: the smooth tie-breaker among equally good candidates."""

    def score(params, batch):
        s = jax.nn.log_softmax(apply(params, batch["x"]), axis=-1)
        t = jax.nn.log_softmax(batch["teacher"], axis=-1)
        return -jnp.sum(jnp.exp(t) * (t - s), axis=-1)

    return M.per_example("fidelity", score)


def engine_objectives(objectives: Sequence[Objective], tie_break: bool, n_val: int,
                      examples: float = 1.5) -> list:
    """The user's objectives, plus (``tie_break``) the fidelity tie-breaker.

    With the tie-breaker, a primary objective given without tolerance gets ``examples`` examples'
    worth (``examples/n_val``; for ECE ``0.6·examples/n_val``): candidates within it count as
    tied and the one closest to the teacher wins, instead of whichever won a coin flip on one
    validation example. Moving one example changes ECE by at most ``1/n_val`` too (one bin's
    accuracy moves by ``1/n_bin``, weighted by ``n_bin/n_val``), so its band shrinks with the
    validation split like accuracy's; the factor 0.6 keeps the band the digits runs were tuned
    with (0.0133 at 180 selection examples). A fixed band would swallow every ECE difference on
    a large validation split, where the models' ECE is itself about 0.01–0.03.
    """
    objectives = list(objectives)
    if not tie_break:
        return objectives
    first = objectives[0]
    if first.tolerance == 0.0 and first.metric != "neg_loss":
        scale = 0.6 if first.metric == "ece" else 1.0
        objectives[0] = first._replace(tolerance=scale * examples / n_val)
    return [*objectives, Objective("fidelity", 1e9)]


def certify_mode(c: DistillConfig) -> str:
    """The gate's certification rule for a configuration (see ``DistillConfig.certify``)."""
    if c.certify is not None:
        return c.certify
    return "lexicographic" if c.correction == "split" and c.tie_break else "primary"


def build_engine(apply, c: DistillConfig, objectives, constraints, num_classes,
                 n_val: int) -> EV3:
    """The EV3 engine for one student architecture (sources close over ``apply``)."""
    parts = _loss_parts(apply)
    weights = list(MIXTURES.values())
    sources = [
        mixture_grid(parts, weights, factory, lrs, steps=c.rollout_steps, batch_size=c.batch_size,
                     name=f"kd_{name}")
        for name, (factory, lrs) in OPTIMIZERS.items()
    ]
    kd = kd_loss(apply)
    # Deliberately biased gradients: a sparse random mask on the gradient (two streams).
    sources.append(
        gradient_rollouts([kd], [biased.masked(optax.adam(3e-3), keep=0.3, seed=c.seed)],
                          steps=c.rollout_steps, batch_size=None, repeats=2,
                          name="masked")
    )
    sources.append(biased.guided_es(kd, size=5, sigma=0.05, name="guided_es"))
    es = _evosax_source()
    if es is not None:
        sources.append(es)
    sources.append(gaussian(4, sigma=0.01))
    # Output-layer moves: the softmax temperature (calibration) and per-class thresholds.
    sources.append(temperature(2))
    sources.append(head_bias(2))
    # With the split gate, selection sees every other validation example.
    objectives = engine_objectives(objectives, c.tie_break,
                                   n_val // 2 if c.correction == "split" else n_val,
                                   c.tie_examples)
    names = list(dict.fromkeys([o.metric for o in objectives if o.metric != "fidelity"]
                               + [k.metric for k in constraints] + list(REPORTED)))
    metrics = _metric_objects(apply, names, num_classes)
    if c.tie_break:
        metrics.append(fidelity(apply))
    capacity = sum(s.size for s in sources)
    return EV3(
        sources,
        metrics,
        objectives=objectives,
        constraints=constraints,
        gate=Gate(alpha=c.alpha, correction=c.correction, accept=c.accept,
                  certify=certify_mode(c)),
        allocation=Allocation(population_size=min(c.population_size, capacity)),
        patience=c.patience,
    )


def _evosax_source():
    """An evosax OpenAI-ES source re-centred on the accepted model (None without evosax)."""
    try:
        from ..explore.evosax import evosax_source
    except ImportError:
        return None
    return evosax_source("Open_ES", 8, std_schedule=optax.constant_schedule(0.02),
                         optimizer=optax.sgd(1.0), name="open_es")


# --------------------------------------------------------------------------- callbacks


class _Annotate(Callback):
    """Adds the student's shape to every record (before the JSONL writer sees it)."""

    def __init__(self, holder: dict):
        self.holder = holder

    def on_step(self, record, state, engine):
        record["hidden"] = list(self.holder["arch"]["hidden"])
        record["params"] = self.holder["params"]


def _checkpoint_settings(c: DistillConfig, out: str):
    """Where the EV3 run is checkpointed, and what a resumed run continues from.

    ``--checkpoint-every N`` writes ``OUT/checkpoints`` every N steps (and at the end);
    ``--resume DIR`` (an output folder, or its ``checkpoints`` folder) continues the run saved
    there and keeps checkpointing into it (every N steps as before, unless given again).
    Returns ``(directory, every, resume, saved)``; ``saved`` is the newest checkpoint's
    :class:`ev3evo.io.Checkpoint` (metadata only) when resuming. See :mod:`ev3evo.io.checkpoint`.
    """
    if not c.checkpoint_every and not c.resume:
        return None, 1, False, None
    from ..io import checkpoint

    if c.resume:
        directory = os.path.join(c.resume, "checkpoints")
        if not os.path.isdir(directory):
            directory = c.resume
        if not os.path.isdir(directory):
            raise ValueError(f"--resume {c.resume}: no such directory")
        saved = checkpoint.read_checkpoint(directory)
        if saved is None:
            raise ValueError(f"--resume {c.resume}: no checkpoint in {directory}")
        before, now = saved.metadata.get("config") or {}, _run_config(c)
        changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if changed:  # refuse before any work (the fingerprint would refuse later anyway)
            details = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now"
                                for k in changed[:4])
            raise checkpoint.CheckpointError(
                f"--resume {c.resume}: the checkpointed run had other settings ({details}); "
                "resume with the same settings"
            )
        every = c.checkpoint_every or int(saved.metadata.get("every", 10))
        return directory, every, True, saved
    directory = os.path.join(out, "checkpoints")
    if checkpoint.list_checkpoints(directory):
        raise ValueError(
            f"{directory} already holds checkpoints of a run: continue it with --resume {out}, "
            "or choose another --out"
        )
    return directory, c.checkpoint_every, False, None


def _run_config(c: DistillConfig) -> dict:
    """The settings a resumed run must share with the original (part of the fingerprint)."""
    keys = ("data", "label", "metrics", "constraints", "student_hidden", "grow", "grow_kind",
            "grow_amount", "max_growths", "patience", "population_size", "alpha", "correction", "accept", "certify", "tie_examples",
            "rollout_steps", "batch_size", "seed", "teacher_hidden", "teacher_epochs")
    return _jsonable({k: getattr(c, k) for k in keys})


class _Replay(Callback):
    """On resume, rewrites ``history.jsonl`` with the restored records and growth events."""

    def __init__(self, jsonl: JSONLHistory, events: list):
        self.jsonl, self.events = jsonl, events

    def on_resume(self, history):
        # JSONLHistory.on_resume wrote the step records alone; write them again interleaved
        # with the growth events, in place of that.
        self.jsonl.file.seek(0)
        self.jsonl.file.truncate()
        at = {}
        for event in self.events:
            at.setdefault(event["step"], []).append(event)
        for record in history:
            self.jsonl.on_step(record, None, None)
            for event in at.get(record["step"], []):
                self.jsonl.file.write(json.dumps(event) + "\n")
        self.jsonl.file.flush()


# --------------------------------------------------------------------------- the run


def _teacher(ds, c: DistillConfig, out: str, log):
    from . import teacher as T

    kwargs: dict[str, Any] = {"seed": c.seed}
    if c.teacher_epochs is not None:
        kwargs["epochs"] = c.teacher_epochs
    if c.teacher_hidden:
        kwargs["hidden"] = tuple(c.teacher_hidden)
    t0 = time.perf_counter()
    teacher = T.load_or_train_teacher(ds, os.path.join(out, "teacher"), path=c.teacher, **kwargs)
    log(f"teacher ready in {time.perf_counter() - t0:.1f}s")
    return teacher


def distill(config: DistillConfig | None = None, /, **overrides) -> DistillResult:
    """Distills a teacher into a small student with EV3, against baselines at equal wall time.

    Args:
      config: a :class:`DistillConfig`; keyword arguments override its fields
        (``distill(steps=50, metrics=["macro_f1"])``).

    Returns:
      A :class:`DistillResult`; its ``summary`` is also written to ``out/summary.json``.

    Raises:
      ValueError: bad settings; ``ev3evo.distill.data.DataError`` (a ``ValueError``) for
        unusable data.
    """
    c = dataclasses.replace(config or DistillConfig(), **overrides)
    objectives, constraints = _check_config(c)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if c.progress else (lambda *a: None)
    out = c.out or tempfile.mkdtemp(prefix="ev3evo-distill-")
    os.makedirs(out, exist_ok=True)
    ckpt_dir, ckpt_every, resuming, saved = _checkpoint_settings(c, out)
    from . import data as D

    ds = D.load(c.data, label=c.label, seed=c.seed)
    if len(ds.feature_shape) != 1:
        ds = ds._replace(
            train={**ds.train, "x": ds.train["x"].reshape(len(ds.train["y"]), -1)},
            val={**ds.val, "x": ds.val["x"].reshape(len(ds.val["y"]), -1)},
            test={**ds.test, "x": ds.test["x"].reshape(len(ds.test["y"]), -1)},
        )
    in_features = int(np.prod(ds.feature_shape))
    num_classes = ds.num_classes
    names = list(dict.fromkeys([o.metric for o in objectives] + [k.metric for k in constraints]
                               + list(REPORTED)))
    primary = objectives[0].metric

    teacher = _teacher(ds, c, out, log)
    splits = teacher_splits(ds, teacher)
    train, val, test = splits["train"], splits["val"], splits["test"]
    n_val = len(val["y"])
    teacher_report = {
        "test": _logit_metrics(test["teacher"], test, names, num_classes),
        "validation": _logit_metrics(val["teacher"], val, names, num_classes),
        "params": _teacher_params(teacher),
    }

    k_run, k_kd, k_es = run_keys(c.seed)
    student, params0 = Student.create(in_features, c.student_hidden, num_classes, c.seed)
    student_run, params_run, events = student, params0, []
    if saved is not None:  # continue with the architecture the run had reached (growth)
        from . import models

        events = list(saved.metadata.get("events", []))
        arch = saved.metadata.get("arch", student.arch)
        if arch != student.arch:
            student_run = Student(arch)
            params_run = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                      models.template(arch).params)
        log(f"resuming from step {saved.step} ({saved.path})")
    engine = build_engine(student_run.apply, c, objectives, constraints, num_classes, n_val)
    holder = {"arch": student_run.arch, "params": student_run.count(params_run),
              "student": student_run}
    jsonl = JSONLHistory(os.path.join(out, "history.jsonl"), mode="w")
    callbacks: list[Callback] = [_Annotate(holder), jsonl]
    if c.progress:
        callbacks.append(ProgressBar(total=c.steps, desc="ev3", file=sys.stderr))
    callbacks.append(_Replay(jsonl, events))
    run_config = _run_config(c)
    checkpoint_metadata = lambda engine, state: {
        "config": run_config, "arch": holder["arch"], "events": events, "every": ckpt_every
    }

    def on_stall(k, engine, state):
        if not c.grow or len(events) >= c.max_growths:
            return None
        grown = _grow(k, holder, state, c, val, names, num_classes)
        event = grown["event"]
        event["step"] = int(state.step)
        event["seconds"] = time.perf_counter() - start
        events.append(event)
        if jsonl.file is not None:
            jsonl.file.write(json.dumps(event) + "\n")
            jsonl.file.flush()
        log(f"growth at step {event['step']}: hidden {event['hidden_before']} -> "
            f"{event['hidden_after']} ({'accepted' if event['accepted'] else 'refused'})")
        if not event["accepted"]:
            return None
        new_engine = build_engine(grown["student"].apply, c, objectives, constraints, num_classes,
                                  n_val)
        fresh = new_engine.init(k, grown["params"])
        new_state = fresh._replace(stable=grown["stable"], allocation=state.allocation,
                                   step=state.step)
        holder.update(arch=grown["student"].arch, student=grown["student"],
                      params=grown["student"].count(grown["params"]))
        return new_engine, new_state

    log(f"EV3 on {ds.name}: student {holder['arch']['hidden']} ({holder['params']} params), "
        f"objectives {[o.metric for o in objectives]}, constraints {list(c.constraints)}, "
        f"{len(engine.source_names)} sources, population {engine.population_size}")
    if c.warmup:
        # Compile the step before the clock starts: one step on a throw-away state.
        t0 = time.perf_counter()
        jax.block_until_ready(engine.step(k_run, engine.init(k_run, params_run), train, val))
        log(f"EV3 step compiled in {time.perf_counter() - t0:.1f}s (not counted in its time)")
    start = time.perf_counter()
    result = run(engine, k_run, params_run, train, val, c.steps, callbacks=callbacks,
                 time_budget=c.time_budget, on_stall=on_stall, checkpoint_dir=ckpt_dir,
                 checkpoint_every=ckpt_every, resume=resuming,
                 checkpoint_metadata=checkpoint_metadata)
    final = holder["student"]
    stable_params, checked = result.stable, None
    if c.final_check and c.correction == "split" and result.engine is not None:
        event = final_check(k_run, result.engine, result.current, result.stable, val)
        event["step"] = int(result.state.step)
        checked = event
        with open(os.path.join(out, "history.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        if event["certified"]:
            stable_params = result.current
        if event["needed"] > 0:
            power = (f"{event['primary']} gain {event['gain']:+.4f}, a certified gain must "
                     f"exceed {event['needed']:+.4f} here")
        else:  # no spread: the two models score every held-out example alike
            power = f"the two models score every example alike on {event['primary']}"
        log(f"final check: current vs stable on the {event['held_out_examples']} held-out "
            f"validation examples: {power} (p={event['pvalue']:.3g}, "
            f"{'certified' if event['certified'] else 'not certified'})")
    ev3_seconds = time.perf_counter() - start
    methods = {
        "ev3": {
            "test": _evaluate(final.apply, stable_params, test, names, num_classes),
            "validation": _evaluate(final.apply, stable_params, val, names, num_classes),
            "seconds": ev3_seconds,
            "params": final.count(stable_params),
            "steps": result.steps,
            "status": result.status,
            "hidden": list(final.arch["hidden"]),
            "current_test": _evaluate(final.apply, result.current, test, names, num_classes),
        }
    }

    if c.baselines:
        budget = c.baseline_seconds or ev3_seconds
        metric = M.get(primary, student.apply, num_classes)
        for name, opt in optimizer_grid().items():
            log(f"baseline kd_{name}: up to {budget:.1f}s")
            r = B.kd_train(k_kd, student.apply, params0, train, val,
                           named_loss(student.apply, c.kd_loss), opt, metric,
                           time_budget=budget, batch_size=c.batch_size)
            methods[f"kd_{name}"] = {**_method(student, r, test, val, names, num_classes),
                                     "budget": budget, "loss": c.kd_loss}
        es_name = f"es_{c.es_algorithm.lower()}"
        log(f"baseline {es_name}: {budget:.1f}s")
        r = B.es_train(k_es, params0, train, val, metric, time_budget=budget,
                       algorithm=c.es_algorithm)
        methods[es_name] = {**_method(student, r, test, val, names, num_classes),
                            "budget": budget}

    summary = {
        "dataset": {"name": ds.name, "num_classes": num_classes,
                    "feature_shape": list(ds.feature_shape),
                    "sizes": {s: len(splits[s]["y"]) for s in splits}},
        "config": _jsonable(dataclasses.asdict(c)),
        "primary": primary,
        "objectives": [o._asdict() for o in objectives],
        "constraints": list(c.constraints),
        "metrics": names,
        "teacher": teacher_report,
        "methods": methods,
        "growth": events,
        "final_check": checked,
        "status": result.status,
    }
    report.write_summary(os.path.join(out, "summary.json"), summary)
    full_history = report.read_history(os.path.join(out, "history.jsonl"))
    report.plot_history(full_history, out, primary)
    report.plot_comparison(summary, out, primary)
    if c.progress:
        print(report.table(summary, names))
        if c.baselines:
            how = ("EV3's wall time" if c.baseline_seconds is None
                   else "--baseline-seconds")
            print(f"(EV3 ran {ev3_seconds:.1f}s, {result.steps} steps, step compiled "
                  f"{'before' if c.warmup else 'inside'} its clock; each baseline was given "
                  f"{methods[es_name]['budget']:.1f}s ({how}); KD baselines stop early once "
                  f"their validation {primary} stops improving, so 'seconds' is what each used)")
        print(f"outputs in {out}")
    return DistillResult(summary, full_history, final.arch, stable_params, out)


def teacher_splits(ds, teacher) -> dict:
    """``{"train"|"val"|"test": {"x", "y", "teacher"}}``: each split with the teacher's logits."""
    from . import teacher as T

    return {split: {"x": getattr(ds, split)["x"], "y": getattr(ds, split)["y"],
                    "teacher": jnp.asarray(T.teacher_logits(teacher, getattr(ds, split)["x"]),
                                           jnp.float32)}
            for split in ("train", "val", "test")}


def run_keys(seed: int):
    """The keys of a run with ``seed``: ``(EV3's run, the KD baselines, the ES baseline)``."""
    _, k_run, k_kd, k_es = jax.random.split(jax.random.key(seed), 4)
    return k_run, k_kd, k_es


def final_check(key, engine: EV3, current: Params, stable: Params, val) -> dict:
    """The end-of-run test of the current model against the stable one (split gate only).

    With ``correction="split"`` the current model was selected on the even validation examples
    only; the odd ones served only the certification tests. So the final current model can be
    tested once, alone, against the stable model on the odd half at level ``alpha``, with the
    engine's own gate (the current model as the only candidate; certification also needs its
    metric on all of the validation split to be at least the stable model's, and feasibility).
    Returns a ``{"event": "final_check", ...}`` record; ``certified`` says if stable ← current.
    It also says how much evidence the held-out half can give: ``gain`` is the current model's
    point gain over the stable one on the primary objective there (higher is better, so a drop
    in ECE is a positive gain), and ``needed`` the gain that would have been significant at the
    gate's level with the observed spread of the paired differences (``z·se`` of the paired
    test, or the bootstrap's equivalent). A run whose later gains all stay below ``needed`` has
    too few validation examples to certify them, however long it runs.
    """
    from ..adapt.gate import decide
    from ..assess.evaluate import evaluate_population

    # The arms are [current as the candidate, current, stable]. Acceptance compares the
    # candidate with the current model, i.e. with itself: under "lexicographic" or "better"
    # it would never pass (no gain over itself) and nothing could ever be certified, so the
    # check accepts on "not_worse" (always true here) and only the certification test decides.
    gate = engine.gate._replace(accept="not_worse")

    @jax.jit  # one compiled program: eager dispatch would compile every primitive separately
    def check(key, current, stable, val):
        arms = jax.tree.map(lambda a, b: jnp.stack([a, a, b]), current, stable)
        stats = evaluate_population(engine.metrics, arms, val)
        return decide(key, engine.metrics, stats, engine.objectives, engine.constraints,
                      jnp.ones(1, bool), gate)

    d = check(key, current, stable, val)
    names = engine.metric_names
    return {
        "event": "final_check",
        "certified": bool(d.certified),
        "pvalue": float(d.pvalue),
        "primary": engine.objectives[0].metric,
        "held_out_examples": int(val["y"].shape[0] // 2),
        "gain": float(d.gain),
        "needed": float(d.needed),
        "current": {n: float(v) for n, v in zip(names, d.values[0])},
        "stable": {n: float(v) for n, v in zip(names, d.values[2])},
    }


def _method(student, r: B.BaselineResult, test, val, names, num_classes) -> dict:
    return {
        "test": _evaluate(student.apply, r.params, test, names, num_classes),
        "validation": _evaluate(student.apply, r.params, val, names, num_classes),
        "seconds": r.seconds,
        "params": student.count(r.params),
        "steps": r.steps,
    }


def _teacher_params(teacher) -> int:
    from . import models

    return int(models.count_params(teacher.params))


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _grow(key, holder, state, c: DistillConfig, val, names, num_classes) -> dict:
    """Grows current and stable; checks the grown models compute the same validation metrics."""
    from . import growth

    old: Student = holder["student"]
    amount = c.grow_amount if c.grow_kind == "widen" else 1  # deepen: one identity layer
    arch, params = growth.grow(old.arch, state.current, c.grow_kind, key, amount)
    _, stable = growth.grow(old.arch, state.stable, c.grow_kind, key, amount)
    new = Student(arch)
    before = _evaluate(old.apply, state.stable, val, names, num_classes)
    after = _evaluate(new.apply, stable, val, names, num_classes)
    gap = float(jnp.max(jnp.abs(old.apply(state.stable, val["x"]) - new.apply(stable, val["x"]))))
    same = all(abs(before[n] - after[n]) <= 1e-6 for n in names)
    event = {
        "event": "grow",
        "kind": c.grow_kind,
        "hidden_before": list(old.arch["hidden"]),
        "hidden_after": list(arch["hidden"]),
        "params_before": old.count(state.stable),
        "params_after": new.count(stable),
        "stable_before": before,
        "stable_after": after,
        "max_logit_change": gap,
        "accepted": bool(same),
    }
    return {"event": event, "student": new, "params": params, "stable": stable}


__all__ = ["DistillConfig", "DistillResult", "Student", "build_engine", "distill",
           "optimizer_grid"]

