"""Flax nnx MLP, its pure functional form under jit/vmap, parameter counts, checkpoints."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ev3evo.distillation import models


@pytest.fixture(scope="module")
def mlp():
    return models.MLP(6, [5, 4], 3, rngs=nnx.Rngs(0))


def test_functional_matches_module_under_jit_and_vmap(mlp):
    f = models.functional(mlp)
    x = jax.random.normal(jax.random.key(0), (7, 2, 3))  # flattened to 6 features
    direct = mlp(x)
    assert direct.shape == (7, 3)
    np.testing.assert_allclose(jax.jit(f.apply)(f.params, x), direct, atol=1e-6)
    # a population of 3 parameter sets, vmapped
    pop = jax.tree.map(lambda a: jnp.stack([a, 2 * a, -a]), f.params)
    out = jax.jit(jax.vmap(f.apply, in_axes=(0, None)))(pop, x)
    assert out.shape == (3, 7, 3)
    for i in range(3):
        member = jax.tree.map(lambda a, i=i: a[i], pop)
        np.testing.assert_allclose(out[i], f.apply(member, x), atol=1e-5)
    assert not np.allclose(out[0], out[1])
    # params is a plain dict (what evosax and the engine hold)
    assert isinstance(f.params, dict) and set(f.params) == {"layers"}
    assert f.arch == {"kind": "mlp", "in_features": 6, "hidden": [5, 4], "num_classes": 3,
                      "activation": "relu"}


def test_count_params_and_build(mlp):
    expected = (6 * 5 + 5) + (5 * 4 + 4) + (4 * 3 + 3)
    f = models.functional(mlp)
    assert models.count_params(f.params) == expected
    assert models.count_params(mlp) == expected == models.count_params(f)
    rebuilt = models.build(models.arch_of(mlp), seed=1)
    assert models.arch_of(rebuilt) == models.arch_of(mlp)
    assert models.count_params(models.template({"in_features": 3, "hidden": [],
                                                "num_classes": 2})) == 8
    m = models.to_module(f, jax.tree.map(lambda a: a * 0, f.params))
    assert isinstance(m, models.MLP) and float(jnp.abs(m(jnp.ones((1, 6)))).max()) == 0.0
    # the original module is untouched by to_module
    assert float(jnp.abs(mlp(jnp.ones((1, 6)))).max()) > 0


def test_validation_errors(mlp):
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        models.MLP(3, [4], 2, rngs=nnx.Rngs(0), activation="swish")
    with pytest.raises(ValueError, match="hidden width must be an integer >= 1"):
        models.MLP(3, [0], 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="missing num_classes"):
        models.build({"in_features": 3, "hidden": [2]})
    f = models.functional(mlp)
    bad = jax.tree.map(lambda a: a[..., :1], f.params)
    with pytest.raises(ValueError, match="params do not match"):
        models.to_module(f, bad)
    with pytest.raises(TypeError, match="flax nnx Module"):
        models.functional({"w": 1})


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_save_load_round_trip(tmp_path, activation):
    m = models.MLP(4, [3], 2, rngs=nnx.Rngs(1), activation=activation)
    path = tmp_path / "sub" / "m.msgpack"
    written = models.save(path, m, {"dataset": "toy", "note": [1, 2]})
    assert written == str(path) and os.listdir(tmp_path / "sub") == ["m.msgpack"]  # no tmp left
    loaded, config = models.load(path)
    assert isinstance(loaded, models.MLP)
    assert config["dataset"] == "toy" and config["hidden"] == [3]
    assert config["activation"] == activation
    x = jax.random.normal(jax.random.key(3), (5, 4))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(m(x)))
    # a (Functional, params) pair and an (arch, params) pair both work, and overwrite atomically
    f = models.functional(m)
    models.save(path, (f.arch, jax.tree.map(lambda a: a + 1, f.params)))
    again, _ = models.load(path)
    np.testing.assert_allclose(np.asarray(again.layers[0].bias[...]),
                               np.asarray(m.layers[0].bias[...]) + 1)


def test_checkpoint_errors(tmp_path):
    m = models.MLP(4, [3], 2, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="no such checkpoint"):
        models.load(tmp_path / "nope.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match=r"junk\.msgpack"):
        models.load(tmp_path / "junk.msgpack")
    with pytest.raises(ValueError, match="disagrees"):
        models.save(tmp_path / "a.msgpack", m, {"hidden": [7]})
    f = models.functional(m)
    with pytest.raises(ValueError, match="params do not match"):
        models.save(tmp_path / "b.msgpack", ({**f.arch, "hidden": [5]}, f.params))
    assert not (tmp_path / "b.msgpack").exists()
    with pytest.raises(TypeError, match="JSON"):
        models.save(tmp_path / "c.msgpack", m, {"bad": object()})


# ----------------------------------------------------------------------------- teacher


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    from ev3evo.distillation import data, teacher

    ds = data.load_digits()
    folder = tmp_path_factory.mktemp("teacher")
    t = teacher.load_or_train_teacher(ds, folder, model="mlp:64", epochs=40, patience=10)
    return ds, folder, t


def test_teacher_trains_on_digits_and_is_cached(digits_teacher):
    from ev3evo.distillation import teacher

    ds, folder, t = digits_teacher
    assert t.source == "trained" and 1 <= t.epochs <= 40
    assert t.metrics["test"]["accuracy"] >= 0.95, t.metrics
    assert t.metrics["train"]["accuracy"] >= t.metrics["test"]["accuracy"] - 0.05
    logits = teacher.teacher_logits(t, ds.test["x"])
    assert logits.shape == (len(ds.test["y"]), 10)
    acc = float(jnp.mean(jnp.argmax(logits, -1) == ds.test["y"]))
    assert acc == pytest.approx(t.metrics["test"]["accuracy"], abs=1e-6)
    chunked = teacher.teacher_logits(t, ds.test["x"], batch_size=100)
    np.testing.assert_allclose(chunked, logits, atol=1e-5)
    # second call: loaded from the cache file, same parameters and metrics
    assert t.path is not None and os.path.dirname(t.path) == str(folder)
    again = teacher.load_or_train_teacher(ds, folder, model="mlp:64", epochs=40, patience=10)
    assert again.source == "cache" and again.path == t.path
    jax.tree.map(np.testing.assert_array_equal, again.params, t.params)
    assert again.metrics["test"] == pytest.approx(t.metrics["test"])
    assert isinstance(again.module, models.MLP)


def test_teacher_checkpoint_from_user(digits_teacher, tmp_path):
    from ev3evo.distillation import data, teacher

    ds, _, t = digits_teacher
    p = models.save(tmp_path / "mine.msgpack", (t.arch, t.params))
    loaded = teacher.load_or_train_teacher(ds, None, path=p)
    assert loaded.source == "checkpoint"
    assert loaded.metrics["test"]["accuracy"] == pytest.approx(t.metrics["test"]["accuracy"])
    hard = data.make_hard(n_samples=200)
    with pytest.raises(ValueError, match="expects 64 input features but the data has 30"):
        teacher.load_or_train_teacher(hard, None, path=p)
    wrong = models.save(tmp_path / "w.msgpack", ({**t.arch, "num_classes": 3},
                                                 {"layers": {0: t.params["layers"][0],
                                                             1: {"kernel": jnp.zeros((64, 3)),
                                                                 "bias": jnp.zeros(3)}}}))
    with pytest.raises(ValueError, match="predicts 3 classes but the data has 10"):
        teacher.load_or_train_teacher(ds, None, path=wrong)
    with pytest.raises(ValueError, match="no such checkpoint"):
        teacher.load_or_train_teacher(ds, None, path=tmp_path / "missing.msgpack")
