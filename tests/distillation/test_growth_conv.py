"""Function-preserving growth of the distillation CNN: wider stages (Net2Net), identity stages,
residual blocks; tested like the MLP's (exact outputs, live new units, saved and loaded)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ev3evo.distillation import growth, growth_conv, models

SHAPES = {"image": (8, 8, 2), "sequence": (20, 3), "flat": (12,)}


def _model(shape, channels=(4, 6), blocks=(1, 0), seed=0):
    """A CNN's Functional with random numpy-drawn params (non-zero biases everywhere)."""
    arch = models.arch_for(f"cnn:{','.join(map(str, channels))}", shape, 3)
    arch["blocks"] = list(blocks)
    f = models.template(arch)
    rng = np.random.default_rng(seed)
    scale = lambda s: 0.1 if len(s) == 1 else 1.0 / np.sqrt(np.prod(s[:-1]))  # LeCun; biases
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) * scale(s.shape), jnp.float32), f.params)
    return f._replace(params=params, apply=jax.jit(f.apply))


def _x(shape):
    return jax.random.normal(jax.random.key(42), (16, *shape)) * 3  # inputs of both signs


def _outputs(arch, params, x):
    return jax.jit(models.template(arch).apply)(params, x)


@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize("stage", [0, 1, -1])
def test_widen_is_exact_and_the_new_filters_are_live(kind, stage):
    f, x = _model(SHAPES[kind]), _x(SHAPES[kind])
    arch, params = growth_conv.widen(f.arch, f.params, stage, 9, jax.random.key(1))
    assert arch["channels"][stage] == 9 and f.arch["channels"] == [4, 6]  # input untouched
    np.testing.assert_allclose(_outputs(arch, params, x), f.apply(f.params, x), atol=1e-5)
    new = params["convs"][stage % 2]["kernel"][..., -(9 - [4, 6][stage]):]
    assert float(jnp.abs(new).min()) > 0  # random incoming weights


@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize("position", [0, 1, 2, None])
def test_deepen_with_an_identity_stage_is_exact(kind, position):
    f, x = _model(SHAPES[kind]), _x(SHAPES[kind])
    arch, params = growth_conv.deepen(f.arch, f.params, position=position)
    at = 2 if position is None else position
    assert len(arch["channels"]) == 3 and not arch["pool"][at]
    in_channels = SHAPES[kind][-1] if len(SHAPES[kind]) > 1 else 1
    assert arch["channels"][at] == (2 * in_channels if at == 0 else [4, 6][at - 1])
    np.testing.assert_allclose(_outputs(arch, params, x), f.apply(f.params, x), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_residual_blocks_in_every_stage_are_exact(kind):
    f, x = _model(SHAPES[kind]), _x(SHAPES[kind])
    arch, params = growth_conv.residual(f.arch, f.params, jax.random.key(2))
    assert arch["blocks"] == [2, 1]
    np.testing.assert_allclose(_outputs(arch, params, x), f.apply(f.params, x), atol=1e-5)
    block = params["residual"][1][0]
    assert float(jnp.abs(block["conv1"]["kernel"]).min()) > 0  # the new block is live
    assert not jnp.any(block["conv2"]["kernel"]) and not jnp.any(block["conv2"]["bias"])


def test_growths_compose_save_load_and_gradients_reach_the_new_units(tmp_path):
    shape = SHAPES["image"]
    f, x = _model(shape), _x(shape)
    keys = jax.random.split(jax.random.key(3), 4)
    arch, params = growth.grow(f.arch, f.params, "widen", keys[0], 2)
    arch, params = growth.grow(arch, params, "residual", keys[1])
    arch, params = growth.grow(arch, params, "deepen", keys[2])
    arch, params = growth.grow(arch, params, "widen", keys[3])  # default: +max(2, w // 2)
    assert arch["channels"] == [9, 12, 12] and arch["blocks"] == [2, 1, 0]
    np.testing.assert_allclose(_outputs(arch, params, x), f.apply(f.params, x), atol=1e-5)
    # the grown student is a regular nnx CNN that can be saved, loaded and trained
    module = models.to_module(models.template(arch), params)
    assert isinstance(module, models.CNN) and module.channels == (9, 12, 12)
    path = models.save(tmp_path / "grown.msgpack", module, {"grown": True})
    loaded, config = models.load(path)
    assert config["channels"] == [9, 12, 12] and config["grown"] is True
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(module(x)))
    assert models.count_params(loaded) == models.count_params(params)

    def loss(p):
        return -jnp.mean(jax.nn.log_softmax(_outputs(arch, p, x))[:, 0])

    g = jax.grad(loss)(params)
    # the head's rows of the last stage's new channels start at zero and get a gradient
    rows = g["head"]["kernel"].reshape(-1, 12, 3)[:, 8:]
    assert float(jnp.abs(rows).max()) > 0


def test_grow_module_and_same_key_grows_current_and_stable_alike():
    m = models.CNN((8, 8, 1), [4], 3, rngs=nnx.Rngs(0))
    x = _x((8, 8, 1))
    grown = growth.grow_module(m, "residual", jax.random.key(0))
    assert isinstance(grown, models.CNN) and grown.blocks == (1,)
    np.testing.assert_allclose(np.asarray(grown(x)), np.asarray(m(x)), atol=1e-5)
    a, b = _model((8, 8, 1), seed=0), _model((8, 8, 1), seed=1)
    key = jax.random.key(7)
    arch_a, pa = growth.grow(a.arch, a.params, "widen", key, 2)
    arch_b, pb = growth.grow(b.arch, b.params, "widen", key, 2)
    assert arch_a == arch_b
    np.testing.assert_array_equal(pa["convs"][0]["kernel"][..., 4:],
                                  pb["convs"][0]["kernel"][..., 4:])


def test_conv_growth_errors():
    f = _model((8, 8, 1))
    with pytest.raises(ValueError, match="smaller than the current width 4"):
        growth_conv.widen(f.arch, f.params, 0, 2, jax.random.key(0))
    with pytest.raises(ValueError, match="out of range"):
        growth_conv.widen(f.arch, f.params, 2, 8, jax.random.key(0))
    with pytest.raises(ValueError, match="params do not match"):
        growth_conv.deepen({**f.arch, "channels": [5, 6]}, f.params)
    pop = jax.tree.map(lambda a: jnp.stack([a, a]), f.params)
    with pytest.raises(ValueError, match="population axis"):
        growth.grow(f.arch, pop, "widen", jax.random.key(0))
    with pytest.raises(ValueError, match="method='zero' only"):
        growth.grow(f.arch, f.params, "widen", jax.random.key(0), method="split")
    mlp = models.functional(models.MLP(4, [3], 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="residual blocks grow a CNN"):
        growth.grow(mlp.arch, mlp.params, "residual", jax.random.key(0))
