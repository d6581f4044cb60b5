"""What the front door was given: settings, the user's student, teacher and data, checked.

:func:`ev3evo.distill` takes the settings of
:class:`~ev3evo.distillation.options.DistillConfig` and three things that need not be
settings: ``student`` (a spec such as ``"cnn:8,16"``, or any flax nnx Module), ``teacher`` (a
checkpoint path, an nnx Module, a callable ``x -> logits``, or the logits: an array aligned
with the examples, or one per split) and ``data`` (a name or a path, arrays ``(x, y)``, a
dict of splits). :func:`given` separates the objects from the settings; :func:`dataset` and
:func:`student` turn them into the run's :class:`~ev3evo.distillation.data.Dataset` and
:class:`~ev3evo.distillation.student.Student`, checking before any training that they fit:
the student returns one logit per class for the data's examples (and takes their channels),
its state splits into parameters and the rest, and it is built in when it is to grow.

Example::

    import numpy as np
    from flax import nnx
    from ev3evo.distillation import inputs
    config, objects = inputs.given(None, student=nnx.Linear(64, 3, rngs=nnx.Rngs(0)),
                                   teacher=None, data=None, options={"steps": 2})
    assert config.steps == 2 and config.student is None and config.standardize is False
    try:
        inputs.student(config, objects, inputs.dataset(config, objects))   # digits: 10 classes
    except ValueError as e:
        assert "3 outputs" in str(e) and "10 classes" in str(e)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from . import data as D
from .nnx_state import ModelError
from .options import DistillConfig, checked, configure
from .student import Student


class Given(NamedTuple):
    """The objects the front door was given beside the settings (``None`` when not).

    Attributes:
      student: the user's nnx Module.
      teacher: an nnx Module or a callable ``x -> logits``.
      logits: the teacher's logits given as arrays (aligned with ``data``'s examples).
      data: arrays, a dict of splits or a Dataset (a name or a path is a setting).
    """

    student: Any = None
    teacher: Any = None
    logits: Any = None
    data: Any = None


def _is_logits(x) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(isinstance(v, (np.ndarray, jax.Array, list)) for v in x.values())
    return isinstance(x, (np.ndarray, jax.Array))


def given(config, student, teacher, data, options: dict) -> tuple[DistillConfig, Given]:
    """The checked settings (strings among ``student``, ``teacher``, ``data`` become the
    settings of those names) and the :class:`Given` objects."""
    if student is not None and not isinstance(student, (nnx.Module, str)):
        raise TypeError("student must be a flax nnx Module or a spec such as 'mlp:8' or "
                        f"'cnn:8,16'; got {type(student).__name__}")
    if isinstance(student, nnx.Module):
        options = {**options, "student": None}
        options.setdefault("standardize", False)
    elif student is not None:
        options = {**options, "student": student}
    if isinstance(teacher, (str, os.PathLike)):
        options = {**options, "teacher": teacher}
    if data is None or isinstance(data, (str, os.PathLike)):
        options = {**options, "data": data} if data is not None else options
    c = checked(configure(config, **options))
    if c.standardize is None:
        c = dataclasses.replace(c, standardize=True)
    objects = Given(
        student=student if isinstance(student, nnx.Module) else None,
        teacher=teacher if callable(teacher) and not _is_logits(teacher) else None,
        logits=teacher if _is_logits(teacher) else None,
        data=None if data is None or isinstance(data, (str, os.PathLike)) else data)
    if teacher is not None and not isinstance(teacher, (str, os.PathLike)) \
            and objects.teacher is None and objects.logits is None:
        raise TypeError("teacher must be an nnx Module, a callable x -> logits, the logits "
                        f"(an array, or one per split), or a checkpoint path; got "
                        f"{type(teacher).__name__}")
    if c.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ValueError('tensorboard (--tensorboard) needs tensorboardX: pip install '
                         '"ev3evo[tensorboard]"')
    return c, objects


def described(objects: Given) -> dict[str, str]:
    """What was given from Python beside the settings, in words (``{}`` when nothing was):
    ``summary.json`` records it, since no setting can say it."""
    words = {}
    if objects.student is not None:
        words["student"] = f"{type(objects.student).__name__}, an nnx Module"
    if objects.teacher is not None:
        words["teacher"] = f"{type(objects.teacher).__name__}, a module or callable"
    if objects.logits is not None:
        words["teacher"] = "the teacher's logits, as arrays"
    if objects.data is not None:
        words["data"] = f"{type(objects.data).__name__} of arrays"
    return words


def dataset(c: DistillConfig, objects: Given) -> D.Dataset:
    """The run's dataset, with the teacher's logits when they were given as arrays."""
    source = objects.data if objects.data is not None else c.data
    return D.from_user(source, label=c.label, seed=c.seed, standardize=c.standardize,
                       teacher=objects.logits)


def _channels_message(module: nnx.Module, shape: tuple) -> str:
    """Why a convolutional student refuses examples of ``shape``, when it is their channels."""
    takes = sorted({m.in_features for _, m in nnx.iter_modules(module)
                    if isinstance(m, nnx.Conv)})
    channels = shape[-1] if len(shape) >= 2 else 1
    if takes and channels not in takes:
        return (f"the student's convolutions take {', '.join(map(str, takes))} input "
                f"channels but the data's examples {shape} have {channels}")
    return ""


def check_fits(student: Student, module: nnx.Module | None, ds: D.Dataset) -> None:
    """Raises :class:`~ev3evo.distillation.nnx_state.ModelError` unless ``student`` maps two of
    the data's examples to ``(2, num_classes)`` logits (checked on shapes only)."""
    x = ds.val["x"][:2]
    shape = tuple(ds.feature_shape)
    module = module if module is not None else student.module(student.initial)
    try:
        out = jax.eval_shape(student.logits, student.initial, x)  # before the head
    except Exception as e:
        why = _channels_message(module, shape) or f"{type(e).__name__}: {e}".splitlines()[0]
        raise ModelError(f"the student {student.name} does not take the data's examples of "
                         f"shape {shape}: {why}") from None
    if tuple(out.shape) != (2, ds.num_classes):
        outputs = out.shape[-1] if len(out.shape) == 2 else tuple(out.shape[1:])
        raise ModelError(
            f"the student {student.name} has {outputs} outputs but the data has "
            f"{ds.num_classes} classes: it must return one logit per class, shape (N, "
            f"{ds.num_classes}) for N examples (it returned {tuple(out.shape)} for 2)")


def student(c: DistillConfig, objects: Given, ds: D.Dataset) -> Student:
    """The run's student (the user's module, or the built-in ``c.student``), checked."""
    if objects.student is not None:
        module = objects.student
        s = Student(module, ds.num_classes)
    else:
        s = Student.build(c.student, ds.feature_shape, ds.num_classes, c.seed)
        module = None
    check_fits(s, module, ds)
    if c.grow and s.arch is None:
        raise ModelError(f"grow=True grows a built-in student (mlp:... or cnn:...); "
                         f"{s.name} is your own architecture")
    if c.grow and c.grow_kind == "residual" and s.arch["kind"] != "cnn":
        raise ModelError("residual blocks grow a CNN (--student cnn:...); an MLP grows with "
                         "'widen' or 'deepen'")
    return s
