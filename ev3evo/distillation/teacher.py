"""The built-in teacher: an MLP or a CNN trained with optax on the train split, cached.

``train_teacher`` runs mini-batch AdamW (weight decay) with cross-entropy on the train split,
one jitted ``lax.scan`` per epoch (compiled once), keeps the parameters with the best
validation accuracy (ties: lower validation loss) and stops after ``patience`` epochs without
improvement. The architecture is a spec (``mlp:128,128``, ``cnn:32,32,32``; see
:func:`ev3evo.distillation.models.parse_spec`); :func:`default_arch` is a CNN for images and
sequences, an MLP for flat features. ``load_or_train_teacher`` caches the result under a
folder, keyed by the dataset (name, seed-dependent content fingerprint) and the training
configuration, or loads a checkpoint the user gives.

A cache file is used only when it is intact and is the teacher asked for: its checksum
matches (:mod:`~ev3evo.distillation.checkpoints`), it records the same data fingerprint, the
same architecture and training settings, and its parameters are finite. Anything else (a
flipped byte, a file from another run, a symbolic link planted at its name) is never used: a
:class:`TeacherCacheWarning` says why in one line and the teacher is trained again. Training
stops at a safe point between two epochs when SIGINT or SIGTERM came (see
:func:`ev3evo.interrupts.stop_point`).

Example:
    >>> from ev3evo.distillation import data, teacher
    >>> t = teacher.train_teacher(data.load_digits(), "mlp:32", epochs=5)
    >>> t.metrics["test"]["accuracy"] > 0.8
    True
    >>> teacher.teacher_logits(t, data.load_digits().test["x"]).shape
    (359, 10)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import interrupts
from ..io.atomic import make_dirs
from . import models
from .data import Dataset

__all__ = ["Teacher", "TeacherCacheWarning", "cache_key", "default_arch", "evaluate",
           "load_or_train_teacher", "teacher_logits", "teacher_settings", "teacher_splits",
           "train_teacher"]


class TeacherCacheWarning(UserWarning):
    """A cached teacher was unusable (damaged, another teacher's, a link): it is trained again."""


def default_arch(feature_shape) -> str:
    """The teacher trained by default: ``cnn:32,32,32`` for images and sequences (examples of
    rank 2 or more), ``mlp:128,128`` for flat features."""
    return "cnn:32,32,32" if len(tuple(feature_shape)) >= 2 else "mlp:128,128"


class Teacher(NamedTuple):
    """A trained (or loaded) teacher.

    Attributes:
        apply: jitted pure function ``apply(params, x) -> logits``.
        params: plain dict of parameters (``nnx.to_pure_dict``).
        arch: architecture dict (see :func:`ev3evo.distillation.models.build`).
        metrics: ``{"train"|"val"|"test": {"accuracy": ..., "loss": ...}}`` on the dataset.
        source: ``"trained"``, ``"cache"`` or ``"checkpoint"``.
        path: the checkpoint file it was saved to or loaded from (``None`` if not saved).
        epochs: training epochs run (0 when loaded).
    """

    apply: Callable
    params: dict
    arch: dict
    metrics: dict
    source: str = "trained"
    path: str | None = None
    epochs: int = 0

    @property
    def module(self) -> nnx.Module:
        """The teacher as a flax nnx module."""
        return models.to_module(models.template(self.arch), self.params)


def teacher_logits(teacher: Teacher, x, batch_size: int = 4096) -> jax.Array:
    """Logits of the teacher on ``x`` (N, *feature_shape), computed in chunks of ``batch_size``."""
    x = jnp.asarray(x, jnp.float32)
    if x.shape[0] <= batch_size:
        return teacher.apply(teacher.params, x)
    chunks = [teacher.apply(teacher.params, x[i : i + batch_size])
              for i in range(0, x.shape[0], batch_size)]
    return jnp.concatenate(chunks)


def teacher_splits(dataset: Dataset, teacher: Teacher) -> dict:
    """``{"train"|"val"|"test": {"x", "y", "teacher"}}``: each split of ``dataset`` with the
    teacher's logits (float32) under ``"teacher"``, the batches distillation works on."""
    return {split: {"x": getattr(dataset, split)["x"], "y": getattr(dataset, split)["y"],
                    "teacher": jnp.asarray(teacher_logits(teacher, getattr(dataset, split)["x"]),
                                           jnp.float32)}
            for split in ("train", "val", "test")}


def _cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def evaluate(apply: Callable, params, split: dict) -> dict:
    """``{"accuracy", "loss"}`` (cross-entropy) of ``apply(params, .)`` on a split dict."""
    logits = apply(params, split["x"])
    acc = jnp.mean(jnp.argmax(logits, -1) == split["y"])
    return {"accuracy": float(acc), "loss": float(_cross_entropy(logits, split["y"]))}


def _evaluate_all(apply: Callable, params, dataset: Dataset) -> dict:
    """Metrics on the three splits in one compiled call (one compilation instead of three)."""

    @jax.jit
    def run(p):
        out = {}
        for s in ("train", "val", "test"):
            split = getattr(dataset, s)
            logits = apply(p, split["x"])
            out[s] = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == split["y"]),
                      "loss": _cross_entropy(logits, split["y"])}
        return out

    return jax.tree.map(float, run(params))


