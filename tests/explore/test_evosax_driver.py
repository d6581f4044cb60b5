"""The evosax driver: a host loop, compile-once steps, EV3's sign and NaN conventions, keys,
where the algorithm objects are built, and the subpackage's docstring examples."""

from __future__ import annotations

import evosax.algorithms
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from evosax.algorithms.base import EvolutionaryAlgorithm

import ev3evo
from ev3evo.explore.evosax import driver


def _shifted_sphere(x: np.ndarray) -> np.ndarray:
    """A numpy objective (minimized) of a (P, d) batch, optimum at 0.5."""
    return np.sum((x - 0.5) ** 2, axis=1)


def test_host_loop_improves_a_numpy_objective():
    algo = driver.algorithm("CMA_ES", 8, np.zeros(4, np.float32), init_std=0.3)
    state = driver.init(jax.random.key(0), algo, np.full(4, -1.0, np.float32))
    seen = []
    for g in range(40):
        key_ask, key_tell = jax.random.split(jax.random.key(g))
        x, state = driver.ask(key_ask, algo, state)
        f = _shifted_sphere(np.asarray(x))
        seen.append(f.min())
        state = driver.tell(key_tell, algo, state, x, -f)  # higher is better: -f
    end = float(_shifted_sphere(np.asarray(driver.center(algo, state))[None])[0])
    assert end < 1e-3 < seen[0]
    # evosax minimized what it was told: its best is the smallest objective value seen
    assert float(state.best_fitness) == pytest.approx(min(seen), rel=1e-5)


@pytest.mark.parametrize("name", ["CMA_ES", "Open_ES", "DifferentialEvolution"])
def test_strong_state_compiles_a_jitted_step_once(name):
    algo = driver.algorithm(name, 6, jnp.zeros(3))
    if algo.population_based:
        pop = driver.initial_population(jax.random.key(1), algo, jnp.zeros(3), 0.1)
        state = driver.init_population(jax.random.key(0), algo, pop)
    else:
        state = driver.init(jax.random.key(0), algo, jnp.zeros(3))
    assert not any(getattr(leaf, "weak_type", False) for leaf in jax.tree.leaves(state))

    @jax.jit
    def step(key, algorithm, state, first):
        key_ask, key_tell = jax.random.split(key)
        x, state = driver.ask(key_ask, algorithm, state, first=first)
        return driver.tell(key_tell, algorithm, state, x, -jnp.sum(x**2, axis=1), first=first)

    first = jnp.asarray(algo.population_based)
    for g in range(3):
        state = step(jax.random.key(g), algo, state, first)
        first = jnp.asarray(False)
    assert step._cache_size() == 1


def test_sign_and_non_finite_conventions():
    """evosax is told -fitness; a slot without a finite fitness (or with a non-finite
    candidate) gets the worst finite value (distribution) or +inf (population), and its row is
    replaced by the mean (distribution) or the parent member (population)."""
    dist = driver.algorithm("CMA_ES", 4, jnp.zeros(2))
    state = driver.init(jax.random.key(0), dist, jnp.array([1.0, 2.0]))
    x = jnp.array([[0.0, 0.0], [jnp.nan, 1.0], [3.0, 3.0], [4.0, 4.0]])
    fitness = jnp.array([-1.0, -2.0, jnp.nan, -jnp.inf])
    told = driver.generation(dist, state, x, fitness)
    np.testing.assert_array_equal(told.finite, [True, False, False, False])
    np.testing.assert_array_equal(told.fitness, [1.0, 1.0, 1.0, 1.0])  # the worst finite: 1
    np.testing.assert_array_equal(told.population[1:], jnp.tile(jnp.array([1.0, 2.0]), (3, 1)))
    np.testing.assert_array_equal(told.population[0], [0.0, 0.0])
    told = driver.generation(dist, state, x[:2], jnp.array([-1.0, 2.0]))  # NaN row, finite f
    np.testing.assert_array_equal(told.fitness, [1.0, 1.0])
    np.testing.assert_array_equal(told.population[1], [1.0, 2.0])

    pop_algo = driver.algorithm("DifferentialEvolution", 4, jnp.zeros(2))
    members = jnp.arange(8.0).reshape(4, 2)
    pstate = driver.init_population(jax.random.key(0), pop_algo, members)
    told = driver.generation(pop_algo, pstate, x, fitness)
    np.testing.assert_array_equal(told.fitness, [1.0, jnp.inf, jnp.inf, jnp.inf])
    np.testing.assert_array_equal(told.population[1:], members[1:])


