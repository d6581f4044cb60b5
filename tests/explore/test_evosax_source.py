"""The evosax source: parity with raw evosax over the whole registry, sign, restarts, errors."""

from __future__ import annotations

import evosax.algorithms
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from evosax.algorithms import algorithms as REGISTRY
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm

import ev3evo
from ev3evo.explore.evosax import evosax_mean, evosax_source

POP = 6
PARAMS = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([[1.5], [0.25]])}  # a tiny pytree, d = 4
GENERATIONS = 3
EXTRA = {"SV_CMA_ES": {"num_populations": 2}, "SV_Open_ES": {"num_populations": 2}}


def _sphere(pop):
    """Minimized objective of a population pytree: sum of squares per member."""
    return sum(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1) for x in jax.tree.leaves(pop))


def _feedback(fitness, params):
    n = fitness.shape[0]
    return ev3evo.Feedback(fitness, jnp.zeros(n, bool), params, jnp.array(False))


def _strong(state):
    """The cast after init (evosax's weak-typed init state would compile a step twice)."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), state)


def _build(name):
    """The raw evosax object, built as the source builds it (zeros template)."""
    cls = REGISTRY[name]
    kwargs = dict(EXTRA.get(name, {}))
    template = jax.tree.map(jnp.zeros_like, PARAMS)
    if name == "RandomSearch":
        flat0, unravel0 = jax.flatten_util.ravel_pytree(template)
        kwargs["sampling_fn"] = lambda k: unravel0(flat0 + 0.1 * jax.random.normal(k, flat0.shape))
    return cls(population_size=POP, solution=template, **kwargs)


def _raw_run(es, keys):
    """Raw evosax ask/tell with the key derivation documented by each source kind's module."""
    cls = type(es)
    p = es.default_params
    key_init, key_asks, key_tells = keys
    flat, unravel = jax.flatten_util.ravel_pytree(PARAMS)
    out = []
    if issubclass(cls, PopulationBasedAlgorithm):
        key_population, _ = jax.random.split(key_init)
        noise = jax.random.normal(key_population, (POP, flat.size))
        pop = jax.vmap(unravel)(flat + 0.1 * noise)
        out.append(pop)
        state = _strong(es.init(key_tells[0], pop, _sphere(pop), p))  # first tell = init
        for g in range(1, GENERATIONS):
            pop, state = es.ask(key_asks[g], state, p)
            out.append(pop)
            state, _ = es.tell(key_tells[g], pop, _sphere(pop), state, p)
        return out
    if hasattr(es, "num_populations"):
        mean = jax.tree.map(lambda x: jnp.stack([x] * es.num_populations), PARAMS)
    else:
        mean = PARAMS
    state = _strong(es.init(key_init, mean, p))
    for g in range(GENERATIONS):
        pop, state = es.ask(key_asks[g], state, p)
        out.append(pop)
        state, _ = es.tell(key_tells[g], pop, _sphere(pop), state, p)
    return out


def _source_run(es, keys):
    src = evosax_source(es, POP, recenter=False)
    key_init, key_asks, key_tells = keys
    state = src.init(key_init, PARAMS)
    out = []
    for g in range(GENERATIONS):
        pop, state = src.ask(key_asks[g], state, PARAMS, None, jnp.ones(src.size, bool))
        out.append(pop)
        state = src.tell(key_tells[g], state, pop, _feedback(-_sphere(pop), PARAMS))
    return out


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_parity_with_raw_evosax(name):
    """Driven alone (recenter=False), the source asks exactly what raw evosax asks."""
    key = jax.random.key(7)
    k0, k1, k2 = jax.random.split(key, 3)
    keys = (k0, jax.random.split(k1, GENERATIONS), jax.random.split(k2, GENERATIONS))
    # One object for both runs: evosax jits with the object as a static argument, so sharing
    # it compiles ask/tell once. The source is built from the object exactly as from a name.
    es = _build(name)
    ours = _source_run(es, keys)
    raw = _raw_run(es, keys)
    assert len(ours) == len(raw) == GENERATIONS
    for g, (a, b) in enumerate(zip(ours, raw)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{name} gen {g}")
    # candidates actually move between generations (the comparison is not vacuous)
    assert not np.allclose(jax.tree.leaves(ours[0])[0], jax.tree.leaves(ours[-1])[0])


def _drive(src, params, generations, objective, key=0, active=None):
    """Drives a source alone with EV3-style fitness (higher is better) = -objective."""
    state = src.init(jax.random.key(key), params)
    ask = jax.jit(src.ask)
    tell = jax.jit(src.tell)
    active = jnp.ones(src.size, bool) if active is None else active
    for g in range(generations):
        pop, state = ask(jax.random.key(1000 + g), state, params, None, active)
        fitness = jnp.where(active, -objective(pop), -jnp.inf)
        state = tell(jax.random.key(2000 + g), state, pop, _feedback(fitness, params))
    return state, ask, tell


def test_sign_minimizes_a_quadratic_under_higher_is_better_fitness():
    """EV3 fitness is higher-is-better; evosax minimizes: the mean must approach the minimum."""
    params = {"w": jnp.full(3, 2.0)}
    src = evosax_source("CMA_ES", 8, params={"std_init": 0.5}, recenter=False)
    state, ask, tell = _drive(src, params, 25, _sphere)
    assert float(_sphere(jax.tree.map(lambda x: x[None], evosax_mean(state, params)))[0]) < 0.05
    # compiled once each: the state's dtypes are stable (no double-compilation trap)
    assert ask._cache_size() == 1 and tell._cache_size() == 1


def test_population_based_first_tell_uses_the_initial_population():
    """DE: the first ask is the initial population params + 0.1·N(0, I); the first tell
    evaluates it (no wasted generation); DE then improves on a quadratic."""
    params = {"w": jnp.full(3, 1.0)}
    src = evosax_source("DifferentialEvolution", 8, recenter=False)
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(8, bool))
    assert not bool(state.started)
    assert float(jnp.max(jnp.abs(pop["w"] - 1.0))) < 0.6
    state = src.tell(jax.random.key(2), state, pop, _feedback(-_sphere(pop), params))
    assert bool(state.started)
    np.testing.assert_allclose(state.es.fitness, _sphere(pop), rtol=1e-6)
    state, _, _ = _drive(src, params, 30, _sphere)
    assert float(jnp.min(state.es.fitness)) < float(jnp.min(_sphere(pop)))