def _check_training(epochs, batch_size, patience, lr) -> None:
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def train_teacher(
    dataset: Dataset,
    model: str | dict | None = None,
    epochs: int = 200,
    seed: int = 0,
    lr: float = 1e-3,
    *,
    batch_size: int = 64,
    weight_decay: float = 1e-4,
    patience: int = 30,
) -> Teacher:
    """Train a built-in teacher on ``dataset.train``, keeping the best parameters on
    ``dataset.val``.

    Args:
        dataset: a :class:`~ev3evo.distillation.data.Dataset`.
        model: the architecture, a spec (``"mlp:128,128"``, ``"cnn:32,32,32"``) or an arch
            dict; default :func:`default_arch`.
        epochs: maximum number of passes over the train split.
        seed: initialization and shuffling seed.
        lr: AdamW learning rate.
        batch_size: mini-batch size (capped at the train size).
        weight_decay: AdamW decoupled weight decay.
        patience: stop after this many epochs without a better validation accuracy.

    Returns:
        A :class:`Teacher` with train/val/test metrics of the kept parameters.
    """
    _check_training(epochs, batch_size, patience, lr)
    arch = models.arch_for(model or default_arch(dataset.feature_shape), dataset.feature_shape,
                           dataset.num_classes)
    f = models.functional(models.build(arch, rngs=nnx.Rngs(seed)))
    tx = optax.adamw(lr, weight_decay=weight_decay)
    x, y = dataset.train["x"], dataset.train["y"]
    n = x.shape[0]
    bs = min(int(batch_size), n)
    n_batches = n // bs

    def loss_fn(params, xb, yb):
        return _cross_entropy(f.apply(params, xb), yb)

    @jax.jit
    def epoch(params, opt_state, key):
        # One pass over a fresh permutation (the remainder n % bs is left out this epoch,
        # a different subset every epoch).
        perm = jax.random.permutation(key, n)[: n_batches * bs].reshape(n_batches, bs)

        def step(carry, idx):
            p, s = carry
            g = jax.grad(loss_fn)(p, x[idx], y[idx])
            updates, s = tx.update(g, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), perm)
        logits = f.apply(params, dataset.val["x"])
        val_acc = jnp.mean(jnp.argmax(logits, -1) == dataset.val["y"])
        return params, opt_state, val_acc, _cross_entropy(logits, dataset.val["y"])

    params = f.params
    opt_state = tx.init(params)
    key = jax.random.key(seed)
    best = (-1.0, math.inf)
    best_params, since, ran = params, 0, 0
    for _ in range(epochs):
        interrupts.stop_point(f"while training the teacher (after {ran} of at most {epochs} "
                              "epochs)")
        key, k_epoch = jax.random.split(key)
        params, opt_state, val_acc, val_loss = epoch(params, opt_state, k_epoch)
        ran += 1
        score = (float(val_acc), float(val_loss))
        if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
            best, best_params, since = score, params, 0
        else:
            since += 1
            if since >= patience:
                break
    apply = jax.jit(f.apply)
    metrics = _evaluate_all(f.apply, best_params, dataset)
    return Teacher(apply, best_params, f.arch, metrics, "trained", None, ran)


def _fingerprint(dataset: Dataset) -> str:
    """A short hash of the dataset's content (train/val/test arrays and classes)."""
    h = hashlib.sha256()
    h.update(repr((dataset.name, dataset.num_classes, dataset.feature_shape)).encode())
    for s in (dataset.train, dataset.val, dataset.test):
        h.update(np.asarray(s["x"]).tobytes())
        h.update(np.asarray(s["y"]).tobytes())
    return h.hexdigest()[:16]


def _from_module(module: nnx.Module, dataset: Dataset, source: str, path: str) -> Teacher:
    f = models.functional(module)
    apply = jax.jit(f.apply)
    metrics = _evaluate_all(f.apply, f.params, dataset)
    return Teacher(apply, f.params, f.arch, metrics, source, path, 0)


def _check_fits(arch: dict, dataset: Dataset, path: str) -> None:
    in_features = math.prod(dataset.feature_shape)
    if arch.get("kind", "mlp") == "cnn":
        if tuple(arch["in_shape"]) != tuple(dataset.feature_shape):
            raise ValueError(
                f"teacher checkpoint {path} takes examples of shape {tuple(arch['in_shape'])} "
                f"but the data's are {tuple(dataset.feature_shape)}")
    elif arch["in_features"] != in_features:
        raise ValueError(
            f"teacher checkpoint {path} expects {arch['in_features']} input features but the "
            f"data has {in_features} (feature shape {dataset.feature_shape})"
        )
    if arch["num_classes"] != dataset.num_classes:
        raise ValueError(
            f"teacher checkpoint {path} predicts {arch['num_classes']} classes but the data has "
            f"{dataset.num_classes}"
        )


