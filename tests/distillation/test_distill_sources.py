"""Output-layer mutations of the distillation student, and the rollouts' minibatch sampler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.distillation import models
from ev3evo.distillation.sources import head_bias, temperature
from ev3evo.explore import sampling


@pytest.fixture(scope="module")
def student():
    f = models.functional(models.build({"in_features": 6, "hidden": [5, 4], "num_classes": 3}))
    x = jax.random.normal(jax.random.key(0), (50, 6))
    return f, x


def _ask(src, params, n):
    state = src.init(jax.random.key(1), params)
    pop, _ = jax.jit(src.ask)(jax.random.key(2), state, params, None, jnp.ones(n, bool))
    return pop


def test_temperature_rescales_logits_and_keeps_predictions(student):
    f, x = student
    pop = _ask(temperature(6, sigma=0.5), f.params, 6)
    base = f.apply(f.params, x)
    logits = jax.vmap(f.apply, in_axes=(0, None))(pop, x)
    scales = []
    for c in range(6):
        np.testing.assert_array_equal(np.argmax(logits[c], -1), np.argmax(base, -1))
        s = float(jnp.sum(logits[c] * base) / jnp.sum(base * base))
        np.testing.assert_allclose(np.asarray(logits[c]), s * np.asarray(base), rtol=1e-4,
                                   atol=1e-5)
        scales.append(s)
    assert len({round(s, 5) for s in scales}) == 6 and min(scales) > 0  # distinct, positive
    # the hidden layers are untouched
    for c in range(6):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(pop["layers"][0][name][c], f.params["layers"][0][name])


def test_head_bias_moves_only_the_output_bias(student):
    f, _ = student
    pop = _ask(head_bias(4, sigma=0.1), f.params, 4)
    last = max(f.params["layers"])
    for i, layer in f.params["layers"].items():
        for name, value in layer.items():
            got = np.asarray(pop["layers"][i][name])
            moved = not np.allclose(got, np.asarray(value)[None])
            assert moved == (i == last and name == "bias"), (i, name)


def test_windows_are_uniform_subsets_without_replacement():
    n, bs, draws = 37, 8, 4000
    batch = {"i": jnp.arange(n)}
    counts = np.zeros(n)
    prep = jax.jit(lambda k: sampling.prepare(k, batch, bs))
    draw = jax.jit(jax.vmap(lambda k, d: sampling.draw(k, d, bs), in_axes=(0, None)))
    for r in range(draws // 200):
        data = prep(jax.random.key(r))
        assert data["i"].shape == (n + bs - 1,)
        mbs = np.asarray(draw(jax.random.split(jax.random.key(10_000 + r), 200), data)["i"])
        assert all(len(set(row)) == bs for row in mbs)  # no repeats inside a minibatch
        counts += np.bincount(mbs.ravel(), minlength=n)
    expected = draws * bs / n
    # every example equally likely (chi-square-sized deviation: 5 sd of a binomial count)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    # a batch no larger than the minibatch is used whole
    assert sampling.prepare(jax.random.key(0), batch, n) is batch
    assert sampling.draw(jax.random.key(0), batch, None) is batch
