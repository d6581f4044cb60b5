"""Every setting of a distillation run, described once.

Each field of :class:`DistillConfig` carries its whole description as an :class:`Option` in
the field's metadata: the help text (with the unit), the command-line flag (``None`` for
settings only the Python API takes), the ``--help`` group, the choices, the text shown for
the default, and its :class:`Kind` (how a value is read from the command line and checked in
Python). The ``ev3evo distill`` parser (:mod:`ev3evo.distillation.command`), the field checks
of :func:`checked`, the resume fingerprint (:func:`ev3evo.distillation.resume.run_config`) and
the documentation of :class:`DistillConfig` are generated from it.

The gate's settings (``alpha``, ``correction``, ``accept``, ``certify``) are checked by
:meth:`ev3evo.Gate.validated` and the objectives by :mod:`ev3evo.assess.objectives` (see
:func:`ev3evo.distillation.engine.engine_settings`); their choices here are those registries.

Example::

    from ev3evo.distillation.options import OPTIONS, DistillConfig, checked, configure
    c = checked(configure(DistillConfig(), steps=50, metrics="macro_f1"))
    assert c.metrics == ("macro_f1",) and c.steps == 50
    flags = {o.name: o.flag for o in OPTIONS}
    assert flags["population_size"] == "--population" and flags["batch_size"] is None
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._checks import check_finite_nonnegative, check_positive_int, check_seed, parse_seed
from ..adapt.acceptance import ACCEPTANCE
from ..adapt.certification import CERTIFICATION
from ..adapt.gate import CERTIFY
from .grid import MIXTURES, check_loss_name
from .growth import KINDS

# --------------------------------------------------------------------------- kinds


class Kind(NamedTuple):
    """How the values of one kind of setting are read and checked.

    Attributes:
      parse: one command-line word -> value (an argparse ``type``; raises
        ``argparse.ArgumentTypeError`` with a one-line message).
      check: ``(value, name) -> value`` for the Python API: the value normalized (tuples for
        sequences, ``str`` for paths), or ``ValueError``/``TypeError`` naming the setting.
      many: ``None`` (one value), ``"+"`` (one or more words after the flag) or ``"append"``
        (the flag repeated, once per value).
    """

    parse: Callable[[str], Any]
    check: Callable[[Any, str], Any]
    many: str | None = None


def _word_positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _word_positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def _positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _decay(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a decay in [0, 1) (0: none), got {value!r}")
    return float(value)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":  # numpy's bool too
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _texts(value, name: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(v, str) for v in items):
        raise TypeError(f"{name} must be a string or a sequence of strings, got {value!r}")
    return tuple(items)


def _path(value, name: str):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string or a path, got {value!r}")
    return value


def _optional(check):
    return lambda value, name: None if value is None else check(value, name)


def _one_of(choices):
    def check(value, name: str):
        if value not in choices:
            listed = " or ".join(repr(c) for c in choices)
            raise ValueError(f"{name} must be {listed}, got {value!r}")
        return value

    return check


def _loss_name(value, name: str) -> str:
    return check_loss_name(value)


def _model_spec(value, name: str) -> str:
    from .models import parse_spec

    if not isinstance(value, str):
        raise TypeError(f"{name} must be a model spec such as 'mlp:8' or 'cnn:8,16', got "
                        f"{value!r}")
    parse_spec(value)
    return value


def _as_given(value, name: str):
    """Settings checked elsewhere (the gate's, by ``ev3evo.Gate.validated``)."""
    return value


def _known_metric(metric: str, name: str, spec: str) -> None:
    from ..assess.metrics import REGISTRY

    if metric not in REGISTRY:
        where = "" if spec.strip() == metric else f" in {spec!r}"
        raise ValueError(f"{name}: unknown metric {metric!r}{where}; known metrics: "
                         f"{', '.join(sorted(REGISTRY))}")


def _objectives(value, name: str) -> tuple[str, ...]:
    from ..assess.objectives import parse_objective

    specs = _texts(value, name)
    if not specs:
        raise ValueError(f"{name}: give at least one metric to optimize")
    for spec in specs:
        _known_metric(parse_objective(spec).metric, name, spec)
    return specs


def _constraints(value, name: str) -> tuple[str, ...]:
    from ..assess.objectives import parse_constraint

    specs = _texts(value, name)
    for spec in specs:
        _known_metric(parse_constraint(spec).metric, name, spec)
    return specs


def _es_name(value, name: str) -> str:
    from ..explore.evosax.driver import resolve

    if not isinstance(value, str):
        raise TypeError(f"{name} must be the name of an evosax algorithm, got {value!r}")
    cls, _ = resolve(value)  # an unknown name: the known ones, and the close matches
    from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

    if issubclass(cls, PopulationBasedAlgorithm):
        raise ValueError(f"{name}: {value} is population-based; the ES baseline needs a "
                         "distribution-based algorithm (Open_ES, CMA_ES, SNES, ...)")
    return value


POSITIVE_INT = Kind(_word_positive_int, check_positive_int)
COUNT = Kind(int, _count)
INTEGER = Kind(int, _integer)
POSITIVE_NUMBER = Kind(_word_positive_float, _positive_number)
DECAY = Kind(float, _decay)
NONNEGATIVE = Kind(float, check_finite_nonnegative)
NUMBER = Kind(float, _as_given)
FLAG = Kind(None, _flag)
TEXT = Kind(str, _as_given)
PATH = Kind(str, _path)
TEXTS = Kind(str, _texts, "append")


# --------------------------------------------------------------------------- options


class Option(NamedTuple):
    """The description of one setting (the metadata of a :class:`DistillConfig` field).

    Attributes:
      name: the field's name (filled in from the field).
      default: the Python default.
      help: what the setting does, with its unit.
      kind: its :class:`Kind`.
      flag: the command-line flag (``--grow`` also gives ``--no-grow``), ``None`` for none.
      group: the ``--help`` section listing the flag.
      choices: the allowed values, when they are a list.
      metavar: the placeholder of the value in ``--help``.
      shown_default: the text ``--help`` and the docs give for the default (``""``: none).
      cli_default: the default on the command line when it differs from the Python one.
      negated: the flag sets the setting to ``False`` (``--quiet`` for ``progress``).
      flag_help: the flag's help when it differs from ``help`` (negated flags).
      same_on_resume: a resumed run must have the same value (part of its fingerprint).
    """

    name: str
    default: Any
    help: str
    kind: Kind
    flag: str | None = None
    group: str = ""
    choices: tuple | None = None
    metavar: str | None = None
    shown_default: str | None = None
    cli_default: Any = None
    negated: bool = False
    flag_help: str | None = None
    same_on_resume: bool = False


#: the sections of ``ev3evo distill --help``, in order
DATA, OBJECTIVES, RUN, OUTPUTS, CHECKPOINTS = (
    "data and teacher", "what to optimize", "the EV3 run", "outputs and comparison",
    "checkpoints")
GROUPS = (DATA, OBJECTIVES, RUN, OUTPUTS, CHECKPOINTS)


def setting(default, help: str, kind: Kind, flag: str | None = None, group: str = "",
            *, checks: Callable | None = None, **details) -> Any:
    """A :class:`DistillConfig` field described by an :class:`Option` (see its attributes);
    ``checks`` replaces the kind's check (with the same signature)."""
    if checks is not None:
        kind = kind._replace(check=checks)
    option = Option("", default, help, kind, flag, group, **details)
    return dataclasses.field(default=default, metadata={"option": option})


_CORRECTIONS = tuple(CERTIFICATION)
_ACCEPT = tuple(ACCEPTANCE)


@dataclass
class DistillConfig:
    """Every setting of a distillation run (the ``ev3evo distill`` flags map onto them).

    The attributes, their defaults and their flags are listed below (generated from the
    fields' :class:`Option` s).
    """

    data: str | None = setting(
        None, "'digits' (built in, the default; 'digits:images' as 8x8x1 images), 'hard' or "
        "'hard:N' (a generated harder problem with N examples, 3000 by default), 'mnist1d' or "
        "'mnist1d:N' (Greydanus' 1-D digits, 40x1 sequences generated offline, 10000 by "
        "default), 'imbalanced' or 'imbalanced:N' (generated, 5 classes with shares 55% to "
        "3%, 6000 by default), or a .npz (arrays x, y; or x_train, y_train, [x_val, y_val,] x_test, "
        "y_test; x of any shape: (N, D), images (N, H, W, C), sequences (N, L, C); optional "
        "teacher_logits) or .csv file (header row; numeric features)",
        PATH, "--data", DATA, checks=_optional(_path), metavar="PATH", shown_default="",
        same_on_resume=True)
    label: str | None = setting(
        None, "label column of a .csv", PATH, "--label", DATA, checks=_optional(_path),
        metavar="COL", shown_default="the column named 'label', else the last column",
        same_on_resume=True)
    metrics: Sequence[str] = setting(
        ("accuracy",), "objective on the validation split: accuracy, macro_f1, agreement, ece "
        "(lower is better), neg_loss, top2_accuracy...; repeat for lexicographic priorities, "
        "':TOL' makes values within TOL of the best count as ties (TOL in the metric's own "
        "units)", TEXTS, "--metric", OBJECTIVES, checks=_objectives, metavar="NAME[:TOL]",
        same_on_resume=True)
    constraints: Sequence[str] = setting(
        (), "a requirement such as 'agreement>=0.95' or 'ece<=0.05'; repeatable", TEXTS,
        "--constraint", OBJECTIVES, checks=_constraints, metavar="EXPR", shown_default="",
        same_on_resume=True)
    constraint_margin: float = setting(
        1.645, "a candidate is selected as meeting a constraint on an average (accuracy, "
        "agreement) only if it clears the threshold by this many standard errors on the "
        "selection examples (1.645: a one-sided bound at level 0.05; 0: the point value), so the "
        "models selected do not sit at the threshold the held-out examples then find them "
        "short of. Certification still needs the constraint on every validation example, at "
        "the point value. On mnist1d (ece, accuracy>=0.55) validation ECE 0.029 against 0.048 "
        "without a margin", NONNEGATIVE, "--constraint-margin", OBJECTIVES, metavar="Z",
        same_on_resume=True)
    steps: int = setting(300, "maximum number of EV3 steps", POSITIVE_INT, "--steps", RUN)
    time_budget: float | None = setting(
        None, "maximum wall time of EV3 in seconds, its final check included: the steps stop "
        "early enough to leave the final check its time, so EV3 ends within about one step of "
        "it; the step and the final check are compiled before the clock starts and not "
        "counted (unless --no-warmup), a recompilation after growth counts; each baseline then "
        "gets EV3's actual wall time", POSITIVE_NUMBER, "--time-budget", RUN,
        checks=_optional(_positive_number), metavar="SECONDS", shown_default="no limit")
    student: str | None = setting(
        "mlp:8", "the built-in student: mlp:H[,H...] (hidden widths; capacity-limited on "
        "purpose) or cnn:C[,C...] (conv stages of C channels, each with a 2x max pool, and a "
        "dense head); from Python, distill(student=...) also takes your own flax nnx Module",
        TEXT, "--student", RUN, checks=_optional(_model_spec), metavar="SPEC",
        same_on_resume=True)
    grow: bool = setting(
        False, "grow a built-in student function-preservingly when progress stalls (the "
        "baselines keep the initial size); the recompilation counts in the time budget",
        FLAG, "--grow", RUN, same_on_resume=True)
    grow_kind: str = setting(
        "widen", "how to grow the student: wider layers or conv stages, an identity layer "
        "('deepen'), or an identity residual block in every conv stage ('residual', CNNs)",
        TEXT, "--grow-kind", RUN, choices=KINDS, checks=_one_of(KINDS), same_on_resume=True)
    grow_amount: int = setting(
        4, "units (channels for a CNN) added to every hidden layer (conv stage) per widening; "
        "deepening adds one layer, 'residual' one block per stage",
        POSITIVE_INT, same_on_resume=True)
    max_growths: int = setting(2, "at most this many growth events", COUNT, same_on_resume=True)
    patience: int = setting(
        30, "steps without certified improvement that count as a stall (growth)", POSITIVE_INT,
        "--patience", RUN, same_on_resume=True)
    population_size: int = setting(
        16, "candidates assessed per step (the allocation shares them among the sources, "
        "which offer more)", POSITIVE_INT, "--population", RUN, metavar="P",
        same_on_resume=True)
    alpha: float = setting(
        0.05, "error level of the gate's confidence bounds", NUMBER, "--alpha", RUN,
        same_on_resume=True)
    correction: str = setting(
        "auto", "how the gate tests a step's winner: 'split' selects it on half of the "
        "validation split and tests it alone on the other half; 'fresh' tests it on teacher-"
        "labelled transfer examples drawn afresh every step (agreement with the teacher), "
        "'sequential' accumulates that evidence over steps for a frozen challenger (an "
        "anytime-valid test); 'holm', 'bonferroni' or 'none' test every candidate on all of "
        "the validation split with that correction; 'auto': 'sequential' when the teacher can "
        "label new inputs and the first metric is accuracy or agreement, else 'split'",
        TEXT, "--correction", RUN, choices=("auto", *_CORRECTIONS), same_on_resume=True)
    transfer: int = setting(
        4096, "teacher-labelled transfer examples made afresh every step for the 'fresh' and "
        "'sequential' gates (mixup, shifts and noise of the training inputs)", POSITIVE_INT,
        "--transfer", RUN, metavar="N", same_on_resume=True)
    select_on: str = setting(
        "validation", "with the 'fresh' and 'sequential' gates: where a step's candidates are "
        "selected and accepted, 'validation' (its even half, the same examples every step) or "
        "'transfer' (a second batch of --transfer teacher-labelled examples made afresh every "
        "step; the whole validation split then guards certification), or 'thresholdout' "
        "(on such a batch, the even validation half answering, through noise, where the "
        "batch's gain differs from its own by more than --thresholdout-examples; the odd half "
        "guards): on mnist1d transfer selection let the KD candidates win, on digits it chose "
        "worse students", TEXT, "--select-on", RUN,
        choices=("validation", "transfer", "thresholdout"), same_on_resume=True)
    thresholdout_examples: float = setting(
        8.0, "with --select-on thresholdout: the threshold, in validation examples of the "
        "first metric (scaled as --tie-examples), beyond which the validation half answers",
        POSITIVE_NUMBER, "--thresholdout-examples", RUN, metavar="N", same_on_resume=True)
    gate_period: int = setting(
        8, "with correction 'sequential': steps a challenger is tested before the current "
        "model replaces it", POSITIVE_INT, "--gate-period", RUN, metavar="STEPS",
        same_on_resume=True)
    accept: str = setting(
        "lexicographic", "when a step's winner replaces the current model: 'lexicographic' "
        "(better beyond the tie tolerance, or tied and significantly closer to the teacher), "
        "'not_worse' (not reliably worse), 'better' (higher)", TEXT, "--accept", RUN,
        choices=_ACCEPT, same_on_resume=True)
    certify: str | None = setting(
        None, "certify a new stable model on a significant gain in the first metric only "
        "('primary'), or also when it ties on it and is significantly closer to the teacher "
        "('lexicographic')", TEXT, "--certify", RUN, choices=CERTIFY,
        shown_default="'lexicographic' with --correction split and the fidelity tie-breaker, "
        "else 'primary'", same_on_resume=True)
    final_check: bool = setting(
        True, "at the end of the run, test the final current model against the stable one "
        "once more (correction 'split': on the held-out half of the validation split; "
        "'fresh' or 'sequential': on one more fresh transfer batch)", FLAG)
    rollout_steps: int = setting(
        1000, "optimizer steps per gradient candidate", POSITIVE_INT, "--rollout-steps", RUN,
        metavar="N", same_on_resume=True)
    kd_chain: int = setting(
        0, "a KD chain: Adam 3e-3 on KL at T=4 from the initial student, continued N steps "
        "every EV3 step whether or not it wins (plain KD inside the loop, offered every step; "
        "0: none). On mnist1d (mlp:16) 4000 raised test accuracy from 0.583 to 0.594",
        COUNT, "--kd-chain", RUN, metavar="N", same_on_resume=True)
    kd_chain_average: float = setting(
        0.0, "with --kd-chain: also offer the moving average of the chain's iterates, with this "
        "decay per optimizer step (0: none). On mnist1d (mlp:16, --kd-chain 4000) 0.9995 and "
        "0.9999 lowered validation accuracy (0.597, 0.596 against 0.606)", DECAY,
        "--kd-chain-average", RUN, metavar="D",
        same_on_resume=True)
    tie_break: bool = setting(
        True, "break ties on the first metric (within tie_examples) by fidelity to the teacher",
        FLAG)
    tie_examples: float = setting(
        4.0, "candidates within N validation examples of the best on the first metric count "
        "as tied; the one closest to the teacher wins (for macro_f1, N examples of each class, "
        "averaged over the classes)", POSITIVE_NUMBER, "--tie-examples",
        RUN, metavar="N", same_on_resume=True)
    batch_size: int = setting(
        128, "minibatch size of gradient rollouts and KD baselines, in examples", POSITIVE_INT,
        same_on_resume=True)
    seed: int = setting(
        0, "seeds the data split, the models and the run", Kind(parse_seed, check_seed), "--seed", RUN,
        same_on_resume=True)
    out: str | None = setting(
        None, "output folder: summary.json, history.jsonl, *.png, the cached teacher, "
        "checkpoints (a resumed run writes into the folder it resumes; out may only repeat "
        "it)", PATH, "--out", OUTPUTS, checks=_optional(_path), metavar="DIR",
        shown_default="none: nothing is kept on disk, the results are returned (the folder "
        "resumed, with resume)", cli_default="ev3evo-distill",
        flag_help="output folder: summary.json, history.jsonl, *.png, the cached teacher, "
        "checkpoints; with --resume DIR the outputs go to DIR, and --out may only repeat it")
    baselines: bool = setting(
        True, "also run plain KD (each optimizer of the grid) and a pure evosax ES, each with "
        "EV3's wall time", FLAG, "--baselines", OUTPUTS)
    baseline_seconds: float | None = setting(
        None, "wall time of each baseline, in seconds (set it only for quick checks)",
        POSITIVE_NUMBER, "--baseline-seconds", OUTPUTS, checks=_optional(_positive_number),
        metavar="SECONDS", shown_default="EV3's own wall time, the fair comparison")
    es_algorithm: str = setting(
        "Open_ES", "evosax algorithm of the ES baseline (Open_ES, CMA_ES, SNES, ...)", TEXT,
        "--es", OUTPUTS, checks=_es_name, metavar="ALGO")
    kd_loss: str = setting(
        "kl_t4", "loss of the KD baselines (EV3's own gradient sources use all of them): KL at "
        "T=4 (kl_t4, the best on digits), KL at T=1, reverse KL at T=2 (the best on "
        "hard:20000), logit MSE, cross-entropy, or KL+CE", TEXT, "--kd-loss", OUTPUTS,
        choices=tuple(MIXTURES), checks=_loss_name)
    teacher: str | None = setting(
        None, "a teacher checkpoint (.msgpack from ev3evo.distillation.models.save); from "
        "Python, distill(teacher=...) also takes an nnx Module, any callable x -> logits, or "
        "the logits themselves", PATH, "--teacher", DATA, checks=_optional(_path),
        metavar="CKPT", shown_default="train one and cache it under OUT/teacher")
    teacher_arch: str | None = setting(
        None, "architecture of a trained teacher: mlp:H[,H...] or cnn:C[,C...]", TEXT,
        "--teacher-arch", DATA, checks=_optional(_model_spec), metavar="SPEC",
        shown_default="cnn:32,32,32 for images and sequences, mlp:128,128 for flat features",
        same_on_resume=True)
    teacher_epochs: int | None = setting(
        None, "training epochs of the teacher when one is trained", POSITIVE_INT,
        "--teacher-epochs", DATA, checks=_optional(check_positive_int), metavar="N",
        shown_default="the trainer's default, 200 with early stopping", same_on_resume=True)
    teacher_lr: float = setting(
        1e-3, "AdamW learning rate of a trained teacher", POSITIVE_NUMBER, "--teacher-lr", DATA,
        metavar="LR", same_on_resume=True)
    standardize: bool | None = setting(
        None, "standardize the examples with train statistics (per feature; per channel for "
        "images and sequences); a teacher module or callable always sees the data as given",
        FLAG, checks=_optional(_flag),
        shown_default="on, off when distill(student=...) is your own module (it sees your "
        "data as you give it)", same_on_resume=True)
    progress: bool = setting(
        True, "show a progress bar and print the table", FLAG, "--quiet", OUTPUTS,
        negated=True, flag_help="no progress bar, no table")
    tensorboard: bool = setting(
        False, "also write TensorBoard event files of the EV3 run under OUT/tensorboard (needs "
        'the tensorboard extra: pip install "ev3evo[tensorboard]")', FLAG, "--tensorboard",
        OUTPUTS)
    checkpoint_every: int | None = setting(
        None, "also save the EV3 state every N steps (it is always saved under OUT/checkpoints "
        "every --checkpoint-seconds and at the end of each phase)", POSITIVE_INT,
        "--checkpoint-every", CHECKPOINTS, checks=_optional(check_positive_int),
        metavar="N", shown_default="only on the time interval")
    checkpoint_seconds: float = setting(
        60.0, "save the EV3 state under OUT/checkpoints every SECONDS of wall time (and at "
        "the end of each phase); --resume OUT continues from the newest intact one",
        POSITIVE_NUMBER, "--checkpoint-seconds", CHECKPOINTS, metavar="SECONDS")
    resume: str | None = setting(
        None, "continue the EV3 run checkpointed in DIR (an output folder, or its checkpoints "
        "folder) with the same settings; the outputs are written to that output folder",
        PATH, "--resume", CHECKPOINTS, checks=_optional(_path), metavar="DIR",
        shown_default="")
    warmup: bool = setting(
        True, "compile EV3's step and final check before its clock starts (EV3's time and "
        "time budget, which the baselines also get, then exclude the one-off compilation; a "
        "recompilation after growth still counts)", FLAG)


#: the description of every setting, in the order of :class:`DistillConfig`'s fields
OPTIONS: tuple[Option, ...] = tuple(
    f.metadata["option"]._replace(name=f.name) for f in dataclasses.fields(DistillConfig))


def shown_default(option: Option, cli: bool = False) -> str:
    """The text given for ``option``'s default (``""`` when there is nothing to show)."""
    default = option.default
    if cli and option.cli_default is not None:
        return str(option.cli_default)
    if option.shown_default is not None:
        return option.shown_default
    if default is None:
        return ""
    if isinstance(default, tuple):
        return " ".join(map(str, default)) if option.kind.many == "+" else ", ".join(
            map(str, default))
    return str(default)


def _document(cls) -> None:
    lines = [cls.__doc__.rstrip(), "", "    Attributes:"]
    for o in OPTIONS:
        default = shown_default(o)
        details = [f"default: {default}" if default else "", f"``{o.flag}``" if o.flag else ""]
        details = "; ".join(d for d in details if d)
        lines.append(f"      {o.name}: {o.help}" + (f" ({details})." if details else "."))
    cls.__doc__ = "\n".join(lines) + "\n"


_document(DistillConfig)


def configure(config: DistillConfig | None = None, /, **options) -> DistillConfig:
    """``config`` (default: :class:`DistillConfig` ()) with ``options`` replacing its fields;
    an unknown name raises ``TypeError`` listing the known ones."""
    unknown = sorted(set(options) - {o.name for o in OPTIONS})
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}; settings: "
                        f"{', '.join(o.name for o in OPTIONS)}")
    return dataclasses.replace(config if config is not None else DistillConfig(), **options)


def checked(config: DistillConfig, flags: bool = False) -> DistillConfig:
    """``config`` with every field checked by its kind and normalized (sequences as tuples,
    paths as strings), and the rules of ``out`` and ``resume`` applied (a resumed run's
    ``out`` is the folder it resumes); raises ``ValueError``/``TypeError`` naming the setting
    (its flag, with ``flags``: for settings read from the command line)."""
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
    by_name = {o.name: o for o in OPTIONS}
    label = lambda name: (by_name[name].flag or name) if flags else name
    values = {o.name: check_value(o, getattr(config, o.name), label(o.name)) for o in OPTIONS}
    if values["kd_chain_average"] and not values["kd_chain"]:
        raise ValueError(f"{label('kd_chain_average')} averages the KD chain's iterates: give "
                         f"{label('kd_chain')} N too")  # fmt: skip
    from .outputs import output_rules

    return DistillConfig(**output_rules(values, label))


def check_value(option: Option, value, name: str):
    """``value`` checked as ``option``'s kind; the error names ``name`` (prefixed when the
    check's own message does not)."""
    try:
        return option.kind.check(value, name)
    except (ValueError, TypeError) as e:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", str(e)):
            raise
        raise type(e)(f"{name}: {e}") from None
