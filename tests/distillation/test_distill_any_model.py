"""``ev3evo.distill`` on the user's own flax models: a CNN teacher distilled into a CNN student
with batch norm on digits as 8×8×1 images, and a CNN student with dropout taught by logits
stored in an ``.npz``. The returned student is of the user's class and scores on test what
the summary says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import ev3evo
from ev3evo.distillation import models

pytestmark = pytest.mark.slow  # each run compiles an EV3 step for a CNN (tens of seconds)

FAST = {"steps": 3, "rollout_steps": 10, "population_size": 8, "baselines": False,
        "progress": False}


class TinyCNN(nnx.Module):
    """The user's CNN: conv, optional batch norm, relu, pool, optional dropout, linear."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs, norm=False, dropout=0.0):
        self.conv = nnx.Conv(1, channels, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(channels, rngs=rngs) if norm else None
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.out = nnx.Linear(channels * 16, 10, rngs=rngs)

    def __call__(self, x):
        h = self.conv(x)
        if self.norm is not None:
            h = self.norm(h)
        h = nnx.avg_pool(jax.nn.relu(h), (2, 2), (2, 2)).reshape(x.shape[0], -1)
        if self.drop is not None:
            h = self.drop(h)
        return self.out(h)


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def teacher(images):
    """The user's teacher, trained here the usual nnx way."""
    x, y = images
    model = TinyCNN(16, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, xb, yb):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()

        grads = nnx.grad(loss)(model)
        opt.update(model, grads)

    rng = np.random.default_rng(0)
    for _ in range(150):
        idx = rng.integers(0, len(x), 128)
        step(model, opt, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    assert float(jnp.mean(jnp.argmax(model(jnp.asarray(x)), -1) == y)) > 0.9
    return model


def _test_accuracy(result) -> float:
    test = result.dataset.test
    return float(jnp.mean(jnp.argmax(result.student(test["x"]), -1) == test["y"]))


def test_a_users_cnn_teacher_into_a_users_cnn_student_with_batch_norm(images, teacher,
                                                                      tmp_path):
    x, y = images
    result = ev3evo.distill(student=TinyCNN(4, rngs=nnx.Rngs(1), norm=True), teacher=teacher,
                            data=(x, y), out=str(tmp_path), **FAST)
    s = result.summary
    assert type(result.student) is TinyCNN and s["student"]["folded"]
    assert s["student"]["class"] == "TinyCNN" and s["dataset"]["feature_shape"] == [8, 8, 1]
    assert s["teacher"]["source"] == "module" and s["teacher"]["params"] == \
        models.count_params(teacher)
    assert s["teacher"]["test"]["accuracy"] > 0.9
    # the certified student scores on test what the summary says, and is a real student
    assert _test_accuracy(result) == pytest.approx(result.methods["ev3"]["test"]["accuracy"],
                                                   abs=1e-9)
    assert result.methods["ev3"]["test"]["accuracy"] > 0.5
    assert result.methods["ev3"]["params"] == models.count_params(result.student)
    # the batch statistics were trained by the rollouts that won, never perturbed otherwise:
    # they moved only if a gradient candidate was accepted
    steps = [r for r in result.history if "event" not in r]
    trained = any(r["accepted"] and r["winner_source"] in ("kd", "masked")
                  for r in steps)
    mean = np.asarray(result.student.norm.mean[...])
    assert trained or not np.any(mean != 0.0)
    assert result.student.norm.use_running_average  # handed back in eval mode
    # it saves and loads like any nnx module
    path = models.save(tmp_path / "student.msgpack", result.student)
    loaded, _ = models.load(path, like=lambda: TinyCNN(4, rngs=nnx.Rngs(9), norm=True))
    loaded.eval()
    np.testing.assert_array_equal(np.asarray(loaded(result.dataset.test["x"])),
                                  np.asarray(result.student(result.dataset.test["x"])))


def test_teacher_logits_in_an_npz_into_a_users_cnn_student_with_dropout(images, teacher,
                                                                        tmp_path):
    x, y = images
    logits = np.asarray(teacher(jnp.asarray(x)))  # a teacher run once, offline
    path = tmp_path / "digits_images.npz"
    np.savez(path, x=x, y=y, teacher_logits=logits)
    result = ev3evo.distill(student=TinyCNN(4, rngs=nnx.Rngs(2), dropout=0.3), data=str(path),
                            out=str(tmp_path / "out"), **FAST)
    s = result.summary
    assert s["teacher"]["source"] == "logits" and s["teacher"]["test"]["agreement"] == 1.0
    teacher_acc = float(np.mean(np.argmax(logits, -1) == y))
    assert s["teacher"]["test"]["accuracy"] == pytest.approx(teacher_acc, abs=0.05)
    assert type(result.student) is TinyCNN and result.student.drop.deterministic
    assert _test_accuracy(result) == pytest.approx(result.methods["ev3"]["test"]["accuracy"],
                                                   abs=1e-9)
    # the dropout stream advanced only in the rollouts that won: one mask per rollout step
    steps = [r for r in result.history if "event" not in r]
    wins = sum(r["accepted"] and r["winner_source"] in ("kd", "masked")
               for r in steps)
    count = int(result.stable.state["drop"]["rngs"]["count"])
    assert count % FAST["rollout_steps"] == 0 and count <= wins * FAST["rollout_steps"]


def test_a_cnn_student_grows_on_mnist1d_and_is_reported_at_its_certified_size(tmp_path):
    result = ev3evo.distill(data="mnist1d:600", student="cnn:4", teacher_epochs=2, grow=True,
                            grow_kind="residual", patience=1, max_growths=1,
                            out=str(tmp_path), **{**FAST, "steps": 4})
    s = result.summary
    assert s["teacher"]["arch"] == "cnn:32,32,32"  # sequences get a CNN teacher by default
    assert s["dataset"]["feature_shape"] == [40, 1]
    (event,) = s["growth"]
    assert event["accepted"] and event["arch_before"] == "cnn:4"
    assert event["arch_after"] == "cnn:4+1" and event["stable_after"] == event["stable_before"]
    assert event["compile_seconds"] > 0
    # the returned student is a built-in CNN of the certified size, and scores the summary
    assert isinstance(result.student, models.CNN)
    assert models.count_params(result.student) == s["methods"]["ev3"]["params"]
    certified = [r["step"] for r in result.history if r.get("certified")]
    grown_after = [c for c in certified if c > event["step"]]
    check = s["final_check"]
    if not grown_after and not (check and check["certified"]):
        assert s["methods"]["ev3"]["params"] == event["params_before"]
    assert _test_accuracy(result) == pytest.approx(s["methods"]["ev3"]["test"]["accuracy"],
                                                   abs=1e-9)
    loaded, config = models.load(models.save(tmp_path / "s.msgpack", result.student))
    assert config["kind"] == "cnn" and isinstance(loaded, models.CNN)
