"""Datasets for distillation: digits, a harder generated problem, users' ``.npz``/``.csv`` files.

Every loader returns a :class:`Dataset` with train / validation / test splits, features
standardized with statistics of the *train* split only, and labels mapped to ``0 .. C-1``
(see :mod:`ev3evo.distillation.splits`; users' files: :mod:`ev3evo.distillation.files`).
Anything wrong with the data raises :class:`DataError` (a ``ValueError``) whose message names
the problem.

Example:
    >>> from ev3evo.distillation import data
    >>> ds = data.load("digits")
    >>> ds.train["x"].shape[1:], ds.num_classes
    ((64,), 10)
"""

from __future__ import annotations

import os

from .files import load_file
from .splits import DEFAULT_FRACTIONS, DataError, Dataset, from_arrays

__all__ = ["DEFAULT_FRACTIONS", "DataError", "Dataset", "from_arrays", "load", "load_digits",
           "load_file", "make_hard"]


def load_digits(seed: int = 0, fractions=DEFAULT_FRACTIONS) -> Dataset:
    """scikit-learn's 8x8 digits (1797 examples, 64 features, 10 classes; no download).

    Split stratified 60/20/20 by default with ``seed``; standardized with train statistics.

    Example:
        >>> ds = load_digits()
        >>> len(ds.test["y"]), ds.num_classes
        (359, 10)
    """
    from sklearn import datasets

    x, y = datasets.load_digits(return_X_y=True)
    return from_arrays(x, y, name="digits", seed=seed, fractions=fractions)


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
    return from_arrays(x, y, name="hard", seed=seed, fractions=fractions)


def _hard_size(spec: str) -> int:
    """``N`` of a ``"hard:N"`` data spec, with a clear error for anything else."""
    text = spec.partition(":")[2].strip()
    try:
        n = int(text)
    except ValueError:
        raise DataError(f"cannot read {spec!r}: write hard:N with N a whole number of examples, "
                        f"e.g. hard:20000") from None
    if n < 100:
        raise DataError(f"{spec!r}: the generated problem needs at least 100 examples, got {n}")
    return n


def load(spec: str | os.PathLike | None = None, label: str | None = None, seed: int = 0,
         fractions=DEFAULT_FRACTIONS) -> Dataset:
    """``None`` or ``"digits"``: digits; ``"hard"`` or ``"hard:N"``: :func:`make_hard` (with
    ``N`` examples; 3000 by default); otherwise a file path.

    Example:
        >>> load("hard").name
        'hard'
        >>> len(load("hard:600").test["y"])
        120
    """
    if spec is None or spec == "digits":
        return load_digits(seed=seed, fractions=fractions)
    if spec == "hard":
        return make_hard(seed=seed, fractions=fractions)
    if isinstance(spec, str) and spec.startswith("hard:"):
        return make_hard(seed=seed, n_samples=_hard_size(spec), fractions=fractions)
    return load_file(spec, label=label, seed=seed, fractions=fractions)