@pytest.mark.parametrize("name", ["CMA_ES", "ARS", "DifferentialEvolution", "PSO"])
def test_inactive_and_nan_slots_never_poison_the_state(name):
    """-inf (inactive) and NaN fitness are ranked worst; an all-inactive generation is skipped."""
    params = {"w": jnp.full(4, 1.0)}
    src = evosax_source(name, 6)
    active = jnp.array([True, True, False, True, False, True])
    state, ask, tell = _drive(src, params, 4, _sphere, active=active)
    pop, state = ask(jax.random.key(5), state, params, None, jnp.ones(6, bool))
    fitness = (-_sphere(pop)).at[0].set(jnp.nan)
    state = tell(jax.random.key(6), state, pop, _feedback(fitness, params))
    for leaf in jax.tree.leaves(state.es):
        if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.ndim >= 1 and leaf.size > 1:
            assert not bool(jnp.any(jnp.isnan(leaf))), name
    before = state
    state = tell(jax.random.key(7), state, pop, _feedback(jnp.full(6, -jnp.inf), params))
    for a, b in zip(jax.tree.leaves(before.es), jax.tree.leaves(state.es)):
        np.testing.assert_array_equal(a, b)


def test_recenter_moves_the_mean_to_the_accepted_model():
    params = {"w": jnp.zeros(3)}
    src = evosax_source("Sep_CMA_ES", 6)  # recenter=True by default
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(6, bool))
    accepted = {"w": jnp.array([1.0, 2.0, 3.0])}
    state = src.tell(jax.random.key(2), state, pop, _feedback(-_sphere(pop), accepted))
    np.testing.assert_allclose(evosax_mean(state, params)["w"], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("kind", ["ipop", "bipop"])
def test_stalled_cma_es_restarts(kind):
    """A flat objective stalls CMA-ES (zero fitness spread): IPOP restarts on a larger rung
    (more finite candidates, NaN padding beyond), with std reset to std_init."""
    params = {"w": jnp.zeros(3)}
    schedule = getattr(ev3evo, kind)(levels=3, min_num_gens=2)
    src = evosax_source("CMA_ES", 4, params={"std_init": 0.3}, restart=schedule, recenter=False)
    assert src.size == 16
    state = src.init(jax.random.key(0), params)
    # IPOP runs compiled (lax.switch over rungs), BIPOP eagerly (the same code, Python branches)
    ask, tell = (jax.jit(src.ask), jax.jit(src.tell)) if kind == "ipop" else (src.ask, src.tell)
    pop, state = ask(jax.random.key(1), state, params, None, jnp.ones(16, bool))
    assert int(jnp.sum(jnp.isfinite(pop["w"][:, 0]))) == 4  # rung 0: 4 real, 12 NaN
    flat = lambda p: jnp.zeros(p["w"].shape[0])  # a flat objective: no spread
    levels, stds = [], []
    for g in range(6):
        pop, state = ask(jax.random.key(10 + g), state, params, None, jnp.ones(16, bool))
        state = tell(jax.random.key(20 + g), state, pop,
                         _feedback(jnp.where(jnp.isfinite(pop["w"][:, 0]), -flat(pop), -jnp.inf),
                                   params))
        levels.append(int(state.schedule.level))
        stds.append(float(state.rungs[int(state.schedule.level)].es.std))
    assert int(state.schedule.restarts) >= 2
    if kind == "ipop":
        assert levels[-1] == 2 and levels == sorted(levels)
        pop, _ = ask(jax.random.key(99), state, params, None, jnp.ones(16, bool))
        assert int(jnp.sum(jnp.isfinite(pop["w"][:, 0]))) == 16
    # a restart resets std to std_init (BIPOP small runs: std_init·10^(-2U) ≤ std_init)
    assert all(0.3e-2 - 1e-6 <= s <= 0.3 + 1e-6 for s in stds)


def test_compile_params_match_evosax_defaults_up_to_rounding():
    """compile_params=True computes every rung's default hyperparameters in one program:
    the same values as evosax's eager ones up to float rounding, overrides still applied."""
    params = {"w": jnp.zeros(3)}
    kw = {"params": {"c_mean": 0.9}, "restart": ev3evo.bipop(levels=3), "recenter": False}
    fast = evosax_source("CMA_ES", 6, compile_params=True, init_std=0.4, **kw)
    plain = evosax_source("CMA_ES", 6, init_std=0.4, **kw)
    key = jax.random.key(0)
    s_fast, s_plain = fast.init(key, params), plain.init(key, params)
    for a, b in zip(jax.tree.leaves(s_fast), jax.tree.leaves(s_plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    pop, _ = fast.ask(jax.random.key(1), s_fast, params, None, jnp.ones(fast.size, bool))
    assert int(jnp.sum(jnp.isfinite(pop["w"][:, 0]))) == 6
    from ev3evo.explore.evosax.driver import compiled_default_params

    es = [evosax.algorithms.CMA_ES(population_size=n, solution=jnp.zeros(3)) for n in (6, 12)]
    for got, want in zip(compiled_default_params(es), [e.default_params for e in es]):
        assert got.weights.shape == want.weights.shape
        np.testing.assert_allclose(got.weights, want.weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got.c_mu, want.c_mu, rtol=1e-5)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="CMA_ES"):
        evosax_source("CMA-ES", 8)
    with pytest.raises(ValueError, match="did you mean 'PSO'"):
        evosax_source("pso", 8)
    with pytest.raises(TypeError, match="evosax algorithm"):
        evosax_source(42, 8)
    with pytest.raises(ValueError, match="population_size"):
        evosax_source("CMA_ES", 0)
    with pytest.raises(ValueError, match="restart"):
        evosax_source("CMA_ES", 8, restart="sometimes")
    with pytest.raises(ValueError, match="single-distribution"):
        evosax_source("DifferentialEvolution", 8, restart="ipop")
    with pytest.raises(TypeError, match="num_populations"):
        evosax_source("SV_CMA_ES", 8)
    src = evosax_source("CMA_ES", 8, params={"sigma": 0.1})
    with pytest.raises(ValueError, match="unknown CMA_ES params"):
        src.init(jax.random.key(0), {"w": jnp.zeros(3)})
    src = evosax_source("Open_ES", 5)
    with pytest.raises(ValueError, match="rejected population_size=5"):
        src.init(jax.random.key(0), {"w": jnp.zeros(3)})


def test_the_decomposed_cma_criterion_is_evosax_s_on_the_state_s_own_decomposition():
    """ev3evo's CMA-ES stop criterion reads the B, D the ask stored; evosax's decomposes C
    again. On a state right after an ask (C unchanged since) they agree, stop or not."""
    import evosax.core.restart as evr
    from evosax.algorithms import CMA_ES

    from ev3evo.explore.evosax.schedule import cma_cond_decomposed

    es = CMA_ES(population_size=6, solution=jnp.zeros(4))
    params = es.default_params
    rp = evr.RestartParams()
    state = es.init(jax.random.key(0), jnp.zeros(4), params)
    rng = np.random.default_rng(0)
    for scale, std in [(1.0, 1.0), (1e-8, 1e-9), (1e8, 1e3)]:
        a = rng.normal(size=(4, 4)) * np.array([1.0, 1.0, 1.0, scale])
        st = state.replace(C=jnp.asarray(a @ a.T + 1e-3 * np.eye(4), jnp.float32),
                           std=jnp.float32(std))
        _, st = es.ask(jax.random.key(1), st, params)  # stores the decomposition of C
        ours = bool(cma_cond_decomposed(None, None, st, params, None, rp))
        theirs = bool(evr.cma_cond(None, None, st, params, None, rp))
        assert ours == theirs, (scale, std)
