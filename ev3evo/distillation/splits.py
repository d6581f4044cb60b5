"""A classification dataset as train / validation / test splits, built from arrays.

:func:`from_arrays` splits features and labels class by class with a fixed seed, maps the
labels to ``0 .. C-1`` (the original labels are kept in ``Dataset.classes``) and standardizes
every split with statistics of the *train* split only: flat examples ``(D,)`` feature by
feature, images ``(H, W, C)`` and sequences ``(L, C)`` channel by channel (over the examples
and their positions), so that the shape of an example is kept; a feature or channel with zero
train spread is divided by 1. A teacher's logits computed beforehand travel with their
examples (``"teacher"`` in each split, checked: one row per example, one column per class,
finite). Anything unusable raises :class:`DataError` (a ``ValueError``) whose message names
the problem. The loaders of :mod:`ev3evo.distillation.data` and
:mod:`ev3evo.distillation.files` build on it.

Example::

    import numpy as np
    from ev3evo.distillation.splits import from_arrays
    ds = from_arrays(np.random.rand(30, 3), np.arange(30) % 2)
    assert ds.num_classes == 2 and ds.train["x"].shape[1:] == (3,)
    images = from_arrays(np.random.rand(30, 4, 4, 2), np.arange(30) % 2)
    assert images.mean.shape == (4, 4, 2) and np.allclose(images.train["x"][..., 0].mean(), 0,
                                                           atol=1e-5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_FRACTIONS", "DataError", "Dataset", "assemble", "check_finite",
           "check_fractions", "check_logits", "encode_labels", "from_arrays",
           "stratified_split"]

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


class DataError(ValueError):
    """A dataset (file, arrays or splits) that ev3evo cannot use; the message says why."""


class Dataset(NamedTuple):
    """Train / validation / test splits of a classification problem.

    Attributes:
        train, val, test: dicts ``{"x": float32 (N, *feature_shape), "y": int32 (N,)}``, and
            ``"teacher"``: float32 ``(N, C)`` when a teacher's logits came with the data.
        num_classes: number of classes ``C``; labels are ``0 .. C-1``.
        feature_shape: shape of one example, e.g. ``(64,)`` or ``(8, 8, 1)``.
        name: a short name (``"digits"``, ``"hard"``, the file's stem) used in cache keys.
        mean, std: numpy arrays of shape ``feature_shape``, the train statistics used to
            standardize every split (``x = (raw - mean) / std``; per channel, repeated over the
            positions, for images and sequences; 0 and 1 when not standardized).
        classes: the original label of each class index (``classes[k]`` is class ``k``).
        notes: one line for each decision taken while loading (a column dropped, ...).
    """

    train: dict
    val: dict
    test: dict
    num_classes: int
    feature_shape: tuple
    name: str
    mean: np.ndarray
    std: np.ndarray
    classes: tuple = ()
    notes: tuple = ()

    def standardize(self, raw) -> np.ndarray:
        """Raw examples as the splits hold them: ``(raw - mean) / std`` (float32)."""
        return ((np.asarray(raw, np.float64) - self.mean) / self.std).astype(np.float32)

    def raw(self, x) -> np.ndarray:
        """The inverse of :meth:`standardize`: the examples as they were given."""
        return (np.asarray(x, np.float64) * self.std + self.mean).astype(np.float32)


def check_fractions(fractions) -> tuple[float, float, float]:
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(
            f"fractions must be three numbers (train, val, test), got {fractions!r}"
        ) from None
    if len(fr) != 3 or not all(math.isfinite(f) and f > 0 for f in fr):
        raise ValueError(f"fractions must be three positive numbers (train, val, test), got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fr} (sum {sum(fr):.6g})")
    return fr


def _apportion(total: int, quotas: np.ndarray) -> list[int]:
    """Integers summing to ``total`` close to ``quotas`` (largest-remainder rounding)."""
    base = np.floor(quotas).astype(int)
    extra = int(total) - int(base.sum())
    order = np.argsort(-(quotas - base), kind="stable")
    base[order[: max(extra, 0)]] += 1
    return base.tolist()


def stratified_split(y: np.ndarray, fractions, seed: int) -> tuple[np.ndarray, ...]:
    """Indices of train / val / test, split class by class with a fixed seed.

    Written by hand rather than with ``sklearn.model_selection.train_test_split`` because the
    latter refuses classes with fewer than two members; here a small class simply goes to train
    (every class must appear in train; val and test must not be empty).
    """
    rng = np.random.default_rng(seed)
    _, f_val, f_test = fractions
    values, counts = np.unique(y, return_counts=True)
    n_val = _apportion(round(f_val * len(y)), counts * f_val)
    n_test = _apportion(round(f_test * len(y)), counts * f_test)
    parts: tuple[list, list, list] = ([], [], [])
    for c, n, nv, nt in zip(values, counts, n_val, n_test):
        idx = rng.permutation(np.flatnonzero(y == c))
        while n - nv - nt < 1:  # keep at least one example of every class in train
            if nt >= nv and nt > 0:
                nt -= 1
            else:
                nv -= 1
        parts[1].append(idx[:nv])
        parts[2].append(idx[nv : nv + nt])
        parts[0].append(idx[nv + nt :])
    out = tuple(rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts)
    for name, idx, f in zip(("train", "validation", "test"), out, fractions):
        if len(idx) == 0 and f > 0:
            raise DataError(
                f"too few examples ({len(y)}) to split into train/validation/test with "
                f"fractions {tuple(fractions)}: the {name} split would be empty"
            )
    return out


def encode_labels(labels: Sequence, where: str) -> tuple[np.ndarray, tuple]:
    """Map arbitrary labels to ``0 .. C-1`` (sorted order); return codes and the originals."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int32).reshape(-1), tuple(c.item() for c in classes)


def check_finite(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(x[bad]).any() else "inf"
        raise DataError(f"{where}: features contain {kind} (first at example {i})")


def check_logits(logits, n: int, num_classes: int, where: str) -> np.ndarray:
    """``logits`` as float32 ``(n, num_classes)``; :class:`DataError` naming what disagrees."""
    try:
        a = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: teacher logits must be numeric ({e})") from None
    if a.ndim != 2:
        raise DataError(f"{where}: teacher logits must have shape (examples, classes), got "
                        f"{a.shape}")
    if a.shape[0] != n:
        raise DataError(f"{where}: teacher logits have {a.shape[0]} rows but the data has {n} "
                        "examples (one row of logits per example, in the same order)")
    if a.shape[1] != num_classes:
        raise DataError(f"{where}: teacher logits have {a.shape[1]} classes but the data has "
                        f"{num_classes}")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(a[bad]).any() else "inf"
        raise DataError(f"{where}: teacher logits contain {kind} (first at example {i})")
    return a.astype(np.float32)


def _statistics(x_tr: np.ndarray, name: str, standardize: bool):
    """Train mean and spread, shaped like one example (per channel for rank >= 2)."""
    shape = x_tr.shape[1:]
    if not standardize:
        return np.zeros(shape), np.ones(shape)
    axes = tuple(range(x_tr.ndim - 1)) if len(shape) >= 2 else (0,)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        mean = x_tr.mean(axis=axes, keepdims=True)
        std = x_tr.std(axis=axes, keepdims=True)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise DataError(f"{name}: feature values too large to standardize (overflow)")
    std = np.where(std > 0, std, 1.0)  # constant feature: divide by 1 (it becomes all zeros)
    return np.broadcast_to(mean[0], shape), np.broadcast_to(std[0], shape)


def assemble(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: tuple,
    name: str,
    *,
    teacher: dict | None = None,
    standardize: bool = True,
) -> Dataset:
    """Standardize with train statistics and build the Dataset; checks classes (and the
    teacher's logits per split, ``teacher[split]``, when given)."""
    x_tr, y_tr = splits["train"]
    num_classes = len(classes)
    if num_classes < 2:
        raise DataError(
            f"{name}: only one class ({classes[0]!r}) in the data; classification needs at least 2"
        )
    seen = set(np.unique(y_tr).tolist())
    for split in ("val", "test"):
        missing = sorted(set(np.unique(splits[split][1]).tolist()) - seen)
        if missing:
            labels = [classes[k] for k in missing]
            raise DataError(
                f"{name}: labels {labels} appear in the {split} split but not in train"
            )
    if len(seen) < 2:
        raise DataError(f"{name}: the train split holds a single class ({classes[y_tr[0]]!r})")
    mean, std = _statistics(x_tr, name, standardize)

    def pack(split, x, y):
        with np.errstate(over="ignore", invalid="ignore"):
            z = ((x - mean) / std).astype(np.float32)
        if not np.all(np.isfinite(z)):
            raise DataError(f"{name}: feature values too large to standardize (overflow)")
        out = {"x": jnp.asarray(z), "y": jnp.asarray(y, dtype=jnp.int32)}
        if teacher is not None:
            logits = check_logits(teacher[split], len(y), num_classes, f"{name} ({split})")
            out["teacher"] = jnp.asarray(logits)
        return out

    return Dataset(
        train=pack("train", *splits["train"]),
        val=pack("val", *splits["val"]),
        test=pack("test", *splits["test"]),
        num_classes=num_classes,
        feature_shape=tuple(int(d) for d in x_tr.shape[1:]),
        name=name,
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        classes=classes,
    )


def from_arrays(
    x,
    y,
    *,
    name: str = "arrays",
    seed: int = 0,
    fractions=DEFAULT_FRACTIONS,
    classes: tuple | None = None,
    teacher=None,
    standardize: bool = True,
) -> Dataset:
    """Build a Dataset from features ``x`` (N, ...) and labels ``y`` (N,) with a stratified split.

    Labels are mapped to ``0 .. C-1`` unless ``classes`` is given (then ``y`` must already be
    class indices into it). ``teacher``: the teacher's logits ``(N, C)``, one row per example
    of ``x``, split with them.

    Example:
        >>> import numpy as np
        >>> ds = from_arrays(np.random.rand(30, 3), np.arange(30) % 2)
        >>> ds.num_classes, len(ds.train["y"]) + len(ds.val["y"]) + len(ds.test["y"])
        (2, 30)
    """
    fr = check_fractions(fractions)
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: features must be numeric ({e})") from None
    if x.ndim == 0:
        raise DataError(f"{name}: features must have shape (N, features...), got a scalar")
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name}: labels must be one-dimensional, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{name}: x has {len(x)} examples but y has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{name}: no examples")
    check_finite(x, name)
    if classes is None:
        y, classes = encode_labels(y, name)
    if teacher is not None:
        teacher = check_logits(teacher, len(y), len(classes), name)
    tr, va, te = stratified_split(y, fr, seed)
    idx = {"train": tr, "val": va, "test": te}
    splits = {s: (x[i], y[i]) for s, i in idx.items()}
    logits = None if teacher is None else {s: teacher[i] for s, i in idx.items()}
    return assemble(splits, tuple(classes), name, teacher=logits, standardize=standardize)
