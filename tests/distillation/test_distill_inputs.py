"""Bad input to ``ev3evo.distill`` is one clear error before any training (exit code 2 and one
line on the command line): students that do not fit the data, teachers whose logits do not,
models that cannot be split into parameters and the rest."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from flax import nnx

import ev3evo
from ev3evo.cli import main as cli_main
from ev3evo.distillation.data import DataError
from ev3evo.distillation.nnx_state import ModelError


class ConvNet(nnx.Module):
    def __init__(self, in_channels, classes=10):
        self.conv = nnx.Conv(in_channels, 4, (3, 3), rngs=nnx.Rngs(0))
        self.out = nnx.Linear(4 * 64, classes, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.out(jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1))


class Frozen(nnx.Module):
    """Weights kept as a plain nnx.Variable: nothing to explore."""

    def __init__(self):
        self.w = nnx.Variable(np.ones((64, 10), np.float32))

    def __call__(self, x):
        return x.reshape(x.shape[0], -1) @ self.w[...]


def _never(*args):
    raise AssertionError("the teacher was called although the student does not fit")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


@pytest.mark.parametrize("student, data, error, message", [
    (nnx.Linear(64, 3, rngs=nnx.Rngs(0)), "digits", ModelError,
     r"student Linear has 3 outputs but the data has 10 classes: it must return one logit "
     r"per class"),
    (ConvNet(3), "digits:images", ModelError,
     r"convolutions take 3 input channels but the data's examples \(8, 8, 1\) have 1"),
    (Frozen(), "digits", ModelError, "holds no nnx.Param"),
    ("cnn:4,0", "digits", ValueError, "cannot read the model spec"),
    (object(), "digits", TypeError, "student must be a flax nnx Module or a spec"),
])
def test_students_that_do_not_fit_fail_before_any_training(tmp_path, student, data, error,
                                                           message):
    with pytest.raises(error, match=message):
        ev3evo.distill(student=student, teacher=_never, data=data, steps=1, progress=False,
                       out=str(tmp_path))
    assert not (tmp_path / "teacher").exists()  # no teacher was trained


def test_a_users_student_does_not_grow(tmp_path):
    with pytest.raises(ModelError, match="grow=True grows a built-in student"):
        ev3evo.distill(student=ConvNet(1), data="digits:images", grow=True, progress=False,
                       teacher=_never, out=str(tmp_path))


@pytest.mark.parametrize("logits, message", [
    (lambda n: np.zeros((n - 1, 10)), "have 1796 rows but the data has 1797 examples"),
    (lambda n: np.zeros((n, 7)), "have 7 classes but the data has 10"),
    (lambda n: np.full((n, 10), np.inf), "contain inf"),
])
def test_teacher_logits_that_do_not_fit_fail_before_any_training(digits, logits, message):
    x, y = digits
    with pytest.raises(DataError, match=message):
        ev3evo.distill(student="mlp:4", teacher=logits(len(y)), data=(x, y), progress=False)


def test_a_teacher_that_returns_the_wrong_logits_is_named(digits):
    x, y = digits
    with pytest.raises(DataError, match=r"teacher \(train\): teacher logits have 3 classes"):
        ev3evo.distill(teacher=lambda v: np.zeros((len(v), 3)), data=(x, y), progress=False)
    with pytest.raises(DataError, match=r"the teacher \(<lambda>\) failed on the train "
                                        r"examples of shape \(64,\): ZeroDivisionError"):
        ev3evo.distill(teacher=lambda v: 1 / 0, data=(x, y), progress=False)
    with pytest.raises(TypeError, match="teacher must be an nnx Module, a callable"):
        ev3evo.distill(teacher=3.5, data=(x, y), progress=False)


def test_the_command_line_reports_bad_teacher_logits_in_one_line(tmp_path, capsys):
    y = np.arange(90) % 3
    x = np.random.default_rng(0).normal(size=(90, 4, 4, 1))
    cases = {"rows": (np.zeros((89, 3)), "have 89 rows but the data has 90 examples"),
             "classes": (np.zeros((90, 4)), "have 4 classes but the data has 3"),
             "nan": (np.where(np.arange(90)[:, None] == 5, np.nan, 0.0) + np.zeros((90, 3)),
                     r"contain NaN \(first at example 5\)")}
    for name, (logits, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=x, y=y, teacher_logits=logits)
        code = cli_main(["distill", "--data", str(path), "--out", str(tmp_path / "out"),
                         "--quiet", "--no-baselines"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("ev3evo distill: error:") and re.search(message, err), err