def teacher_settings(dataset: Dataset, model: str | dict | None = None, epochs: int = 200,
                     seed: int = 0, lr: float = 1e-3, **kwargs) -> dict:
    """The training settings of a built-in teacher for ``dataset``, as JSON (arch dict included)."""
    arch = models.arch_for(model or default_arch(dataset.feature_shape), dataset.feature_shape,
                           dataset.num_classes)
    settings = {"arch": arch, "epochs": int(epochs), "seed": int(seed), "lr": float(lr), **kwargs}
    return json.loads(json.dumps(settings, sort_keys=True))


def cache_key(dataset: Dataset, settings: dict) -> str:
    """The built-in teacher's identity: a hash of the data's content and its training settings."""
    return hashlib.sha256(
        (_fingerprint(dataset) + json.dumps(settings, sort_keys=True)).encode()
    ).hexdigest()[:16]


def _finite(params) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(params))


def _cached(path: str, key: str, settings: dict, dataset: Dataset, root) -> Teacher | None:
    """The teacher cached at ``path`` if it is intact and the one asked for, else ``None``
    (with a :class:`TeacherCacheWarning` when a file was there)."""
    if not os.path.lexists(path):
        return None
    try:
        module, config = models.load(path, root=root, require_checksum=True)
        if (config.get("key"), config.get("data"), config.get("settings")) != (
                key, _fingerprint(dataset), settings):
            raise ValueError(f"{path}: it was written for other data or training settings")
        _check_fits(config, dataset, path)
        t = _from_module(module, dataset, "cache", path)
        if not _finite(t.params):
            raise ValueError(f"{path}: its parameters are not all finite")
        return t
    except (ValueError, OSError) as e:  # damaged, foreign, or a link: never used
        text = str(e) if isinstance(e, ValueError) else f"{path}: {e.strerror}"
        warnings.warn(f"the cached teacher is unusable, training it again: {text}",
                      TeacherCacheWarning, stacklevel=3)
        return None


def load_or_train_teacher(
    dataset: Dataset,
    cache_dir: str | os.PathLike | None,
    *,
    path: str | os.PathLike | None = None,
    model: str | dict | None = None,
    epochs: int = 200,
    seed: int = 0,
    lr: float = 1e-3,
    root: str | os.PathLike | None = None,
    **kwargs,
) -> Teacher:
    """Load the teacher from ``path``, else from the cache in ``cache_dir``, else train and cache.

    The cache file ``teacher-<name>-<hash>.msgpack`` is keyed by the dataset's content and
    every training setting (:func:`cache_key`), so changing either trains a new teacher; it
    is used only when intact (see the module docstring). ``cache_dir=None`` trains without
    caching. ``root`` is the folder trusted as given (the run's output folder): the cache
    folder and file below it must not be symbolic links (default: ``cache_dir`` itself).
    Extra keyword arguments go to :func:`train_teacher`.

    Raises:
        ValueError: the checkpoint at ``path`` is missing, unreadable, or its input size or
            number of classes does not match the data.
        ev3evo.io.UnsafePathError: the cache folder is a symbolic link below ``root``.

    Example:
        >>> import tempfile
        >>> from ev3evo.distillation import data
        >>> d, folder = data.load_digits(), tempfile.mkdtemp()
        >>> load_or_train_teacher(d, folder, model="mlp:16", epochs=2).source
        'trained'
        >>> load_or_train_teacher(d, folder, model="mlp:16", epochs=2).source
        'cache'
    """
    if path is not None:
        path = os.fspath(path)
        module, config = models.load(path)
        _check_fits(config, dataset, path)
        return _from_module(module, dataset, "checkpoint", path)
    settings = teacher_settings(dataset, model, epochs, seed, lr, **kwargs)
    cached = None
    if cache_dir is not None:
        cache_dir = os.fspath(cache_dir)
        root = cache_dir if root is None else root
        make_dirs(cache_dir, root=root)  # a linked cache folder is refused, not followed
        key = cache_key(dataset, settings)
        safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.name)
        cached = os.path.join(cache_dir, f"teacher-{safe_name}-{key}.msgpack")
        found = _cached(cached, key, settings, dataset, root)
        if found is not None:
            return found
    t = train_teacher(dataset, model, epochs, seed, lr, **kwargs)
    if cached is None or not _finite(t.params):  # a diverged teacher is reported, not kept
        return t
    models.save(cached, (t.arch, t.params),
                {"dataset": dataset.name, "data": _fingerprint(dataset), "key": key,
                 "settings": settings, "metrics": t.metrics}, root=root)
    return t._replace(path=cached)
