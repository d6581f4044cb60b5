"""Output-layer moves of the distillation student (on its calibration head, so on any
student's logits), and the rollouts' minibatch sampler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.distillation import models
from ev3evo.distillation.sources import head_bias, temperature
from ev3evo.explore import sampling
from ev3evo.explore.stateful import on_params


@pytest.fixture(scope="module")
def student():

    from ev3evo.distillation.student import Student

    s = Student(models.build({"in_features": 6, "hidden": [5, 4], "num_classes": 3}), 3)
    x = jax.random.normal(jax.random.key(0), (50, 6))
    return s, x


def _ask(src, model, n):
    src = on_params(src)
    state = src.init(jax.random.key(1), model)
    pop, _ = jax.jit(src.ask)(jax.random.key(2), state, model, None, jnp.ones(n, bool))
    return pop


def test_temperature_rescales_logits_and_keeps_predictions(student):
    s, x = student
    model = s.initial
    pop = _ask(temperature(6, sigma=0.5), model, 6)
    base = s.apply(model, x)
    logits = jax.vmap(s.apply, in_axes=(0, None))(pop, x)
    scales = []
    for c in range(6):
        np.testing.assert_array_equal(np.argmax(logits[c], -1), np.argmax(base, -1))
        k = float(jnp.sum(logits[c] * base) / jnp.sum(base * base))
        np.testing.assert_allclose(np.asarray(logits[c]), k * np.asarray(base), rtol=1e-4,
                                   atol=1e-5)
        scales.append(k)
    assert len({round(k, 5) for k in scales}) == 6 and min(scales) > 0  # distinct, positive
    # the student's own layers are untouched: only the head moves
    moved = jax.tree.map(lambda p, q: not np.allclose(p, q[None]), pop.params["model"],
                         model.params["model"])
    assert not any(jax.tree.leaves(moved))


def test_head_bias_moves_only_the_class_biases(student):
    s, x = student
    model = s.initial
    pop = _ask(head_bias(4, sigma=0.1), model, 4)
    np.testing.assert_array_equal(np.asarray(pop.params["head"]["scale"]), 1.0)
    shift = np.asarray(pop.params["head"]["bias"])
    assert shift.shape == (4, 3) and np.all(shift != 0)
    logits = jax.vmap(s.apply, in_axes=(0, None))(pop, x)  # the logits move by the shift
    np.testing.assert_allclose(np.asarray(logits - s.apply(model, x)[None]),
                               np.broadcast_to(shift[:, None], logits.shape), atol=1e-5)


def test_the_moves_act_on_any_students_logits():
    # a user's nnx module whose output layer is not called "layers": the head is the same
    from flax import nnx

    from ev3evo.distillation.student import Student

    class Net(nnx.Module):
        def __init__(self):
            self.body = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
            self.classifier = nnx.Linear(4, 3, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.classifier(jnp.tanh(self.body(x)))

    s, x = Student(Net(), 3), jax.random.normal(jax.random.key(3), (20, 6))
    pop = _ask(temperature(3, sigma=0.5), s.initial, 3)
    ratio = jax.vmap(s.apply, in_axes=(0, None))(pop, x) / s.apply(s.initial, x)[None]
    np.testing.assert_allclose(np.asarray(ratio), np.asarray(pop.params["head"]["scale"])
                               [:, None, None] * np.ones(ratio.shape), rtol=1e-4)


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


def test_a_kd_chain_joins_the_sources_only_when_asked():
    from ev3evo.distillation.engine import distillation_sources
    from ev3evo.distillation.options import DistillConfig

    def sources(config):
        return {s.name: s for s in distillation_sources(lambda p, x: x @ p["w"], config)}

    assert "kd_chain" not in sources(DistillConfig())
    chain = sources(DistillConfig(kd_chain=40))["kd_chain"]
    assert chain.size == 1 and not chain.host
