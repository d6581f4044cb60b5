"""Gradient chains: their own trajectories, continued every step whatever the gate decides."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _registry import example_problem

from ev3evo.explore import sampling
from ev3evo.explore.chain import gradient_chain
from ev3evo.explore.gradient import rollout
from ev3evo.types import Feedback


def test_a_chain_continues_its_own_trajectory_and_ignores_the_current_model():
    problem = example_problem()
    opt = optax.adam(0.05)
    source = gradient_chain(problem.loss, [opt], steps=3, batch_size=16)
    state = source.init(jax.random.key(0), problem.params)
    elsewhere = jax.tree.map(lambda x: x + 5.0, problem.params)  # a current model far away
    run = rollout(lambda m, b, d: problem.loss(m, b), opt, 3, 16)
    model, opt_state = problem.params, opt.init(problem.params)
    for step in range(3):
        key = jax.random.key(step + 1)
        current = problem.params if step % 2 else elsewhere
        population, state = source.ask(key, state, current, problem.batch, jnp.zeros(1, bool))
        # lost, rolled back: nothing the gate says moves it
        state = source.tell(key, state, population, Feedback(
            jnp.full(1, -jnp.inf), jnp.zeros(1, bool), current, jnp.ones((), bool)))
        data_key, k = jax.random.split(key)
        model, opt_state, _ = run(jax.random.split(k, 1)[0], model, opt_state, None,
                                  sampling.prepare(data_key, problem.batch, 16))
        for a, b in zip(jax.tree.leaves(population), jax.tree.leaves(model)):
            np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert int(state.steps) == 3
    start = float(problem.loss(problem.params, problem.batch))
    assert float(problem.loss(model, problem.batch)) < start


def test_bad_chains_are_refused():
    problem = example_problem()
    with pytest.raises(ValueError, match="at least one optimizer"):
        gradient_chain(problem.loss, [], steps=2)
    with pytest.raises(TypeError, match="callable"):
        gradient_chain(3, [optax.sgd(0.1)], steps=2)
    with pytest.raises(TypeError, match="an optax"):
        gradient_chain(problem.loss, ["adam"], steps=2)
    with pytest.raises(ValueError, match="steps"):
        gradient_chain(problem.loss, [optax.sgd(0.1)], steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        gradient_chain(problem.loss, [optax.sgd(0.1)], steps=2, batch_size=-8)


def test_an_averaged_chain_offers_the_moving_average_of_its_iterates():
    """With ``average=d`` the second half of the population is ``a ← d a + (1 − d) θ`` over
    every optimizer step from the initial model, the first half the iterates themselves."""
    problem = example_problem()
    opt, decay, steps = optax.sgd(0.05), 0.8, 3
    source = gradient_chain(problem.loss, [opt], steps=steps, batch_size=16, average=decay)
    assert source.size == 2
    state = source.init(jax.random.key(0), problem.params)
    key = jax.random.key(1)
    population, state = source.ask(key, state, problem.params, problem.batch, jnp.ones(2, bool))
    # the same trajectory by hand, one optimizer step at a time
    data_key, k = jax.random.split(key)
    batch = sampling.prepare(data_key, problem.batch, 16)
    model, opt_state, average = problem.params, opt.init(problem.params), problem.params
    for step_key in jax.random.split(jax.random.split(k, 1)[0], steps):
        grads = jax.grad(problem.loss)(model, sampling.draw(step_key, batch, 16))
        updates, opt_state = opt.update(grads, opt_state, model)
        model = optax.apply_updates(model, updates)
        average = jax.tree.map(lambda a, m: decay * a + (1 - decay) * m, average, model)
    for got, iterate, mean in zip(jax.tree.leaves(population), jax.tree.leaves(model),
                                  jax.tree.leaves(average)):  # fmt: skip
        np.testing.assert_allclose(np.asarray(got[1]), np.asarray(mean), rtol=1e-5, atol=1e-6)
        assert not np.allclose(np.asarray(got[1]), np.asarray(iterate))
    with pytest.raises(ValueError, match=r"average must be a decay in \(0, 1\)"):
        gradient_chain(problem.loss, [opt], steps=2, average=1.0)
