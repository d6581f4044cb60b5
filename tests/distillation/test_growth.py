"""Function-preserving growth (Net2Net widen / deepen) of the distillation MLP."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.distillation import growth, models


def _model(hidden, activation="relu", seed=0, in_features=5, num_classes=3):
    """A Functional with random numpy-drawn params (nnx's initializers would compile per shape)."""
    arch = {"kind": "mlp", "in_features": in_features, "hidden": list(hidden),
            "num_classes": num_classes, "activation": activation}
    rng = np.random.default_rng(seed)
    widths = [in_features, *hidden, num_classes]
    params = {"layers": {i: {"kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a),
                                                   jnp.float32),
                             "bias": jnp.asarray(rng.normal(size=b) * 0.1, jnp.float32)}
                         for i, (a, b) in enumerate(itertools.pairwise(widths))}}
    f = models.template(arch)
    return f._replace(params=params, apply=jax.jit(f.apply))


def _outputs(arch, params, x):
    return jax.jit(models.template(arch).apply)(params, x)


X = jax.random.normal(jax.random.key(42), (64, 5)) * 3  # inputs of both signs


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_widen_zero_outgoing_is_exact(activation):
    f = _model([4, 3], activation)
    before = f.apply(f.params, X)
    for layer in (0, 1, -1):
        arch, params = growth.widen(f.arch, f.params, layer, 9, jax.random.key(1))
        assert arch["hidden"][layer] == 9 and f.arch["hidden"] == [4, 3]  # input untouched
        after = _outputs(arch, params, X)
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
        # the new units are live: they receive non-zero incoming weights
        k = params["layers"][layer % 2]["kernel"]
        assert float(jnp.abs(k[:, -5:]).min()) > 0


def test_widen_split_is_function_preserving_and_copies_units():
    f = _model([4, 3])
    arch, params = growth.widen(f.arch, f.params, 0, 10, jax.random.key(2), method="split")
    np.testing.assert_allclose(_outputs(arch, params, X), f.apply(f.params, X), atol=1e-5)
    k_old, k_new = f.params["layers"][0]["kernel"], params["layers"][0]["kernel"]
    for j in range(4, 10):  # every new unit duplicates an existing one
        assert any(bool(jnp.array_equal(k_new[:, j], k_old[:, i])) for i in range(4))
    # outgoing weights of the old units were divided by their copy counts: the column sums match
    np.testing.assert_allclose(params["layers"][1]["kernel"].sum(0),
                               f.params["layers"][1]["kernel"].sum(0), atol=1e-5)


@pytest.mark.parametrize("position", [0, 1, 2, None])
def test_deepen_relu_is_exact(position):
    f = _model([4, 3])
    arch, params = growth.deepen(f.arch, f.params, jax.random.key(0), position=position)
    assert len(arch["hidden"]) == 3
    expected_width = 10 if position == 0 else [4, 3][(position or 2) - 1]
    assert arch["hidden"][2 if position is None else position] == expected_width
    np.testing.assert_allclose(_outputs(arch, params, X), f.apply(f.params, X), atol=1e-6)


def test_deepen_linear_model_and_refusal_for_tanh():
    f = _model([])  # a linear model: deepen on raw inputs of any sign via [I, -I]
    arch, params = growth.deepen(f.arch, f.params)
    assert arch["hidden"] == [10]
    np.testing.assert_allclose(_outputs(arch, params, X), f.apply(f.params, X), atol=1e-5)
    with pytest.raises(ValueError, match="no hidden layer to widen"):
        growth.grow(f.arch, f.params, "widen", jax.random.key(0))
    t = _model([4], "tanh")
    with pytest.raises(ValueError, match=r"only for relu MLPs.*'tanh'"):
        growth.deepen(t.arch, t.params)


def test_widen_then_deepen_composes_and_round_trips(tmp_path):
    f = _model([4])
    key_a, key_b = jax.random.split(jax.random.key(3))
    arch, params = growth.grow(f.arch, f.params, "widen", key_a, 3)
    arch, params = growth.grow(arch, params, "deepen", key_b)
    arch, params = growth.grow(arch, params, "widen", key_b)  # default: +max(2, w // 2)
    assert arch["hidden"] == [10, 10]
    np.testing.assert_allclose(_outputs(arch, params, X), f.apply(f.params, X), atol=1e-6)
    # the grown student is a regular nnx MLP that can be saved, loaded and trained
    module = models.to_module(models.template(arch), params)
    assert isinstance(module, models.MLP) and module.hidden == (10, 10)
    path = models.save(tmp_path / "grown.msgpack", module, {"grown": True})
    loaded, config = models.load(path)
    assert config["hidden"] == [10, 10] and config["grown"] is True
    np.testing.assert_array_equal(np.asarray(loaded(X)), np.asarray(module(X)))
    assert models.count_params(loaded) == 5 * 10 + 10 + 10 * 10 + 10 + 10 * 3 + 3

    # and gradients reach the new units (zero outgoing weights get non-zero gradients)
    def loss(p):
        logits = _outputs(arch, p, X)
        return -jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    g = jax.grad(loss)(params)
    assert float(jnp.abs(g["layers"][2]["kernel"][4:]).max()) > 0


def test_grow_same_key_grows_current_and_stable_alike_and_module_form():
    cur, stable = _model([6], seed=0), _model([6], seed=1)
    key = jax.random.key(7)
    a1, p1 = growth.grow(cur.arch, cur.params, "widen", key, 2)
    a2, p2 = growth.grow(stable.arch, stable.params, "widen", key, 2)
    assert a1 == a2 == {**cur.arch, "hidden": [8]}
    np.testing.assert_array_equal(p1["layers"][0]["kernel"][:, 6:], p2["layers"][0]["kernel"][:, 6:])
    m = models.to_module(cur)
    grown = growth.grow_module(m, "deepen", key, 2)
    assert grown.hidden == (6, 6, 6)
    np.testing.assert_allclose(np.asarray(grown(X)), np.asarray(m(X)), atol=1e-6)


def test_growth_errors():
    f = _model([4])
    with pytest.raises(ValueError, match="kind must be one of"):
        growth.grow(f.arch, f.params, "shrink", jax.random.key(0))
    with pytest.raises(ValueError, match="smaller than the current width 4"):
        growth.widen(f.arch, f.params, 0, 2, jax.random.key(0))
    with pytest.raises(ValueError, match="out of range"):
        growth.widen(f.arch, f.params, 3, 8, jax.random.key(0))
    with pytest.raises(ValueError, match="params do not match"):
        growth.grow({**f.arch, "hidden": [5]}, f.params, "deepen", jax.random.key(0))
    pop = jax.tree.map(lambda a: jnp.stack([a, a]), f.params)
    with pytest.raises(ValueError, match="population axis"):
        growth.grow(f.arch, pop, "widen", jax.random.key(0))
    with pytest.raises(ValueError, match="amount must be a positive integer"):
        growth.grow(f.arch, f.params, "widen", jax.random.key(0), 0)