def test_a_generation_without_finite_fitness_is_not_told():
    algo = driver.algorithm("CMA_ES", 4, jnp.zeros(2))
    state = driver.init(jax.random.key(0), algo, jnp.ones(2))
    x, state = driver.ask(jax.random.key(1), algo, state)
    none = jnp.array([-jnp.inf, jnp.nan, -jnp.inf, -jnp.inf])
    assert driver.tell(jax.random.key(2), algo, state, x, none) is state  # eager: kept as is
    kept = jax.jit(driver.tell)(jax.random.key(2), algo, state, x, none)
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    told = driver.tell(jax.random.key(2), algo, state, x, none.at[0].set(1.0))
    assert int(told.generation_counter) == int(state.generation_counter) + 1
    assert not any(bool(jnp.any(jnp.isnan(leaf))) for leaf in jax.tree.leaves(told))


def test_keys_pass_through_to_evosax():
    """Three generations through the driver ask what raw evosax asks for the same keys."""
    algo = driver.algorithm("SNES", 6, jnp.zeros(3))
    es, params = algo.es, algo.params
    mean = jnp.array([0.5, -1.0, 2.0])
    ours = driver.init(jax.random.key(3), algo, mean)
    raw = driver.strong(es.init(jax.random.key(3), mean, params))
    for g in range(3):
        k_ask, k_tell = jax.random.split(jax.random.key(10 + g))
        x, ours = driver.ask(k_ask, algo, ours)
        y, raw = es.ask(k_ask, raw, params)
        np.testing.assert_array_equal(x, y)
        ours = driver.tell(k_tell, algo, ours, x, -jnp.sum(x**2, axis=1))
        raw, _ = es.tell(k_tell, y, jnp.sum(y**2, axis=1), raw, params)
    np.testing.assert_allclose(driver.center(algo, ours), raw.mean, rtol=1e-6)


def test_algorithm_is_static_and_keyed():
    a = driver.algorithm("CMA_ES", 4, jnp.zeros(2))
    b = driver.algorithm("CMA_ES", 4, jnp.zeros(2))
    assert a != b and a == a and jax.tree.leaves(a) == []
    spec = driver.spec("CMA_ES", 4)
    c, d = driver.build(spec, jnp.zeros(2), key="k"), driver.build(spec, jnp.zeros(2), key="k")
    assert c == d and hash(c) == hash(d) and c.es is not d.es
    fn = jax.jit(lambda algorithm, x: x + algorithm.params.std_init)
    for algorithm in (a, b, c, d):
        fn(algorithm, jnp.zeros(()))
    assert fn._cache_size() == 3  # a, b, and c == d
    assert "CMA_ES" in repr(a) and "num_dims=2" in repr(a)


def test_source_builds_its_algorithm_at_init_once_per_shape(monkeypatch):
    """Built while init is traced (once per shape), never by ask or tell: evosax's jitted ask
    (keyed on the algorithm object) compiles once for eager calls over two inits."""
    built = []
    build = driver.build
    monkeypatch.setattr(driver, "build", lambda *a, **k: built.append(1) or build(*a, **k))
    src = ev3evo.evosax_source("Sep_CMA_ES", 6, recenter=False)
    params = {"w": jnp.zeros(3)}
    evosax_ask = EvolutionaryAlgorithm.__dict__["ask"]
    before = evosax_ask._cache_size()
    for seed in (0, 1):
        state = src.init(jax.random.key(seed), params)
        for g in range(2):
            pop, state = src.ask(jax.random.key(g), state, params, None, jnp.ones(6, bool))
            fb = ev3evo.Feedback(
                -jnp.sum(pop["w"] ** 2, axis=1), jnp.zeros(6, bool), params, jnp.asarray(False)
            )
            state = jax.jit(src.tell)(jax.random.key(g), state, pop, fb)
    assert len(built) == 1
    assert evosax_ask._cache_size() - before == 1
    other = src.init(jax.random.key(0), {"w": jnp.zeros(5)})  # a new shape: built again
    assert len(built) == 2 and other.algorithm.es.num_dims == 5
    assert src.init(jax.random.key(0), params).algorithm == state.algorithm


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="did you mean 'CMA_ES'"):
        driver.spec("cma_es", 4)
    with pytest.raises(TypeError, match="evosax algorithm"):
        driver.spec(3.0, 4)
    with pytest.raises(ValueError, match="unknown SNES params"):
        driver.algorithm("SNES", 4, jnp.zeros(2), params={"sigma": 1.0})
    with pytest.raises(ValueError, match="rejected population_size=3"):
        driver.algorithm("Open_ES", 3, jnp.zeros(2))
    es = evosax.algorithms.CMA_ES(population_size=4, solution=jnp.zeros(3))
    with pytest.raises(ValueError, match="has 3 entries; the model has 2"):
        driver.algorithm(es, 4, jnp.zeros(2))
    with pytest.raises(TypeError, match="population-based: use init_population"):
        algo = driver.algorithm("PSO", 4, jnp.zeros(2))
        driver.init(jax.random.key(0), algo, jnp.zeros(2))
