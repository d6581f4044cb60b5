"""Users' data files: ``.npz`` arrays and ``.csv`` tables, loaded into a split Dataset.

``.npz``: arrays ``x`` (N, features...) and ``y`` (N,), split with ``fractions`` and ``seed``;
or predefined splits ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``. The
shape of an example is kept (images ``(N, H, W, C)``, sequences ``(N, L, C)``). A teacher's
logits computed beforehand go beside them: ``teacher_logits`` (N, C), or
``teacher_logits_train``, ``teacher_logits_val``, ``teacher_logits_test`` with predefined
splits.
``.csv``: a header row, then one example per row, numeric features and one label column; a
first column that is a row index (unnamed, as pandas writes its index, or holding the row
numbers 0, 1, 2, ... or 1, 2, 3, ...) is dropped, and the dataset's ``notes`` say so.
Nothing is unpickled. Every problem raises :class:`~ev3evo.distillation.splits.DataError`
naming the file and what is wrong with it (the column, the row, the label).

Example::

    import os, tempfile
    from ev3evo.distillation.files import load_file
    path = os.path.join(tempfile.mkdtemp(), "toy.csv")
    with open(path, "w") as f:  # as pandas saves a DataFrame: its index, unnamed, comes first
        f.write(",a,b,label\\n" + "".join(f"{i},{i % 5},{i % 3},{i % 2}\\n" for i in range(30)))
    dataset = load_file(path)
    assert dataset.num_classes == 2 and dataset.feature_shape == (2,)
    assert "dropped the first column (unnamed)" in dataset.notes[0]
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from .splits import (
    DEFAULT_FRACTIONS,
    DataError,
    Dataset,
    assemble,
    check_finite,
    check_fractions,
    check_logits,
    encode_labels,
    from_arrays,
    stratified_split,
)

__all__ = ["load_arrays", "load_file"]


def _read_npz(path: str) -> dict[str, np.ndarray]:
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
    return arrays


def _has_splits(path: str, arrays: dict) -> bool:
    """Whether the arrays are predefined splits (checked complete) or one ``x``, ``y`` pair."""
    split_keys = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    if any(k in arrays for k in split_keys):
        required = ("x_train", "y_train", "x_test", "y_test")
        missing = [k for k in required if k not in arrays]
        if ("x_val" in arrays) != ("y_val" in arrays):
            missing.append("y_val" if "x_val" in arrays else "x_val")
        if missing:
            raise DataError(
                f"{path}: predefined splits need arrays {', '.join(required)} (and optionally "
                f"x_val, y_val); missing {', '.join(missing)}; found {', '.join(sorted(arrays))}"
            )
        return True
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"{path}: expected arrays 'x' and 'y' (or x_train, y_train, x_val, y_val, x_test, "
            f"y_test); found {', '.join(sorted(arrays)) or 'none'}"
        )
    return False


def _npz_features(path: str, arrays: dict, key: str) -> np.ndarray:
    a = arrays[key]
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: array '{key}' must be numeric, got dtype {a.dtype}")
    if a.ndim == 0:
        raise DataError(f"{path}: array '{key}' must have shape (N, features...), got ()")
    a = a.astype(np.float64)
    return a[:, None] if a.ndim == 1 else a


def _npz_labels(path: str, arrays: dict, key: str) -> np.ndarray:
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


def _check_parts(path: str, parts: dict) -> None:
    """Predefined splits: lengths, finiteness, feature shapes and labels agree."""
    for s, (x, y) in parts.items():
        if len(x) != len(y):
            raise DataError(f"{path}: x_{s} has {len(x)} examples but y_{s} has {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{path}: the {s} split (x_{s}) is empty")
        check_finite(x, f"{path} (x_{s})")
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


def _split_logits(path: str, arrays: dict, parts: dict) -> dict | None:
    """The predefined splits' ``teacher_logits_<split>`` (all of them or none)."""
    keys = {s: f"teacher_logits_{s}" for s in parts}
    given = [k for k in keys.values() if k in arrays]
    if not given:
        if "teacher_logits" in arrays:
            raise DataError(f"{path}: with predefined splits, give the teacher's logits per "
                            "split: teacher_logits_train, teacher_logits_test (and _val)")
        return None
    missing = [k for k in keys.values() if k not in arrays]
    if missing:
        raise DataError(f"{path}: teacher logits are given for some splits only; missing "
                        f"{', '.join(missing)}")
    return {s: arrays[k] for s, k in keys.items()}


