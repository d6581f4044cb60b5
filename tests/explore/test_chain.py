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
