"""Data loaders of the distillation application: built-in data, real .npz/.csv files, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ev3evo.distillation import data
from ev3evo.distillation.data import DataError, Dataset


def _check_valid(ds: Dataset, n_total: int | None = None) -> None:
    assert isinstance(ds, Dataset)
    assert ds.num_classes >= 2 and len(ds.classes) == ds.num_classes
    seen = set(np.asarray(ds.train["y"]).tolist())
    assert seen == set(range(ds.num_classes))  # every class appears in train
    count = 0
    for split in (ds.train, ds.val, ds.test):
        x, y = np.asarray(split["x"]), np.asarray(split["y"])
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == ds.feature_shape and len(x) == len(y) > 0
        assert np.all(np.isfinite(x))
        assert y.min() >= 0 and y.max() < ds.num_classes
        assert set(y.tolist()) <= seen  # nothing in val/test that train never saw
        count += len(y)
    if n_total is not None:
        assert count == n_total
    assert ds.mean.shape == ds.feature_shape == ds.std.shape and np.all(ds.std > 0)


def test_digits_split_standardized_and_reproducible():
    ds = data.load(None)
    _check_valid(ds, 1797)
    assert ds.name == "digits" and ds.feature_shape == (64,) and ds.num_classes == 10
    assert (len(ds.train["y"]), len(ds.val["y"]), len(ds.test["y"])) == (1079, 359, 359)
    x = np.asarray(ds.train["x"])
    # train statistics: mean 0, std 1 except the constant pixels (std 0 -> divided by 1)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    stds = x.std(0)
    assert np.all((np.abs(stds - 1) < 1e-4) | (stds == 0))
    # stratified: each class's share in test is within one example of its share overall
    y_all = np.concatenate([np.asarray(s["y"]) for s in (ds.train, ds.val, ds.test)])
    expected = np.bincount(y_all) * len(ds.test["y"]) / len(y_all)
    assert np.all(np.abs(np.bincount(np.asarray(ds.test["y"])) - expected) <= 1)
    again = data.load_digits(seed=0)
    np.testing.assert_array_equal(np.asarray(again.test["y"]), np.asarray(ds.test["y"]))
    other = data.load_digits(seed=1)
    assert not np.array_equal(np.asarray(other.test["y"]), np.asarray(ds.test["y"]))


def test_make_hard_and_load_spec():
    ds = data.load("hard")
    _check_valid(ds, 3000)
    assert ds.name == "hard" and ds.num_classes == 10 and ds.feature_shape == (30,)
    small = data.make_hard(seed=1, n_samples=200, n_classes=3)
    _check_valid(small, 200)
    assert small.num_classes == 3
    bigger = data.load("hard:5000", seed=1)
    _check_valid(bigger, 5000)
    assert bigger.feature_shape == (30,) and bigger.num_classes == 10


def test_imbalanced_has_the_class_shares_it_says_in_every_split():
    ds = data.load("imbalanced:2000", seed=3)
    _check_valid(ds, 2000)
    assert ds.name == "imbalanced" and ds.num_classes == 5 and ds.feature_shape == (20,)
    for split in (ds.train, ds.val, ds.test):  # stratified: every split keeps the shares
        shares = np.bincount(np.asarray(split["y"]), minlength=5) / len(split["y"])
        np.testing.assert_allclose(shares, data.IMBALANCED_WEIGHTS, atol=0.03)


@pytest.mark.parametrize("spec, message", [
    ("imbalanced:10", "at least 200 examples"),
    ("hard:lots", "write hard:N"),
    ("hard:", "write hard:N"),
    ("hard:50", "at least 100 examples"),
])
def test_bad_hard_spec_is_a_clear_data_error(spec, message):
    with pytest.raises(data.DataError, match=message):
        data.load(spec)


def test_npz_plain_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2, 3)) * 5 + 3
    y = np.array([3, 7, 9] * 20)
    p = tmp_path / "grid.npz"
    np.savez(p, x=x, y=y)
    ds = data.load(str(p), seed=2)
    _check_valid(ds, 60)
    assert ds.feature_shape == (2, 3) and ds.classes == (3, 7, 9) and ds.name == "grid"
    # standardization uses train statistics only; (2, 3) examples are sequences of 3
    # channels: one mean and spread per channel, over the examples and their positions
    raw_train = (np.asarray(ds.train["x"]) * ds.std + ds.mean)
    np.testing.assert_allclose(ds.mean, np.broadcast_to(raw_train.mean((0, 1)), (2, 3)),
                               rtol=1e-4, atol=1e-4)
    z = np.asarray(ds.train["x"])
    np.testing.assert_allclose(z.mean((0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std((0, 1)), 1, atol=1e-4)
    np.testing.assert_allclose(ds.raw(ds.train["x"]), raw_train, rtol=1e-5, atol=1e-6)
    p2 = tmp_path / "names.npz"
    np.savez(p2, x=x, y=np.array(["cat", "dog"] * 30))
    ds2 = data.load_file(p2)
    assert ds2.classes == ("cat", "dog")


def test_npz_predefined_splits(tmp_path):
    rng = np.random.default_rng(1)
    mk = lambda n: (rng.normal(size=(n, 4)), np.arange(n) % 3)
    (xt, yt), (xv, yv), (xs, ys) = mk(30), mk(9), mk(12)
    p = tmp_path / "s.npz"
    np.savez(p, x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys)
    ds = data.load_file(p)
    _check_valid(ds, 51)
    assert len(ds.train["y"]) == 30 and len(ds.val["y"]) == 9 and len(ds.test["y"]) == 12
    np.testing.assert_allclose(ds.mean, xt.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.test["x"]), (xs - xt.mean(0)) / xt.std(0), atol=1e-5)
    # without a validation split, one is carved out of train
    p2 = tmp_path / "noval.npz"
    np.savez(p2, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    ds2 = data.load_file(p2)
    _check_valid(ds2, 42)
    assert len(ds2.test["y"]) == 12 and len(ds2.val["y"]) > 0


def test_csv_label_column_choice_and_constant_feature(tmp_path):
    p = tmp_path / "t.csv"
    rows = ["a,label,b,const"] + [f"{i + 0.5},{'yes' if i % 2 else 'no'},{i * i},5"
                                  for i in range(20)]
    p.write_text("\n".join(rows) + "\n")
    ds = data.load_file(p)  # column named "label" wins over the last column
    _check_valid(ds, 20)
    assert ds.classes == ("no", "yes") and ds.feature_shape == (3,)
    assert ds.std[2] == 1.0 and np.all(np.asarray(ds.train["x"])[:, 2] == 0)
    q = tmp_path / "last.csv"
    q.write_text("f1,f2,target\n" + "".join(f"{2 * i},{-i},{i % 3}\n" for i in range(30)))
    ds2 = data.load_file(q)  # no "label" column: the last one
    assert ds2.classes == (0, 1, 2) and ds2.feature_shape == (2,)
    ds3 = data.load_file(q, label="target", seed=3)
    assert ds3.classes == (0, 1, 2) and ds3.feature_shape == (2,)
    with pytest.raises(DataError, match="too few examples"):
        data.load_file(q, label="f1")  # 30 classes of one example each cannot be split


@pytest.mark.parametrize("head, index, note", [
    ("", lambda i: i, "dropped the first column (unnamed): it is unnamed"),
    ("Unnamed: 0", lambda i: i, "dropped the first column 'Unnamed: 0': it is unnamed"),
    ("id", lambda i: i + 1, "dropped the first column 'id': it holds the row numbers"),
    ("row", lambda i: i, "dropped the first column 'row': it holds the row numbers"),
])
def test_csv_index_column_is_dropped_with_a_note(tmp_path, head, index, note):
    p = tmp_path / "indexed.csv"
    p.write_text(f"{head},a,b,label\n" + "".join(f"{index(i)},{i % 5},{(7 * i) % 3},{i % 2}\n"
                                                for i in range(30)))
    ds = data.load_file(p)
    assert ds.feature_shape == (2,) and len(ds.notes) == 1
    assert ds.notes[0].startswith(f"{p}: {note}") and ds.notes[0].endswith("not a feature")
    plain = tmp_path / "plain.csv"  # the same features without the index: the same data
    plain.write_text("a,b,label\n" + "".join(f"{i % 5},{(7 * i) % 3},{i % 2}\n"
                                             for i in range(30)))
    np.testing.assert_array_equal(ds.train["x"], data.load_file(plain).train["x"])
    assert data.load_file(plain).notes == ()


def test_csv_first_columns_that_are_features_are_kept(tmp_path):
    p = tmp_path / "shuffled.csv"  # numbers, but not the row numbers; a named label first
    p.write_text("x,a,label\n" + "".join(f"{(i * 7) % 30},{i % 4},{i % 2}\n" for i in range(30)))
    assert data.load_file(p).feature_shape == (2,) and data.load_file(p).notes == ()
    q = tmp_path / "label_first.csv"
    q.write_text("label,a,b\n" + "".join(f"{i % 2},{i},{i % 3}\n" for i in range(30)))
    assert data.load_file(q).feature_shape == (2,) and data.load_file(q).notes == ()


BAD_CSV = {
    "empty": ("", "empty"),
    "header_only": ("a,b,label\n", "no data rows"),
    "non_numeric": ("a,b,label\n1,2,0\n3,x7,1\n" + "1,2,0\n3,4,1\n" * 10, "'x7' in column 'b' at data row 2"),
    "nan": ("a,b,label\n1,nan,0\n" + "1,2,0\n3,4,1\n" * 10, "column 'b' at data row 1"),
    "inf": ("a,b,label\n1,2,0\n" + "1,2,0\n3,inf,1\n" * 10, "not finite"),
    "empty_cell": ("a,b,label\n1,,0\n" + "1,2,0\n3,4,1\n" * 10,
                   "missing value (an empty cell) in column 'b' at data row 1"),
    "na_cell": ("a,b,label\n1,2,0\n" + "1,2,0\n3,NA,1\n" * 10,
                "missing value ('NA') in column 'b' at data row 3"),
    "single_class": ("a,b,label\n" + "1,2,0\n" * 20, "only one class"),
    "ragged": ("a,b,label\n1,2,0\n1,2\n", "has 2 fields"),
    "float_labels": ("a,label\n" + "1,0.5\n2,1\n" * 10, "non-integer number '0.5'"),
    "too_few": ("a,label\n1,0\n2,1\n", "too few examples"),
    "only_label": ("label\n1\n2\n", "at least one feature column"),
    "empty_label": ("a,label\n1,\n" + "1,0\n2,1\n" * 10,
                    "missing label (an empty cell) in column 'label' at data row 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_raises_data_error(tmp_path, case):
    text, message = BAD_CSV[case]
    p = tmp_path / f"{case}.csv"
    p.write_text(text)
    with pytest.raises(DataError) as info:
        data.load_file(p)
    assert message in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_files_and_labels(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.load_file(tmp_path / "missing.csv")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        data.load_file(tmp_path / "empty.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        data.load_file(tmp_path / "junk.npz")
    (tmp_path / "x.txt").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"unsupported format '\.txt'"):
        data.load_file(tmp_path / "x.txt")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match="UTF-8"):
        data.load_file(tmp_path / "bin.csv")
    p = tmp_path / "c.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="no label column 'y'; columns are 'a', 'b', 'c'"):
        data.load_file(p, label="y")
    with pytest.raises(DataError, match="is a directory"):
        data.load_file(tmp_path)

    x = np.zeros((20, 3))
    cases = {
        "neg.npz": ({"x": x, "y": np.arange(20) % 2 - 1}, "out of range: -1 is negative"),
        "len.npz": ({"x": x, "y": np.arange(19) % 2}, "x has 20 examples but y has 19"),
        "nan.npz": ({"x": np.full((20, 3), np.nan), "y": np.arange(20) % 2}, "NaN"),
        "keys.npz": ({"features": x, "y": np.arange(20) % 2}, "expected arrays 'x' and 'y'"),
        "one.npz": ({"x": x, "y": np.zeros(20, int)}, "only one class"),
        "obj.npz": ({"x": np.array([{"a": 1}] * 20, dtype=object), "y": np.arange(20) % 2},
                    "cannot read"),
        "str.npz": ({"x": np.array(["a"] * 20), "y": np.arange(20) % 2}, "must be numeric"),
        "unseen.npz": ({"x_train": x, "y_train": np.arange(20) % 2, "x_test": x,
                        "y_test": np.arange(20) % 3}, "[2] in y_test never appear in y_train"),
        "partial.npz": ({"x_train": x, "y_train": np.arange(20) % 2}, "missing x_test, y_test"),
        "shapes.npz": ({"x_train": x, "y_train": np.arange(20) % 2, "x_test": np.zeros((5, 2)),
                        "y_test": np.arange(5) % 2}, "different feature shapes"),
    }
    for name, (arrays, message) in cases.items():
        p = tmp_path / name
        np.savez(p, **arrays)
        with pytest.raises(DataError) as info:
            data.load_file(p)
        assert message in str(info.value), (name, str(info.value))
    with pytest.raises(ValueError, match="sum to 1"):
        data.load_digits(fractions=(0.5, 0.2, 0.2))


_cell = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "a", "nan", "inf", "1e400", '"q,1"', " 3 ", "-0", "1.5"]),
    st.text(alphabet="0123456789.,-eE xa\"\n", max_size=4),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(
    header=st.lists(st.sampled_from(["a", "b", "label", "c", "a"]), min_size=0, max_size=4),
    rows=st.lists(st.lists(_cell, min_size=0, max_size=5), min_size=0, max_size=12),
    label=st.sampled_from([None, "label", "b", "zzz"]),
)
def test_csv_fuzz_returns_dataset_or_data_error(tmp_path, header, rows, label):
    p = tmp_path / "fuzz.csv"
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    p.write_text(text)
    try:
        ds = data.load_file(p, label=label)
    except DataError:
        return
    _check_valid(ds)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(0, 12),
    d=st.integers(0, 3),
    x_kind=st.sampled_from(["normal", "nan", "huge", "int", "bool"]),
    y_kind=st.sampled_from(["int", "neg", "float", "fractional", "str", "2d", "short"]),
    n_classes=st.integers(1, 4),
    seed=st.integers(0, 3),
)
def test_npz_fuzz_returns_dataset_or_data_error(tmp_path, n, d, x_kind, y_kind, n_classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d) if d else (n,))
    if x_kind == "nan" and x.size:
        x.flat[rng.integers(x.size)] = np.nan
    elif x_kind == "huge":
        x = x * 1e306
    elif x_kind == "int":
        x = (x * 10).astype(np.int64)
    elif x_kind == "bool":
        x = x > 0
    y = rng.integers(0, n_classes, size=n)
    y = {"int": y, "neg": y - 1, "float": y.astype(float), "fractional": y + 0.5,
         "str": y.astype(str), "2d": y.reshape(-1, 1), "short": y[:-1]}[y_kind]
    p = tmp_path / "fuzz.npz"
    np.savez(p, x=x, y=y)
    try:
        ds = data.load_file(p, seed=seed)
    except DataError:
        return
    _check_valid(ds, n)
    assert os.path.exists(p)


# ----------------------------------------------------------------------------- shapes, logits


def test_images_keep_their_shape_and_are_standardized_per_channel(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 6, 5, 2)) * np.array([1.0, 10.0]) + np.array([5.0, -3.0])
    p = tmp_path / "img.npz"
    np.savez(p, x=x, y=np.arange(90) % 3)
    ds = data.load(str(p))
    _check_valid(ds, 90)
    assert ds.feature_shape == (6, 5, 2)
    z = np.asarray(ds.train["x"])
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0, atol=1e-5)  # every channel
    np.testing.assert_allclose(z.std((0, 1, 2)), 1, atol=1e-4)
    # one statistic per channel, computed on train only, repeated over the positions
    assert np.all(ds.mean[..., 1] == ds.mean[0, 0, 1]) and np.all(ds.std[..., 0] == ds.std[0, 0, 0])
    digits = data.load("digits:images")
    assert digits.feature_shape == (8, 8, 1) and digits.name == "digits:images"
    np.testing.assert_allclose(digits.standardize(digits.raw(digits.test["x"])),
                               digits.test["x"], atol=1e-5)


def test_mnist1d_is_generated_offline_split_and_leaves_the_global_rngs_alone():
    import random

    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    before = (random.random(), np.random.rand())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    ds = data.load("mnist1d:500")
    after = (random.random(), np.random.rand())  # noqa: NPY002
    assert before == after  # make_dataset's set_seed did not leak out
    _check_valid(ds, 500)
    assert ds.name == "mnist1d" and ds.feature_shape == (40, 1) and ds.num_classes == 10
    assert (len(ds.train["y"]), len(ds.val["y"]), len(ds.test["y"])) == (300, 100, 100)
    again = data.load_mnist1d(n_samples=500)
    np.testing.assert_array_equal(np.asarray(again.test["x"]), np.asarray(ds.test["x"]))
    assert data.MNIST1D_SIZE * 0.2 >= 2000  # the default validation split holds thousands
    with pytest.raises(DataError, match="write mnist1d:N"):
        data.load("mnist1d:lots")


def test_teacher_logits_travel_with_their_examples(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 4, 4, 1))
    y = np.arange(60) % 3
    logits = np.eye(3)[y] * 5.0 + rng.normal(size=(60, 3))
    p = tmp_path / "t.npz"
    np.savez(p, x=x, y=y, teacher_logits=logits)
    ds = data.load(str(p))
    for split in (ds.train, ds.val, ds.test):  # each row still belongs to its example
        raw = ds.raw(split["x"]).reshape(len(split["y"]), -1)
        rows = [int(np.argmin(np.abs(x.reshape(60, -1) - r).sum(1))) for r in raw]
        np.testing.assert_allclose(np.asarray(split["teacher"]), logits[rows], rtol=1e-6)
    # predefined splits: one array per split
    q = tmp_path / "s.npz"
    np.savez(q, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:],
             teacher_logits_train=logits[:40], teacher_logits_test=logits[40:])
    ds2 = data.load(str(q))
    np.testing.assert_allclose(np.asarray(ds2.test["teacher"]), logits[40:], rtol=1e-6)
    assert len(ds2.val["teacher"]) == len(ds2.val["y"]) > 0  # carved out of train with it
    # the same from Python: arrays, a dict, splits
    assert data.from_user((x, y), teacher=logits).train["teacher"].shape[1] == 3
    splits = {"train": (x[:40], y[:40]), "test": {"x": x[40:], "y": y[40:]}}
    got = data.from_user(splits, teacher={"train": logits[:40], "test": logits[40:]})
    np.testing.assert_allclose(np.asarray(got.test["teacher"]), logits[40:], rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (lambda t: t[:-1], "teacher logits have 59 rows but the data has 60 examples"),
    (lambda t: t[:, :2], "teacher logits have 2 classes but the data has 3"),
    (lambda t: np.where(np.arange(60)[:, None] == 7, np.nan, t), "contain NaN"),
    (lambda t: t[:, 0], "must have shape \\(examples, classes\\)"),
])
def test_teacher_logits_that_do_not_fit_are_one_clear_error(tmp_path, bad, message):
    y = np.arange(60) % 3
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.random.default_rng(0).normal(size=(60, 2)), y=y,
             teacher_logits=bad(np.eye(3)[y]))
    with pytest.raises(DataError, match=message):
        data.load(str(p))
