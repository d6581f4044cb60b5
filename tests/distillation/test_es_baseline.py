"""The ES baseline (``baselines.es_train``) asks and tells what a raw evosax loop does."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from evosax.algorithms import algorithms
from jax.flatten_util import ravel_pytree

from ev3evo.assess import metrics as M
from ev3evo.assess.metrics import utility, value
from ev3evo.distillation import baselines as B


def _toy():
    apply = lambda p, x: x @ p["w"] + p["b"]
    x = jax.random.normal(jax.random.key(0), (120, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    batch = {"x": x, "y": y, "teacher": 3.0 * jax.nn.one_hot(y, 2)}
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    return apply, batch, params


def _raw(key, params, batch, metric, algorithm, population_size, std_init, chunk, generations):
    """es_train's loop written against evosax directly (same keys, same selection)."""
    flat, unravel = ravel_pytree(params)
    cls = algorithms[algorithm]
    accepted = inspect.signature(cls.__init__).parameters
    options = {}
    if "optimizer" in accepted:
        options["optimizer"] = optax.adam(0.03)
    if "std_schedule" in accepted:
        options["std_schedule"] = optax.constant_schedule(std_init)
    es = cls(population_size=population_size, solution=flat, **options)
    p = es.default_params
    if hasattr(p, "std_init"):
        p = p.replace(std_init=std_init)
    key, k_init = jax.random.split(key)
    state = jax.tree.map(lambda a: jnp.asarray(a, jnp.result_type(a)), es.init(k_init, flat, p))

    @jax.jit
    def run_chunk(key, state):
        def one(state, k):
            k_ask, k_tell = jax.random.split(k)
            pop, state = es.ask(k_ask, state, p)
            f = jax.vmap(lambda x: -value(metric, metric.stats(unravel(x), batch)))(pop)
            return es.tell(k_tell, pop, f, state, p)[0], None

        return jax.lax.scan(one, state, jax.random.split(key, chunk))[0]

    def val(params):
        return float(utility(metric, value(metric, metric.stats(params, batch))))

    best_params, best = params, val(params)
    for _ in range(generations // chunk):
        key, sub = jax.random.split(key)
        state = run_chunk(sub, state)
        u = val(unravel(state.mean))
        if np.isfinite(u) and u > best:
            best, best_params = u, unravel(state.mean)
    return best_params, best


@pytest.mark.parametrize("algorithm", ["Open_ES", "SNES"])
def test_es_train_matches_a_raw_evosax_loop(algorithm):
    apply, batch, params = _toy()
    acc = M.accuracy(apply)
    key = jax.random.key(4)
    ours = B.es_train(key, params, batch, batch, acc, time_budget=600.0, algorithm=algorithm,
                      population_size=16, std_init=0.3, chunk=5, max_generations=20)
    want, best = _raw(key, params, batch, acc, algorithm, 16, 0.3, 5, 20)
    assert ours.steps == 20 and ours.value == pytest.approx(best)
    for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(ours.params)[0], 0.0)  # the search moved


def test_es_train_rejects_a_population_based_algorithm():
    apply, batch, params = _toy()
    with pytest.raises(ValueError, match="distribution-based"):
        B.es_train(jax.random.key(0), params, batch, batch, M.accuracy(apply), time_budget=1.0,
                   algorithm="DifferentialEvolution")
