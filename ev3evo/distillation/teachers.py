"""The teacher of a run, whatever it is: its logits on every split, computed once.

A run needs the teacher's logits on the train, validation and test examples, nothing else.
They come from, in this order:

- the data itself: logits computed beforehand (``teacher_logits`` in the ``.npz``, or an
  array given as ``teacher``; :mod:`ev3evo.distillation.splits` checked and split them), so a
  teacher too large to sit beside the student is run once, offline;
- an nnx Module: run in eval mode (``module.eval()`` on a copy) on the examples as they were
  given (before standardization), in chunks, in one compiled program;
- any other callable ``x -> logits`` (a jitted function, a scikit-learn model's
  ``decision_function``, ...): called on chunks of the examples as they were given;
- a checkpoint (``--teacher``), or nothing: the built-in teacher
  (:mod:`ev3evo.distillation.teacher`), trained and cached under the output folder.

Logits that do not fit the data (rows, classes) or are not finite raise
:class:`~ev3evo.distillation.splits.DataError`, before any training of the student.

Example::

    import numpy as np
    from ev3evo.distillation import data
    from ev3evo.distillation.teachers import splits_with_teacher
    ds = data.load("digits")
    w = np.random.default_rng(0).normal(size=(64, 10))
    splits, report = splits_with_teacher(ds, lambda x: np.asarray(x).reshape(len(x), -1) @ w)
    assert splits["test"]["teacher"].shape == (359, 10) and report["source"] == "callable"
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import models
from . import teacher as T
from .splits import DataError, Dataset, check_logits

__all__ = ["Labeller", "splits_with_teacher", "teacher_of"]

SPLITS = ("train", "val", "test")


def _chunks(fn: Callable, x, size: int = 4096) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i:i + size])) for i in range(0, len(x), size)])


def _module_fn(module: nnx.Module) -> Callable:
    """``x -> logits`` of ``module`` in eval mode, compiled once (the module is untouched)."""
    graphdef, state = nnx.split(module)
    copy = nnx.merge(graphdef, state)
    copy.eval()
    graphdef, state = nnx.split(copy)
    run = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    return lambda x: run(state, jnp.asarray(x, jnp.float32))


def _logits_of(fn: Callable, ds: Dataset, name: str) -> dict:
    out = {}
    for split in SPLITS:
        s = getattr(ds, split)
        try:
            logits = _chunks(fn, ds.raw(s["x"]))
        except DataError:
            raise
        except Exception as e:  # the user's teacher failed on the data: one clear line
            raise DataError(f"the teacher ({name}) failed on the {split} examples of shape "
                            f"{tuple(ds.feature_shape)}: {type(e).__name__}: {e}") from None
        out[split] = check_logits(logits, len(s["y"]), ds.num_classes, f"teacher ({split})")
    return out


class Labeller(NamedTuple):
    """The teacher as a function of the student's inputs (standardized examples).

    Attributes:
      fn: ``x -> logits`` for a batch of the student's inputs.
      traceable: ``fn`` is a JAX function (it can run inside a compiled program); a host
        function (a scikit-learn model, ...) is called on concrete arrays.
    """

    fn: Callable
    traceable: bool


def _raw_fn(ds: Dataset):
    """:meth:`Dataset.raw` in ``jnp`` (traceable)."""
    mean, std = jnp.asarray(ds.mean, jnp.float32), jnp.asarray(ds.std, jnp.float32)
    return lambda x: x * std + mean


def _built_in(ds: Dataset, config, out: str, log) -> tuple[dict, dict, Labeller]:
    kwargs = {"seed": config.seed, "model": config.teacher_arch, "lr": config.teacher_lr}
    if config.teacher_epochs is not None:
        kwargs["epochs"] = config.teacher_epochs
    t0 = time.perf_counter()
    t = T.load_or_train_teacher(ds, os.path.join(out, "teacher"), path=config.teacher, **kwargs)
    log(f"teacher {models.describe(t.arch)} ({t.source}) ready in "
        f"{time.perf_counter() - t0:.1f}s")
    logits = {s: np.asarray(T.teacher_logits(t, getattr(ds, s)["x"])) for s in SPLITS}
    report = {"source": t.source, "arch": models.describe(t.arch),
              "params": int(models.count_params(t.params)), "path": t.path}
    return logits, report, Labeller(lambda x: t.apply(t.params, x), True)


def splits_with_teacher(ds: Dataset, teacher=None, config=None, out: str | None = None,
                        log=lambda *a: None) -> tuple[dict, dict]:
    """``({split: {"x", "y", "teacher"}}, report)``: every split with the teacher's logits
    (:func:`teacher_of` without the labeller)."""
    splits, report, _ = teacher_of(ds, teacher, config, out, log)
    return splits, report


def teacher_of(ds: Dataset, teacher=None, config=None, out: str | None = None,
               log=lambda *a: None) -> tuple[dict, dict, Labeller | None]:
    """``(splits, report, labeller)``: every split with the teacher's logits.

    Args:
      ds: the run's dataset (its splits may already hold the teacher's logits).
      teacher: ``None`` (logits from the data, else the built-in teacher), an nnx Module, or
        a callable ``x -> logits``.
      config: the run's settings (the built-in teacher's: ``teacher``, ``teacher_arch``,
        ``teacher_epochs``, ``teacher_lr``, ``seed``); ``out`` the folder of its cache.

    Returns:
      The splits; ``{"source", "params", ...}`` describing the teacher for the summary; and
      the teacher as a :class:`Labeller` of new inputs (``None`` when it came as logits).
    """
    given = "teacher" in ds.train
    if given and teacher is not None:
        raise DataError("the teacher's logits came with the data; give no other teacher")
    labeller = None
    if given:
        logits = {s: np.asarray(getattr(ds, s)["teacher"]) for s in SPLITS}
        report = {"source": "logits", "params": None}
    elif isinstance(teacher, nnx.Module):
        fn = _module_fn(teacher)
        logits = _logits_of(fn, ds, type(teacher).__name__)
        report = {"source": "module", "class": type(teacher).__name__,
                  "params": int(models.count_params(teacher))}
        raw = _raw_fn(ds)
        labeller = Labeller(lambda x: fn(raw(x)), True)
    elif callable(teacher):
        logits = _logits_of(teacher, ds, getattr(teacher, "__name__", type(teacher).__name__))
        report = {"source": "callable", "params": None}
        labeller = Labeller(lambda x: np.asarray(teacher(ds.raw(x))), False)
    elif teacher is None:
        logits, report, labeller = _built_in(ds, config, out, log)
    else:
        raise TypeError("teacher must be an nnx Module, a callable x -> logits, the logits "
                        f"(an array), or a checkpoint path; got {type(teacher).__name__}")
    splits = {s: {"x": getattr(ds, s)["x"], "y": getattr(ds, s)["y"],
                  "teacher": jnp.asarray(logits[s], jnp.float32)} for s in SPLITS}
    return splits, report, labeller
