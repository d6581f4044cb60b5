"""Datasets for distillation: digits, a harder problem, mnist1d, users' arrays and files.

Every loader returns a :class:`Dataset` with train / validation / test splits, features
standardized with statistics of the *train* split only (per feature, or per channel for
images and sequences), and labels mapped to ``0 .. C-1`` (see
:mod:`ev3evo.distillation.splits`; users' files: :mod:`ev3evo.distillation.files`). The shape
of an example is kept: ``digits:images`` are ``(8, 8, 1)`` images, ``mnist1d`` examples
``(40, 1)`` sequences. :func:`from_user` takes whatever the Python front door was given
(arrays, a dict of splits, a name or a path). Anything wrong with the data raises
:class:`DataError` (a ``ValueError``) whose message names the problem.

Example:
    >>> from ev3evo.distillation import data
    >>> ds = data.load("digits")
    >>> ds.train["x"].shape[1:], ds.num_classes
    ((64,), 10)
    >>> data.load("digits:images").feature_shape
    (8, 8, 1)
"""

from __future__ import annotations

import os
import random

import numpy as np

from .files import load_arrays, load_file
from .splits import DEFAULT_FRACTIONS, DataError, Dataset, from_arrays

__all__ = ["DEFAULT_FRACTIONS", "IMBALANCED_WEIGHTS", "MNIST1D_SIZE", "DataError", "Dataset", "from_arrays",
           "from_user", "load", "load_digits", "load_file", "load_mnist1d", "make_hard",
           "make_imbalanced"]

#: examples ``mnist1d`` generates by default: 2000 in each of validation and test
MNIST1D_SIZE = 10_000


def load_digits(seed: int = 0, fractions=DEFAULT_FRACTIONS, *, images: bool = False,
                standardize: bool = True, teacher=None) -> Dataset:
    """scikit-learn's 8x8 digits (1797 examples, 64 features, 10 classes; no download).

    Split stratified 60/20/20 by default with ``seed``; standardized with train statistics.
    ``images=True`` keeps each example an ``(8, 8, 1)`` image (standardized per channel).

    Example:
        >>> ds = load_digits()
        >>> len(ds.test["y"]), ds.num_classes
        (359, 10)
    """
    from sklearn import datasets

    x, y = datasets.load_digits(return_X_y=True)
    if images:
        x = x.reshape(-1, 8, 8, 1)
    return from_arrays(x, y, name="digits:images" if images else "digits", seed=seed,
                       fractions=fractions, standardize=standardize, teacher=teacher)