def _predefined_splits(path: str, arrays: dict, name: str, seed: int, fractions,
                       standardize: bool) -> Dataset:
    fr = check_fractions(fractions)
    parts = {s: (_npz_features(path, arrays, f"x_{s}"), _npz_labels(path, arrays, f"y_{s}"))
             for s in ("train", "val", "test") if f"x_{s}" in arrays}
    _check_parts(path, parts)
    logits = _split_logits(path, arrays, parts)
    _, classes = encode_labels(np.concatenate([y for _, y in parts.values()]), name)
    lookup = {c: i for i, c in enumerate(classes)}
    enc = {s: np.asarray([lookup[v.item()] for v in y], np.int32) for s, (_, y) in parts.items()}
    if "val" not in parts:  # carve a validation split out of the given train split
        x_tr, y_tr = parts["train"][0], enc["train"]
        f_val = fr[1] / (fr[0] + fr[1])
        tr, va, _ = stratified_split(y_tr, (1 - f_val, f_val, 0.0), seed)
        if len(va) == 0:
            raise DataError(f"{path}: too few training examples ({len(y_tr)}) to carve a "
                            "validation split; provide x_val and y_val")
        parts["train"], parts["val"] = (x_tr[tr], y_tr[tr]), (x_tr[va], y_tr[va])
        enc["train"], enc["val"] = y_tr[tr], y_tr[va]
        if logits is not None:
            t = check_logits(logits["train"], len(y_tr), len(classes), f"{path} (train)")
            logits["train"], logits["val"] = t[tr], t[va]
    splits = {s: (parts[s][0], enc[s]) for s in ("train", "val", "test")}
    return assemble(splits, classes, name, teacher=logits, standardize=standardize)


def _with_teacher(path: str, arrays: dict, teacher) -> dict:
    """The arrays with teacher logits given apart (an array, or one per split) added."""
    if teacher is None:
        return arrays
    if any(k.startswith("teacher_logits") for k in arrays):
        raise DataError(f"{path}: the teacher's logits are in the file and given again")
    if isinstance(teacher, dict):
        return {**arrays, **{f"teacher_logits_{s}": v for s, v in teacher.items()}}
    return {**arrays, "teacher_logits": teacher}


def load_arrays(arrays: dict, name: str, seed: int = 0, fractions=DEFAULT_FRACTIONS,
                standardize: bool = True, teacher=None) -> Dataset:
    """A Dataset from the arrays a ``.npz`` would hold (``x``, ``y`` or the predefined splits,
    and the teacher's logits), checked as a file's are; ``name`` names them in messages."""
    arrays = _with_teacher(name, dict(arrays), teacher)
    if _has_splits(name, arrays):
        return _predefined_splits(name, arrays, name, seed, fractions, standardize)
    x, y = _npz_features(name, arrays, "x"), _npz_labels(name, arrays, "y")
    return from_arrays(x, y, name=name, seed=seed, fractions=fractions,
                       teacher=arrays.get("teacher_logits"), standardize=standardize)


def _load_npz(path: str, name: str, seed: int, fractions, standardize: bool,
              teacher=None) -> Dataset:
    dataset = load_arrays(_read_npz(path), path, seed, fractions, standardize, teacher)
    return dataset._replace(name=name)


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
        return encode_labels(values, path)
    num = np.asarray(numbers)
    if not np.all(np.isfinite(num)) or np.any(num != np.round(num)):
        i = int(np.flatnonzero(~np.isfinite(num) | (num != np.round(num)))[0])
        raise DataError(
            f"{path}: label column '{column}' holds a non-integer number {values[i]!r} at data "
            f"row {i + 1} (line {i + 2}); labels must be integers or strings (classification)"
        )
    return encode_labels(num.astype(np.int64), path)


#: cells read as a missing value (compared in lower case)
MISSING = ("", "na", "n/a", "nan", "null", "none")


