"""The nevergrad host source: parity with raw nevergrad, foreign tells, dump/load, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import nevergrad as ng
import numpy as np
import pytest

import ev3evo
from ev3evo.explore import nevergrad as ngsrc

PARAMS = {"a": jnp.array([0.5, -1.0], jnp.float32), "b": jnp.array([[1.5], [0.25]], jnp.float32)}
X0 = np.array([0.5, -1.0, 1.5, 0.25])
POP = 4


def _loss(x):
    return float(np.sum(np.asarray(x, np.float64) ** 2))


def _flat(pop):
    """Population pytree → (n, d) numpy rows (leaf order a, b as in X0)."""
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in jax.tree.leaves(pop)],
                          axis=1)


def _feedback(pop, params=PARAMS, params_fitness=None):
    fitness = -np.sum(_flat(pop).astype(np.float64) ** 2, axis=1)
    n = fitness.shape[0]
    return ev3evo.Feedback(fitness, np.zeros(n, bool), params, np.array(False), params_fitness)


@pytest.mark.parametrize("name", ["TwoPointsDE", "OnePlusOne", "CMA"])
def test_parity_with_raw_nevergrad(name):
    """Same seed, same asks: the source's candidates are raw nevergrad's (as float32)."""
    src = ev3evo.nevergrad_source(name, POP, seed=3, tell_foreign=False)
    state = src.init(jax.random.key(0), PARAMS)
    param = ng.p.Array(init=X0)
    param.random_state = np.random.RandomState(3)
    raw = ng.optimizers.registry[name](parametrization=param, budget=None, num_workers=POP)
    try:
        for g in range(3):
            pop, state = src.ask(jax.random.key(g), state, PARAMS, None, jnp.ones(POP, bool))
            asked = [raw.ask() for _ in range(POP)]
            expected = np.stack([c.value for c in asked]).astype(np.float32)
            np.testing.assert_allclose(_flat(pop), expected, rtol=1e-6, err_msg=f"gen {g}")
            state = src.tell(jax.random.key(g), state, pop, _feedback(pop))
            for c in asked:
                raw.tell(c, _loss(np.float32(c.value)))
        assert int(state.step) == 3
        # both recommend the same point after the same history
        ours = ev3evo.nevergrad_optimizer(state).recommend().value
        np.testing.assert_allclose(ours, raw.recommend().value, rtol=1e-6)
    finally:
        ev3evo.nevergrad_close(state)
        del raw


def test_only_active_slots_are_asked_and_inactive_copy_params():
    src = ev3evo.nevergrad_source("TwoPointsDE", POP, seed=0)
    state = src.init(jax.random.key(0), PARAMS)
    active = jnp.array([True, False, True, False])
    pop, state = src.ask(jax.random.key(0), state, PARAMS, None, active)
    opt = ev3evo.nevergrad_optimizer(state)
    assert opt.num_ask == 2
    flat = _flat(pop)
    np.testing.assert_array_equal(flat[1], X0.astype(np.float32))
    np.testing.assert_array_equal(flat[3], X0.astype(np.float32))
    fb = _feedback(pop)
    fb = fb._replace(fitness=np.where(np.asarray(active), fb.fitness, -np.inf))
    state = src.tell(jax.random.key(0), state, pop, fb)
    assert opt.num_tell == 2
    ev3evo.nevergrad_close(state)


def test_foreign_model_is_told_as_not_asked_point():
    """The accepted model from another source reaches nevergrad (tell-not-asked), once."""
    src = ev3evo.nevergrad_source("TwoPointsDE", POP, seed=0)
    state = src.init(jax.random.key(0), PARAMS)
    opt = ev3evo.nevergrad_optimizer(state)
    other = {"a": jnp.array([0.01, 0.0]), "b": jnp.array([[0.0], [0.02]])}
    for g in range(2):  # the same foreign model twice: told once
        pop, state = src.ask(jax.random.key(g), state, PARAMS, None, jnp.ones(POP, bool))
        state = src.tell(jax.random.key(g), state, pop,
                         _feedback(pop, params=other, params_fitness=jnp.array(-5e-4)))
    assert opt.num_tell == 2 * POP + 1
    assert opt.num_tell_not_asked == 1
    # the told point is now nevergrad's best
    np.testing.assert_allclose(opt.recommend().value, [0.01, 0.0, 0.0, 0.02], atol=1e-7)
    ev3evo.nevergrad_close(state)


def test_invalid_fitness_is_told_as_failure():
    src = ev3evo.nevergrad_source("OnePlusOne", POP, seed=0)
    state = src.init(jax.random.key(0), PARAMS)
    pop, state = src.ask(jax.random.key(0), state, PARAMS, None, jnp.ones(POP, bool))
    fb = _feedback(pop)
    fitness = fb.fitness.copy()
    fitness[0], fitness[1] = np.nan, -np.inf
    fb = fb._replace(fitness=fitness)
    state = src.tell(jax.random.key(0), state, pop, fb)  # no warning (warnings are errors)
    opt = ev3evo.nevergrad_optimizer(state)
    assert opt.num_tell == POP
    assert opt.current_bests["pessimistic"].mean < ngsrc.FAILED_LOSS
    ev3evo.nevergrad_close(state)


def _two_generations(seed=5):
    src = ev3evo.nevergrad_source("TwoPointsDE", POP, seed=seed)
    state = src.init(jax.random.key(0), PARAMS)
    for g in range(2):
        pop, state = src.ask(jax.random.key(g), state, PARAMS, None, jnp.ones(POP, bool))
        state = src.tell(jax.random.key(g), state, pop, _feedback(pop))
    return src, state


def test_dump_and_load_hooks_resume_the_same_asks():
    src, state = _two_generations()
    data = src.dump(state)
    assert isinstance(data["optimizer"], ev3evo.Pickled)  # marked: io restores it only on trust
    assert set(data) == {"optimizer", "foreign", "foreign_told", "last_foreign"}
    pop_a, _ = src.ask(jax.random.key(9), state, PARAMS, None, jnp.ones(POP, bool))
    with pytest.raises(ValueError, match="asked-but-untold"):
        src.dump(state)
    restored = src.load(state, data)  # the snapshot, under a new handle
    assert int(restored.step) == 2 and int(restored.handle) != int(state.handle)
    pop_b, _ = src.ask(jax.random.key(9), restored, PARAMS, None, jnp.ones(POP, bool))
    np.testing.assert_array_equal(_flat(pop_a), _flat(pop_b))
    with pytest.raises(ValueError, match="no optimizer marked as a pickle"):
        src.load(state, {**data, "optimizer": data["optimizer"].data})  # bare bytes: refused
    ev3evo.nevergrad_close(state)
    ev3evo.nevergrad_close(restored)
    with pytest.raises(ValueError, match="no nevergrad optimizer with handle"):
        src.ask(jax.random.key(0), state, PARAMS, None, jnp.ones(POP, bool))


def test_dump_and_load_files_resume_the_same_asks(tmp_path):
    src, state = _two_generations()
    path = tmp_path / "optimizer.pkl"
    ev3evo.nevergrad_dump(state, path)
    pop_a, state = src.ask(jax.random.key(9), state, PARAMS, None, jnp.ones(POP, bool))
    ev3evo.nevergrad_load(state, path, PARAMS)  # back to the snapshot, same handle
    pop_b, _ = src.ask(jax.random.key(9), state, PARAMS, None, jnp.ones(POP, bool))
    np.testing.assert_array_equal(_flat(pop_a), _flat(pop_b))
    ev3evo.nevergrad_close(state)
    with pytest.raises(ValueError, match="no nevergrad optimizer with handle"):
        src.ask(jax.random.key(0), state, PARAMS, None, jnp.ones(POP, bool))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_nevergrads_own_errors_surface_at_init():
    """An optimizer that cannot ask several candidates at once fails in ``init``, before any
    step, not later inside a step (where the engine would isolate it as a host error)."""
    src = ev3evo.nevergrad_source("Powell", POP, seed=0)
    with pytest.raises(ValueError, match="does not support parallelization"):
        src.init(jax.random.key(0), PARAMS)


def test_bad_input():
    with pytest.raises(ValueError, match="TwoPointsDE"):
        ev3evo.nevergrad_source("TwoPointDE", 4)
    with pytest.raises(TypeError, match="registry"):
        ev3evo.nevergrad_source(ng.optimizers.CMA, 4)
    with pytest.raises(ValueError, match="population_size"):
        ev3evo.nevergrad_source("CMA", 0)
    with pytest.raises(ValueError, match="seed"):
        ev3evo.nevergrad_source("CMA", 4, seed=-1)


def test_the_numpy_crash_of_an_optimizer_becomes_a_clear_error(monkeypatch):
    """The error nevergrad 1.0's MetaModel raises under numpy >= 2.4, raised by a real CMA
    optimizer's ask (the test environment pins numpy < 2.4, where MetaModel itself works)."""
    src = ev3evo.nevergrad_source("CMA", 4, seed=0)
    state = src.init(jax.random.key(0), PARAMS)
    opt = ngsrc._TABLE.get(state).optimizer

    def crashing_ask():
        raise TypeError("only 0-dimensional arrays can be converted to Python scalars")

    monkeypatch.setattr(opt, "ask", crashing_ask)
    try:
        with pytest.raises(RuntimeError, match=r"CMA failed inside its MetaModel.*numpy >= 2\.4"):
            src.ask(jax.random.key(1), state, PARAMS, None, jnp.ones(4, bool))
    finally:
        ev3evo.nevergrad_close(state)