def load_mnist1d(seed: int = 0, n_samples: int = MNIST1D_SIZE, fractions=DEFAULT_FRACTIONS,
                 *, standardize: bool = True, teacher=None) -> Dataset:
    """mnist1d (Greydanus 2020): 1-D digit templates, shifted, scaled, sheared and noised.

    Generated offline by the ``mnist1d`` package's procedural ``make_dataset`` with its
    published settings (length 40, seed 42; never its ``get_dataset``, which downloads first),
    ``n_samples`` examples (rounded down to a multiple of the 10 classes), each a ``(40, 1)``
    sequence, then split stratified with ``seed`` like every dataset here. ``make_dataset``
    seeds Python's and numpy's global random generators; their states are restored after it,
    so the caller's random streams are left as they were.

    Example:
        >>> ds = load_mnist1d(n_samples=500)
        >>> ds.feature_shape, ds.num_classes, len(ds.val["y"])
        ((40, 1), 10, 100)
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("mnist1d needs the mnist1d package (pip install mnist1d)") from None
    if n_samples < 100:
        raise DataError(f"mnist1d needs at least 100 examples, got {n_samples}")
    args = get_dataset_args()
    args.num_samples = int(n_samples)
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        generated = make_dataset(args)
    finally:  # make_dataset seeds the global generators: give the caller's back
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
    x = np.concatenate([generated["x"], generated["x_test"]])[..., None]
    y = np.concatenate([generated["y"], generated["y_test"]])
    return from_arrays(x, y, name="mnist1d", seed=seed, fractions=fractions,
                       standardize=standardize, teacher=teacher)


def make_hard(
    seed: int = 0,
    n_samples: int = 3000,
    *,
    n_features: int = 30,
    n_informative: int = 10,
    n_classes: int = 10,
    n_clusters_per_class: int = 2,
    class_sep: float = 2.0,
    flip_y: float = 0.02,
    fractions=DEFAULT_FRACTIONS,
    standardize: bool = True,
    teacher=None,
) -> Dataset:
    """A harder generated problem where a small student leaves a clear gap to a large teacher.

    ``sklearn.datasets.make_classification``: every class is a union of
    ``n_clusters_per_class`` Gaussian clusters on the vertices of a hypercube in
    ``n_informative`` dimensions, plus redundant (linear combinations) and noise features, and a
    fraction ``flip_y`` of random labels. Many clusters per class need many hidden units to
    separate, which is what makes a capacity-limited student fall short. The same ``seed``
    generates and splits the data.

    Example:
        >>> ds = make_hard(n_samples=300)
        >>> ds.feature_shape, ds.num_classes
        ((30,), 10)
    """
    from sklearn import datasets

    x, y = datasets.make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=min(4, n_features - n_informative),
        n_classes=n_classes,
        n_clusters_per_class=n_clusters_per_class,
        class_sep=class_sep,
        flip_y=flip_y,
        random_state=seed,
    )
    return from_arrays(x, y, name="hard", seed=seed, fractions=fractions,
                       standardize=standardize, teacher=teacher)


#: the class shares of :func:`make_imbalanced`: one common class, two rare ones
IMBALANCED_WEIGHTS = (0.55, 0.25, 0.12, 0.05, 0.03)


def make_imbalanced(seed: int = 0, n_samples: int = 6000, *, weights=IMBALANCED_WEIGHTS,
                    n_features: int = 20, n_informative: int = 8, class_sep: float = 1.0,
                    fractions=DEFAULT_FRACTIONS, standardize: bool = True,
                    teacher=None) -> Dataset:
    """A generated problem with unequal classes, where accuracy and macro-F1 disagree.

    ``sklearn.datasets.make_classification`` with class shares ``weights`` (by default one
    class holds 55 % of the examples and the rarest 3 %), two clusters per class and 2 %
    random labels. A model tuned for accuracy neglects the rare classes; macro-F1 (the mean
    of the per-class F1 scores) weighs every class alike, which a distillation loss does not
    optimize directly. The same ``seed`` generates and splits the data.

    Example:
        >>> ds = make_imbalanced(n_samples=600)
        >>> ds.feature_shape, ds.num_classes
        ((20,), 5)
    """
    from sklearn import datasets

    x, y = datasets.make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=n_informative,
        n_redundant=min(4, n_features - n_informative), n_classes=len(weights),
        n_clusters_per_class=2, weights=list(weights), class_sep=class_sep, flip_y=0.02,
        random_state=seed,
    )
    return from_arrays(x, y, name="imbalanced", seed=seed, fractions=fractions,
                       standardize=standardize, teacher=teacher)


def _size(spec: str, least: int) -> int:
    """``N`` of a ``"name:N"`` data spec, with a clear error for anything else."""
    name, _, text = spec.partition(":")
    try:
        n = int(text.strip())
    except ValueError:
        raise DataError(f"cannot read {spec!r}: write {name}:N with N a whole number of "
                        f"examples, e.g. {name}:20000") from None
    if n < least:
        raise DataError(f"{spec!r}: the generated problem needs at least {least} examples, "
                        f"got {n}")
    return n


def load(spec: str | os.PathLike | None = None, label: str | None = None, seed: int = 0,
         fractions=DEFAULT_FRACTIONS, *, standardize: bool = True, teacher=None) -> Dataset:
    """``None`` or ``"digits"``: digits (``"digits:images"``: as 8×8×1 images); ``"hard"`` or
    ``"hard:N"``: :func:`make_hard` (``N`` examples; 3000 by default); ``"mnist1d"`` or
    ``"mnist1d:N"``: :func:`load_mnist1d` (``N`` examples; :data:`MNIST1D_SIZE` by default);
    ``"imbalanced"`` or ``"imbalanced:N"``: :func:`make_imbalanced` (``N`` examples; 6000 by
    default); otherwise a file path. ``teacher``: the teacher's logits, aligned with the examples.

    Example:
        >>> load("hard").name
        'hard'
        >>> len(load("hard:600").test["y"])
        120
    """
    common = {"seed": seed, "fractions": fractions, "standardize": standardize,
              "teacher": teacher}
    if spec is None or spec in ("digits", "digits:images"):
        return load_digits(images=spec == "digits:images", **common)
    if spec == "hard":
        return make_hard(**common)
    if isinstance(spec, str) and spec.startswith("hard:"):
        return make_hard(n_samples=_size(spec, 100), **common)
    if spec == "imbalanced":
        return make_imbalanced(**common)
    if isinstance(spec, str) and spec.startswith("imbalanced:"):
        return make_imbalanced(n_samples=_size(spec, 200), **common)
    if spec == "mnist1d":
        return load_mnist1d(**common)
    if isinstance(spec, str) and spec.startswith("mnist1d:"):
        return load_mnist1d(n_samples=_size(spec, 100), **common)
    return load_file(spec, label=label, **common)


def from_user(data, label: str | None = None, seed: int = 0, *, standardize: bool = True,
              teacher=None) -> Dataset:
    """The Dataset of what the Python front door was given as ``data``.

    Args:
      data: ``None``, a dataset name or a path (:func:`load`); arrays ``(x, y)``; a dict
        ``{"x": ..., "y": ...}``; a dict of splits ``{"train": (x, y), "val": (x, y),
        "test": (x, y)}`` (``"val"`` optional; each split ``(x, y)`` or ``{"x", "y"}``); or a
        :class:`Dataset`.
      teacher: the teacher's logits, aligned with the examples (one array, or one per split
        for a dict of splits).

    Example:
        >>> import numpy as np
        >>> x, y = np.random.rand(60, 4, 4, 1), np.arange(60) % 3
        >>> from_user((x, y)).feature_shape
        (4, 4, 1)
        >>> from_user({"train": (x[:40], y[:40]), "test": (x[40:], y[40:])}).num_classes
        3
    """
    common = {"seed": seed, "standardize": standardize, "teacher": teacher}
    if data is None or isinstance(data, (str, os.PathLike)):
        return load(data, label=label, **common)
    if isinstance(data, Dataset):
        if teacher is not None:
            raise DataError("give the teacher's logits inside the Dataset's splits "
                            "(\"teacher\"), not beside it")
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return load_arrays({"x": data[0], "y": data[1]}, "arrays", **common)
    if isinstance(data, dict) and {"x", "y"} <= set(data):
        return load_arrays({"x": data["x"], "y": data["y"]}, "arrays", **common)
    if isinstance(data, dict) and {"train", "test"} <= set(data):
        arrays = {}
        for split, part in data.items():
            x, y = (part["x"], part["y"]) if isinstance(part, dict) else part
            arrays[f"x_{split}"], arrays[f"y_{split}"] = np.asarray(x), np.asarray(y)
        return load_arrays(arrays, "arrays", **common)
    raise DataError(
        "data must be a dataset name or a path, arrays (x, y), {'x': ..., 'y': ...}, or splits "
        f"{{'train': (x, y), 'val': (x, y), 'test': (x, y)}}; got {type(data).__name__}")
