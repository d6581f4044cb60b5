"""Datasets for distillation: digits, a harder generated problem, users' ``.npz``/``.csv`` files.

Every loader returns a :class:`Dataset` with train / validation / test splits, features
standardized with statistics of the *train* split only (a feature with zero train spread is
divided by 1), and labels mapped to ``0 .. C-1`` (the original labels are kept in
``Dataset.classes``). Anything wrong with a user's file raises :class:`DataError` (a
``ValueError``) whose message names the problem: the column, the row, the label.

Example:
    >>> from ev3evo.distill import data
    >>> ds = data.load("digits")
    >>> ds.train["x"].shape[1:], ds.num_classes
    ((64,), 10)
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["DataError", "Dataset", "load", "load_digits", "load_file", "make_hard"]

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


class DataError(ValueError):
    """A dataset (file, arrays or splits) that ev3evo cannot use; the message says why."""


class Dataset(NamedTuple):
    """Train / validation / test splits of a classification problem.

    Attributes:
        train, val, test: dicts ``{"x": float32 (N, *feature_shape), "y": int32 (N,)}``.
        num_classes: number of classes ``C``; labels are ``0 .. C-1``.
        feature_shape: shape of one example, e.g. ``(64,)``.
        name: a short name (``"digits"``, ``"hard"``, the file's stem) used in cache keys.
        mean, std: numpy arrays of shape ``feature_shape``, the train statistics used to
            standardize every split (``x = (raw - mean) / std``).
        classes: the original label of each class index (``classes[k]`` is class ``k``).
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


# ----------------------------------------------------------------------------- helpers


def _check_fractions(fractions) -> tuple[float, float, float]:
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


def _stratified_split(y: np.ndarray, fractions, seed: int) -> tuple[np.ndarray, ...]:
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


def _encode_labels(labels: Sequence, where: str) -> tuple[np.ndarray, tuple]:
    """Map arbitrary labels to ``0 .. C-1`` (sorted order); return codes and the originals."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int32).reshape(-1), tuple(c.item() for c in classes)


def _check_finite(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(x[bad]).any() else "inf"
        raise DataError(f"{where}: features contain {kind} (first at example {i})")


def _assemble(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: tuple,
    name: str,
) -> Dataset:
    """Standardize with train statistics and build the Dataset; checks classes."""
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
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        mean = x_tr.mean(axis=0)
        std = x_tr.std(axis=0)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise DataError(f"{name}: feature values too large to standardize (overflow)")
    std = np.where(std > 0, std, 1.0)  # constant feature: divide by 1 (it becomes all zeros)

    def pack(x, y):
        with np.errstate(over="ignore", invalid="ignore"):
            z = ((x - mean) / std).astype(np.float32)
        if not np.all(np.isfinite(z)):
            raise DataError(f"{name}: feature values too large to standardize (overflow)")
        return {"x": jnp.asarray(z), "y": jnp.asarray(y, dtype=jnp.int32)}

    return Dataset(
        train=pack(*splits["train"]),
        val=pack(*splits["val"]),
        test=pack(*splits["test"]),
        num_classes=num_classes,
        feature_shape=tuple(int(d) for d in x_tr.shape[1:]),
        name=name,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
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
) -> Dataset:
    """Build a Dataset from features ``x`` (N, ...) and labels ``y`` (N,) with a stratified split.

    Labels are mapped to ``0 .. C-1`` unless ``classes`` is given (then ``y`` must already be
    class indices into it).

    Example:
        >>> import numpy as np
        >>> ds = from_arrays(np.random.rand(30, 3), np.arange(30) % 2)
        >>> ds.num_classes, len(ds.train["y"]) + len(ds.val["y"]) + len(ds.test["y"])
        (2, 30)
    """
    fr = _check_fractions(fractions)
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
    _check_finite(x, name)
    if classes is None:
        y, classes = _encode_labels(y, name)
    tr, va, te = _stratified_split(y, fr, seed)
    splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
    return _assemble(splits, tuple(classes), name)


# ----------------------------------------------------------------------------- built-in data


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


# ----------------------------------------------------------------------------- files


def _load_npz(path: str, name: str, seed: int, fractions) -> Dataset:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":  # np.load would try to unpickle anything that is not a zip
        raise DataError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays (need pickle) or a corrupt member
        raise DataError(f"{path}: cannot read the .npz file ({e})") from None
    except Exception as e:  # not a zip archive, truncated, ...
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if not arrays:
        raise DataError(f"{path}: the .npz file holds no arrays")
    split_keys = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    has_splits = any(k in arrays for k in split_keys)
    if has_splits:
        required = ("x_train", "y_train", "x_test", "y_test")
        missing = [k for k in required if k not in arrays]
        if ("x_val" in arrays) != ("y_val" in arrays):
            missing.append("y_val" if "x_val" in arrays else "x_val")
        if missing:
            raise DataError(
                f"{path}: predefined splits need arrays {', '.join(required)} (and optionally "
                f"x_val, y_val); missing {', '.join(missing)}; found {', '.join(sorted(arrays))}"
            )
    elif "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"{path}: expected arrays 'x' and 'y' (or x_train, y_train, x_val, y_val, x_test, "
            f"y_test); found {', '.join(sorted(arrays)) or 'none'}"
        )

    def features(key):
        a = arrays[key]
        if a.dtype.kind not in "biuf":
            raise DataError(f"{path}: array '{key}' must be numeric, got dtype {a.dtype}")
        if a.ndim == 0:
            raise DataError(f"{path}: array '{key}' must have shape (N, features...), got ()")
        a = a.astype(np.float64)
        return a[:, None] if a.ndim == 1 else a

    def labels(key):
        a = arrays[key]
        if a.ndim != 1:
            raise DataError(f"{path}: labels '{key}' must be one-dimensional, got {a.shape}")
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                raise DataError(f"{path}: labels '{key}' must be integers (or strings)")
            a = a.astype(np.int64)
        if a.dtype.kind in "iu" and a.size and a.min() < 0:
            raise DataError(
                f"{path}: labels '{key}' out of range: {int(a.min())} is negative "
                "(labels must be non-negative integers or strings)"
            )
        if a.dtype.kind not in "biuUS":
            raise DataError(f"{path}: labels '{key}' have unsupported dtype {a.dtype}")
        return a

    if not has_splits:
        x, y = features("x"), labels("y")
        return from_arrays(x, y, name=name, seed=seed, fractions=fractions)

    fr = _check_fractions(fractions)
    parts = {s: (features(f"x_{s}"), labels(f"y_{s}")) for s in ("train", "val", "test")
             if f"x_{s}" in arrays}
    for s, (x, y) in parts.items():
        if len(x) != len(y):
            raise DataError(f"{path}: x_{s} has {len(x)} examples but y_{s} has {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{path}: the {s} split (x_{s}) is empty")
        _check_finite(x, f"{path} (x_{s})")
    shapes = {s: x.shape[1:] for s, (x, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: splits have different feature shapes {shapes}")
    kinds = {y.dtype.kind in "US" for _, y in parts.values()}
    if len(kinds) > 1:
        raise DataError(f"{path}: some splits have string labels and others numeric labels")
    train_labels = set(np.unique(parts["train"][1]).tolist())
    for s in ("val", "test"):
        if s in parts:
            unseen = sorted(set(np.unique(parts[s][1]).tolist()) - train_labels)
            if unseen:
                raise DataError(
                    f"{path}: labels {unseen[:10]} in y_{s} never appear in y_train"
                )
    _, classes = _encode_labels(np.concatenate([y for _, y in parts.values()]), name)
    lookup = {c: i for i, c in enumerate(classes)}
    enc = {s: np.asarray([lookup[v.item()] for v in y], np.int32) for s, (_, y) in parts.items()}
    if "val" not in parts:  # carve a validation split out of the given train split
        x_tr, y_tr = parts["train"][0], enc["train"]
        f_val = fr[1] / (fr[0] + fr[1])
        tr, va, _ = _stratified_split(y_tr, (1 - f_val, f_val, 0.0), seed)
        if len(va) == 0:
            raise DataError(f"{path}: too few training examples ({len(y_tr)}) to carve a "
                            "validation split; provide x_val and y_val")
        parts["train"], parts["val"] = (x_tr[tr], y_tr[tr]), (x_tr[va], y_tr[va])
        enc["train"], enc["val"] = y_tr[tr], y_tr[va]
    splits = {s: (parts[s][0], enc[s]) for s in ("train", "val", "test")}
    return _assemble(splits, classes, name)


def _read_csv_rows(path: str) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected a .csv with a header row")\
            from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]  # skip blank lines
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        raise DataError(f"{path}: the CSV has a header but no data rows")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dup}")
    return header, rows[1:]


def _parse_label(values: list[str], column: str, path: str) -> tuple[np.ndarray, tuple]:
    numbers = []
    for v in values:
        try:
            numbers.append(float(v))
        except ValueError:
            numbers = None
            break
    if numbers is None:  # string labels: classes in sorted string order
        return _encode_labels(values, path)
    num = np.asarray(numbers)
    if not np.all(np.isfinite(num)) or np.any(num != np.round(num)):
        i = int(np.flatnonzero(~np.isfinite(num) | (num != np.round(num)))[0])
        raise DataError(
            f"{path}: label column '{column}' holds a non-integer number {values[i]!r} at data "
            f"row {i + 1} (line {i + 2}); labels must be integers or strings (classification)"
        )
    return _encode_labels(num.astype(np.int64), path)


def _load_csv(path: str, label: str | None, name: str, seed: int, fractions) -> Dataset:
    header, rows = _read_csv_rows(path)
    if label is None:
        col = header.index("label") if "label" in header else len(header) - 1
    elif label in header:
        col = header.index(label)
    else:
        raise DataError(
            f"{path}: no label column '{label}'; columns are {', '.join(map(repr, header))}"
        )
    if len(header) < 2:
        raise DataError(
            f"{path}: need at least one feature column besides the label column; columns are "
            f"{', '.join(map(repr, header))} (is the delimiter a comma?)"
        )
    n_cols = len(header)
    for i, r in enumerate(rows):
        if len(r) != n_cols:
            raise DataError(
                f"{path}: data row {i + 1} (line {i + 2}) has {len(r)} fields, the header has "
                f"{n_cols}"
            )
    feature_cols = [j for j in range(n_cols) if j != col]
    x = np.empty((len(rows), len(feature_cols)), dtype=np.float64)
    for i, r in enumerate(rows):
        for k, j in enumerate(feature_cols):
            cell = r[j].strip()
            try:
                x[i, k] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: non-numeric value {cell!r} in column '{header[j]}' at data row "
                    f"{i + 1} (line {i + 2})"
                ) from None
            if not math.isfinite(x[i, k]):
                raise DataError(
                    f"{path}: {cell!r} (not finite) in column '{header[j]}' at data row {i + 1} "
                    f"(line {i + 2}); remove or impute missing values"
                )
    labels = [r[col].strip() for r in rows]
    if any(v == "" for v in labels):
        i = labels.index("")
        raise DataError(
            f"{path}: empty label in column '{header[col]}' at data row {i + 1} (line {i + 2})"
        )
    y, classes = _parse_label(labels, header[col], path)
    return from_arrays(x, y, name=name, seed=seed, fractions=fractions, classes=classes)


def load_file(
    path: str | os.PathLike,
    label: str | None = None,
    seed: int = 0,
    fractions=DEFAULT_FRACTIONS,
) -> Dataset:
    """Load a user's ``.npz`` or ``.csv`` file into a standardized, split Dataset.

    ``.npz``: arrays ``x`` (N, features...) and ``y`` (N,), split with ``fractions`` and
    ``seed``; or predefined splits ``x_train, y_train, x_test, y_test`` and optionally
    ``x_val, y_val`` (without them, a validation split is carved out of train). Labels: any
    non-negative integers or strings.

    ``.csv``: a header row, then one example per row. The label column is ``label`` when given,
    else the column named ``"label"`` if there is one, else the **last** column. Every other
    column must be numeric. Labels may be integers or strings; they are mapped to ``0 .. C-1``
    in sorted order (see ``Dataset.classes``).

    Raises:
        DataError: missing/empty/unreadable file, unsupported extension, missing label column,
            non-numeric or non-finite feature values, a single class, bad labels, mismatched
            lengths, or too few examples for the splits.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "toy.npz")
        >>> np.savez(p, x=np.random.rand(40, 3), y=np.arange(40) % 2)
        >>> load_file(p).num_classes
        2
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a .npz or .csv file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the file is empty")
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower()
    if ext == ".npz":
        return _load_npz(path, stem, seed, fractions)
    if ext == ".csv":
        return _load_csv(path, label, stem, seed, fractions)
    raise DataError(f"{path}: unsupported format '{ext or '(none)'}'; use a .npz or .csv file")


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