@pytest.mark.skipif(
    tuple(int(v) for v in np.__version__.split(".")[:2]) < (2, 4),
    reason="the NGOpt/MetaModel crash only happens with numpy >= 2.4",
)
def test_ngopt_numpy_crash_becomes_a_clear_error():
    src = ev3evo.nevergrad_source("MetaModel", 8, seed=0, budget=400)
    state = src.init(jax.random.key(0), PARAMS)
    try:
        with pytest.raises(RuntimeError, match=r"numpy >= 2\.4"):
            for g in range(10):
                pop, state = src.ask(jax.random.key(g), state, PARAMS, None, jnp.ones(8, bool))
                state = src.tell(jax.random.key(g), state, pop, _feedback(pop))
    finally:
        ev3evo.nevergrad_close(state)


@pytest.mark.parametrize("name", ["NGOpt", "Shiwa", "NGOptRW"])
def test_optimizers_that_need_a_budget_are_refused_without_one(name):
    """nevergrad's selectors choose their algorithm from the budget: without one every ask
    fails (an AssertionError inside nevergrad). Refused when the source is built, with the fix."""
    with pytest.raises(ValueError, match=rf"nevergrad {name} needs a budget: pass budget="):
        ev3evo.nevergrad_source(name, POP)
    src = ev3evo.nevergrad_source(name, POP, budget=40)  # with one it is accepted and asks
    state = src.init(jax.random.key(0), PARAMS)
    try:
        pop, state = src.ask(jax.random.key(1), state, PARAMS, None, jnp.ones(POP, bool))
        assert _flat(pop).shape == (POP, 4)
    finally:
        ev3evo.nevergrad_close(state)


def test_seeds_are_32_bit():
    ev3evo.nevergrad_source("CMA", 4, seed=2**32 - 1)
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 4294967295"):
        ev3evo.nevergrad_source("CMA", 4, seed=2**32)