def _is_row_number(cells: list[str]) -> bool:
    """Whether ``cells`` are the row numbers ``0, 1, 2, ...`` or ``1, 2, 3, ...``."""
    try:
        values = [float(c) for c in cells]
    except ValueError:
        return False
    return len(values) > 1 and values in (list(range(len(values))),
                                          list(range(1, len(values) + 1)))


def _index_column(path: str, header: list[str], rows: list[list[str]],
                  label: str | None) -> str | None:
    """The note for dropping the first column when it is a row index, else ``None``.

    Index-like: unnamed (pandas writes its index with an empty name, read back as
    ``Unnamed: 0``) or holding the row numbers; never the label column.
    """
    first = header[0]
    if len(header) < 3 or first == label or (label is None and first == "label"):
        return None
    if first == "" or first.startswith("Unnamed: "):
        why = "it is unnamed (a saved row index, as pandas writes one)"
    elif _is_row_number([r[0].strip() for r in rows if r]):
        why = "it holds the row numbers"
    else:
        return None
    name = repr(first) if first else "(unnamed)"
    return f"{path}: dropped the first column {name}: {why}, not a feature"


def _feature(path: str, cell: str, column: str, i: int) -> float:
    """One feature cell as a number; a :class:`DataError` naming the column and the row."""
    where = f"in column '{column}' at data row {i + 1} (line {i + 2})"
    if cell.lower() in MISSING:
        shown = "an empty cell" if cell == "" else repr(cell)
        raise DataError(f"{path}: missing value ({shown}) {where}; remove or impute missing "
                        "values")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: non-numeric value {cell!r} {where}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: {cell!r} (not finite) {where}; features must be finite")
    return value


def _load_csv(path: str, label: str | None, name: str, seed: int, fractions,
              standardize: bool, teacher=None) -> Dataset:
    header, rows = _read_csv_rows(path)
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise DataError(
                f"{path}: data row {i + 1} (line {i + 2}) has {len(r)} fields, the header has "
                f"{len(header)}"
            )
    note = _index_column(path, header, rows, label)
    if note is not None:
        header, rows = header[1:], [r[1:] for r in rows]
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
    feature_cols = [j for j in range(len(header)) if j != col]
    x = np.empty((len(rows), len(feature_cols)), dtype=np.float64)
    for i, r in enumerate(rows):
        for k, j in enumerate(feature_cols):
            x[i, k] = _feature(path, r[j].strip(), header[j], i)
    labels = [r[col].strip() for r in rows]
    if any(v == "" for v in labels):
        i = labels.index("")
        raise DataError(
            f"{path}: missing label (an empty cell) in column '{header[col]}' at data row "
            f"{i + 1} (line {i + 2})"
        )
    y, classes = _parse_label(labels, header[col], path)
    dataset = from_arrays(x, y, name=name, seed=seed, fractions=fractions, classes=classes,
                          teacher=teacher, standardize=standardize)
    return dataset._replace(notes=(note,) if note is not None else ())


def load_file(
    path: str | os.PathLike,
    label: str | None = None,
    seed: int = 0,
    fractions=DEFAULT_FRACTIONS,
    standardize: bool = True,
    teacher=None,
) -> Dataset:
    """Load a user's ``.npz`` or ``.csv`` file into a standardized, split Dataset.

    ``.npz``: arrays ``x`` (N, features...) and ``y`` (N,), split with ``fractions`` and
    ``seed``; or predefined splits ``x_train, y_train, x_test, y_test`` and optionally
    ``x_val, y_val`` (without them, a validation split is carved out of train). Labels: any
    non-negative integers or strings. The teacher's logits, when the file has them
    (``teacher_logits``, or ``teacher_logits_<split>`` with predefined splits), land in each
    split's ``"teacher"``; ``teacher`` gives them apart from the file (an array aligned with
    its examples, or ``{split: array}`` with predefined splits).

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
        return _load_npz(path, stem, seed, fractions, standardize, teacher)
    if ext == ".csv":
        if isinstance(teacher, dict):
            raise DataError(f"{path}: a .csv has no predefined splits: give the teacher's "
                            "logits as one array aligned with its rows")
        return _load_csv(path, label, stem, seed, fractions, standardize, teacher)
    raise DataError(f"{path}: unsupported format '{ext or '(none)'}'; use a .npz or .csv file")
