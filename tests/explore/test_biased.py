"""Deliberately biased gradients: the optax mask transforms and guided ES."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import ev3evo
from ev3evo.explore import biased
from ev3evo.types import Feedback


def test_sparse_mask_keeps_the_asked_fraction_and_is_unbiased():
    grads = {"a": jnp.ones((200, 50)), "b": jnp.ones(100)}
    tx = biased.sparse_gradient_mask(keep=0.3, seed=1)
    state = tx.init(grads)
    out, state2 = jax.jit(tx.update)(grads, state)
    flat, _ = ravel_pytree(out)
    kept = np.asarray(flat != 0)
    assert abs(kept.mean() - 0.3) < 0.02
    np.testing.assert_allclose(np.asarray(flat)[kept], 1 / 0.3, rtol=1e-6)
    # The key advances: the next mask differs.
    out2, _ = tx.update(grads, state2)
    assert not np.array_equal(np.asarray(ravel_pytree(out2)[0] != 0), kept)


def test_layer_mask_passes_exactly_one_layer():
    grads = {"a": jnp.ones(3), "b": jnp.ones(4), "c": jnp.ones(5)}
    tx = biased.layer_gradient_mask(seed=0)
    state = tx.init(grads)
    seen = set()
    for _ in range(12):
        out, state = tx.update(grads, state)
        nonzero = [k for k, v in out.items() if bool(jnp.any(v != 0))]
        assert len(nonzero) == 1
        np.testing.assert_array_equal(out[nonzero[0]], grads[nonzero[0]])
        seen.add(nonzero[0])
    assert len(seen) >= 2  # the chosen layer changes between steps


@pytest.mark.parametrize(
    "make",
    [
        lambda: biased.masked(optax.sgd(0.1), keep=0.5),
        lambda: biased.per_layer(optax.sgd(0.1)),
        lambda: biased.noisy(optax.sgd(0.1), eta=0.1),
        lambda: biased.signed(optax.sgd(0.1)),
        lambda: biased.clipped(optax.sgd(0.1), max_norm=0.5),
    ],
)
def test_biased_optimizers_still_descend_a_quadratic(make):
    tx = make()
    params = {"x": jnp.full(8, 3.0)}
    loss = lambda p: jnp.sum(p["x"] ** 2)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    start = loss(params)
    for _ in range(60):
        params, state = step(params, state)
    assert loss(params) < 0.5 * start


def test_masks_reject_bad_rates():
    with pytest.raises(ValueError, match="keep"):
        biased.sparse_gradient_mask(keep=1.5)
    with pytest.raises(ValueError, match="keep"):
        biased.sparse_gradient_mask(keep=0.0)


def _quadratic_problem(d=40):
    target = jnp.linspace(-1.0, 1.0, d)
    loss = lambda p, batch: jnp.sum((p["x"] - target) ** 2)
    return {"x": jnp.zeros(d)}, loss, target


def test_guided_es_samples_in_the_gradient_subspace_when_alpha_is_zero():
    params, loss, _ = _quadratic_problem()
    src = biased.guided_es(loss, 9, sigma=0.1, subspace=1, alpha=0.0)
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(9, bool))
    g = np.array(jax.grad(loss)(params, None)["x"])
    g /= np.linalg.norm(g)
    deltas = np.asarray(pop["x"][1:9])  # the antithetic pairs
    for delta in deltas:
        cos = abs(delta @ g) / np.linalg.norm(delta)
        assert cos > 0.999  # one gradient spans the whole search space when alpha = 0
    np.testing.assert_allclose(pop["x"][1:5], -pop["x"][5:9], atol=1e-6)  # antithetic


def test_guided_es_step_follows_the_fitness_not_the_surrogate():
    """The ES step estimates the gradient of the *fitness* it is told, whatever the surrogate."""
    d = 20
    params = {"x": jnp.zeros(d)}
    surrogate = lambda p, batch: jnp.sum(p["x"] ** 2 * 0.0 + p["x"])  # gradient = ones
    src = biased.guided_es(surrogate, 41, sigma=0.05, subspace=2, alpha=0.5)
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(41, bool))
    direction = -jnp.ones(d) / jnp.sqrt(d)  # fitness increases along -ones
    fitness = ravel_pytree(pop)[0].reshape(41, d) @ direction
    fb = Feedback(fitness, jnp.zeros(41, bool), params, jnp.asarray(False))
    state = src.tell(jax.random.key(2), state, pop, fb)
    step = np.asarray(state.step)
    cos = step @ np.asarray(direction) / np.linalg.norm(step)
    assert cos > 0.5
    # The next ask proposes that step in slot 0.
    pop2, _ = src.ask(jax.random.key(3), state, params, None, jnp.ones(41, bool))
    np.testing.assert_allclose(pop2["x"][0], step, atol=1e-6)


def test_guided_es_ignores_non_finite_fitness():
    params, loss, _ = _quadratic_problem(10)
    src = biased.guided_es(loss, 7, sigma=0.1)
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(7, bool))
    fitness = jnp.array([0.0, jnp.nan, 1.0, -jnp.inf, 0.5, 0.2, 0.1])
    fb = Feedback(fitness, jnp.zeros(7, bool), params, jnp.asarray(False))
    state = src.tell(jax.random.key(2), state, pop, fb)
    assert np.all(np.isfinite(np.asarray(state.step)))


def test_guided_es_rejects_too_small_populations():
    with pytest.raises(ValueError, match="size >= 3"):
        ev3evo.guided_es(lambda p, b: 0.0, 2)
