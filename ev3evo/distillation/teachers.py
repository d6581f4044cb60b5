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
:class:`~ev3evo.distillation.splits.DataError` naming the split, before any training of the
student.

Every teacher has a fingerprint (``report["fingerprint"]``): its kind and a SHA-256 of what
identifies it: the logits given or computed by a module or a callable, the checkpoint file's
bytes, or the built-in teacher's data and training settings
(:func:`~ev3evo.distillation.teacher.cache_key`). A resumed run must have the teacher it had
(``expect``): a different one is refused as soon as its fingerprint is known (before a
built-in teacher is trained), naming both.

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

import hashlib
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

__all__ = ["Labeller", "TeacherMismatch", "same_teacher", "splits_with_teacher", "teacher_of"]

SPLITS = ("train", "val", "test")


class TeacherMismatch(ValueError):
    """A resumed run was given another teacher than the one it was distilled from."""


def _logits_hash(logits: dict) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        a = np.ascontiguousarray(np.asarray(logits[split], np.float32))
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def same_teacher(saved: dict | None, now: dict) -> None:
    """Raises :class:`TeacherMismatch` naming both teachers unless ``now`` is ``saved``
    (their kind and hash; ``saved=None``: nothing to compare with)."""
    if saved is None or (saved.get("kind"), saved.get("sha256")) == (now["kind"], now["sha256"]):
        return
    raise TeacherMismatch(
        f"the run being resumed was distilled from {saved.get('label', saved.get('kind'))}, "
        f"not from {now['label']}; resume with the teacher it had")


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


def _built_in_fingerprint(ds: Dataset, config, kwargs: dict) -> dict:
    if config.teacher is not None:
        path = os.fspath(config.teacher)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such checkpoint file")
        digest = _file_hash(path)
        return {"kind": "checkpoint", "sha256": digest,
                "label": f"the checkpoint {path} (sha256 {digest[:12]})"}
    settings = T.teacher_settings(ds, **kwargs)
    key = T.cache_key(ds, settings)
    return {"kind": "built-in", "sha256": key,
            "label": f"a built-in {models.describe(settings['arch'])} teacher trained for at "
                     f"most {settings['epochs']} epochs at lr {settings['lr']:g} on this data "
                     f"(cache key {key})"}


def _built_in(ds: Dataset, config, out: str | None, log,
              expect) -> tuple[dict, dict, Labeller]:
    kwargs = {"seed": config.seed, "model": config.teacher_arch, "lr": config.teacher_lr}
    if config.teacher_epochs is not None:
        kwargs["epochs"] = config.teacher_epochs
    fingerprint = _built_in_fingerprint(ds, config, kwargs)
    same_teacher(expect, fingerprint)  # before any training
    t0 = time.perf_counter()
    cache = None if out is None else os.path.join(out, "teacher")
    t = T.load_or_train_teacher(ds, cache, path=config.teacher, root=out, **kwargs)
    log(f"teacher {models.describe(t.arch)} ({t.source}) ready in "
        f"{time.perf_counter() - t0:.1f}s")
    logits = {s: check_logits(np.asarray(T.teacher_logits(t, getattr(ds, s)["x"])),
                              len(getattr(ds, s)["y"]), ds.num_classes, f"teacher ({s})")
              for s in SPLITS}
    report = {"source": t.source, "arch": models.describe(t.arch),
              "params": int(models.count_params(t.params)), "path": t.path,
              "fingerprint": fingerprint}
    return logits, report, Labeller(lambda x: t.apply(t.params, x), True)


def splits_with_teacher(ds: Dataset, teacher=None, config=None, out: str | None = None,
                        log=lambda *a: None, expect: dict | None = None) -> tuple[dict, dict]:
    """``({split: {"x", "y", "teacher"}}, report)``: every split with the teacher's logits
    (:func:`teacher_of` without the labeller)."""
    splits, report, _ = teacher_of(ds, teacher, config, out, log, expect)
    return splits, report


def teacher_of(ds: Dataset, teacher=None, config=None, out: str | None = None,
               log=lambda *a: None,
               expect: dict | None = None) -> tuple[dict, dict, Labeller | None]:
    """``(splits, report, labeller)``: every split with the teacher's logits.

    Args:
      ds: the run's dataset (its splits may already hold the teacher's logits).
      teacher: ``None`` (logits from the data, else the built-in teacher), an nnx Module, or
        a callable ``x -> logits``.
      config: the run's settings (the built-in teacher's: ``teacher``, ``teacher_arch``,
        ``teacher_epochs``, ``teacher_lr``, ``seed``); ``out`` the folder of its cache
        (``OUT/teacher``; ``None``: no cache).
      log: prints a line (the built-in teacher's training).
      expect: the fingerprint the teacher must have (a resumed run's), or ``None``.

    Returns:
      The splits; ``{"source", "params", "fingerprint", ...}`` describing the teacher for the
      summary; and the teacher as a :class:`Labeller` of new inputs (``None`` when it came as
      logits).

    Raises:
      DataError: logits that do not fit the data or are not finite (naming the split).
      TeacherMismatch: the teacher is not ``expect``.
    """
    given = "teacher" in ds.train
    if given and teacher is not None:
        raise DataError("the teacher's logits came with the data; give no other teacher")
    labeller = None
    if given:
        logits = {s: np.asarray(getattr(ds, s)["teacher"]) for s in SPLITS}
        report = {"source": "logits", "params": None}
        label = "the logits given with the data"
    elif isinstance(teacher, nnx.Module):
        fn = _module_fn(teacher)
        logits = _logits_of(fn, ds, type(teacher).__name__)
        report = {"source": "module", "class": type(teacher).__name__,
                  "params": int(models.count_params(teacher))}
        raw = _raw_fn(ds)
        labeller = Labeller(lambda x: fn(raw(x)), True)
        label = f"the {type(teacher).__name__} module given"
    elif callable(teacher):
        name = getattr(teacher, "__name__", type(teacher).__name__)
        logits = _logits_of(teacher, ds, name)
        report = {"source": "callable", "params": None}
        label = f"the callable {name} given"
        labeller = Labeller(lambda x: np.asarray(teacher(ds.raw(x))), False)
    elif teacher is None:
        logits, report, labeller = _built_in(ds, config, out, log, expect)
    else:
        raise TypeError("teacher must be an nnx Module, a callable x -> logits, the logits "
                        f"(an array), or a checkpoint path; got {type(teacher).__name__}")
    if "fingerprint" not in report:
        digest = _logits_hash(logits)
        report["fingerprint"] = {"kind": report["source"], "sha256": digest,
                                 "label": f"{label} (its logits' sha256 {digest[:12]})"}
        same_teacher(expect, report["fingerprint"])
    splits = {s: {"x": getattr(ds, s)["x"], "y": getattr(ds, s)["y"],
                  "teacher": jnp.asarray(logits[s], jnp.float32)} for s in SPLITS}
    return splits, report, labeller
