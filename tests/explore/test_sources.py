"""The shared table: every registered source must pass every row.

Rows: the source's own ``ask``/``tell`` under ``jit`` (and NaN / ``-inf`` fitness in ``tell``
leaves no NaN in its state); the whole EV3 step under ``jit`` with no recompilation on later
calls, with the state's structure unchanged; several EV3 steps inside ``lax.scan`` and
``vmap`` over keys, matching the step-by-step run; non-finite candidates (NaN or inf
parameters, or a metric that returns NaN) ranked worst (``-inf`` fitness) and never selected.

Host sources (``source.host``) cannot be traced: their ``jit``/``scan``/``vmap`` rows are
skipped, the others run eagerly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _registry import build, example_problem, registered_sources
from conftest import finite_tree, no_nan_tree, same_structure

import ev3evo
from ev3evo.types import Feedback, Source

NAMES = registered_sources()
# Slots overwritten by ``poisoned``: NaN parameters, +inf parameters, and huge-but-finite
# parameters that make ``nan_accuracy`` return NaN (a metric failing on some candidates).
POISON = {0: jnp.nan, 1: jnp.inf, 2: 1e30}
STEPS = 3


def nan_accuracy(apply) -> ev3evo.Metric:
    """Accuracy, but NaN for a model with any parameter above 1e20 in magnitude."""

    def score(params, batch):
        correct = (jnp.argmax(apply(params, batch["x"]), -1) == batch["y"]).astype(jnp.float32)
        big = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(params)])) > 1e20
        return jnp.where(big, jnp.nan, correct)

    return ev3evo.metrics.per_example("accuracy", score)


def poisoned_slots(size: int) -> list[int]:
    """The slots ``poisoned`` overwrites; the last slot is always left clean."""
    return [i for i in POISON if i < size - 1]


def poisoned(source: Source) -> Source:
    """Wraps a source: some slots become non-finite; ``tell`` also records the fitness it got."""
    slots = poisoned_slots(source.size)
    fill = np.zeros(source.size, np.float32)
    mask = np.zeros(source.size, bool)
    for i in slots:
        fill[i], mask[i] = POISON[i], True

    def init(key, params):
        return source.init(key, params), jnp.zeros(source.size, jnp.float32)

    def ask(key, state, params, batch, active):
        pop, inner = source.ask(key, state[0], params, batch, active)

        def poison(x):
            m = jnp.reshape(jnp.asarray(mask), (-1,) + (1,) * (x.ndim - 1))
            v = jnp.reshape(jnp.asarray(fill, x.dtype), (-1,) + (1,) * (x.ndim - 1))
            return jnp.where(m, v, x)

        return jax.tree.map(poison, pop), (inner, state[1])

    def tell(key, state, population, feedback):
        inner = source.tell(key, state[0], population, feedback)
        return inner, jnp.asarray(feedback.fitness, jnp.float32)

    return Source(init, ask, tell, source.size, source.name, source.host)


class Run:
    """An engine over poisoned sources, run ``STEPS`` steps one at a time.

    All JAX sources share one engine (``mix`` of every one of them), so the step is compiled
    once for the whole table rather than once per source; each host source gets its own
    (eager) engine. ``slots[name]`` is the source's slot range in the population.
    """

    def __init__(self, sources: list[Source]):
        self.problem = example_problem()
        self.sources = sources
        self.engine = ev3evo.EV3(
            [poisoned(s) for s in sources], metrics=[nan_accuracy(self.problem.apply)]
        )
        offsets = self.engine.source.layout.offsets
        self.slots = {
            s.name: range(offsets[i], offsets[i + 1]) for i, s in enumerate(self.sources)
        }
        self.index = {s.name: i for i, s in enumerate(self.sources)}
        self.keys = jax.random.split(jax.random.key(42), STEPS)
        self.state0 = self.engine.init(jax.random.key(0), self.problem.params)
        states, infos = [self.state0], []
        for k in self.keys:
            s, info = self.engine.step(k, states[-1], self.problem.batch, self.problem.batch)
            states.append(s)
            infos.append(jax.device_get(info))
        self.states, self.infos = states, infos

    def bad_slots(self, name: str) -> list[int]:
        """Population indices of the poisoned slots of source ``name``."""
        lo = self.slots[name].start
        return [lo + i for i in poisoned_slots(len(self.slots[name]))]


@pytest.fixture(scope="module")
def runs():
    """name -> the :class:`Run` holding that source (built lazily, shared by the module)."""
    problem = example_problem()
    built = {name: build(name, problem) for name in NAMES}
    cache: dict[str, Run] = {}

    def get(name: str) -> tuple[Run, Source]:
        source = built[name]
        if name not in cache:
            if source.host:
                cache[name] = Run([source])
            else:
                jax_names = [n for n in NAMES if not built[n].host]
                shared = Run([built[n] for n in jax_names])
                cache.update(dict.fromkeys(jax_names, shared))
        run = cache[name]
        return run, run.sources[run.index[source.name]]

    return get


def _skip_host(source: Source, what: str):
    if source.host:
        pytest.skip(f"host source {source.name!r} runs Python on the host: no {what}")


def test_registry_is_not_empty_and_sources_are_large_enough():
    assert {"gradient", "gaussian", "cauchy", "sparse", "per_layer"} <= set(NAMES)
    problem = example_problem()
    for name in NAMES:
        source = build(name, problem)
        assert source.size >= 2, f"{name}: the table needs at least 2 slots"
    with pytest.raises(ValueError, match="unknown example source 'nope'"):
        build("nope", problem)


@pytest.mark.parametrize("name", NAMES)
def test_ask_tell_under_jit_survive_nan_fitness(name):
    """The source alone: jitted ask → tell(NaN, -inf fitness) → tell(rollback) → ask."""
    problem = example_problem()
    source = build(name, problem)
    params, batch, size = problem.params, problem.batch, source.size
    state0 = source.init(jax.random.key(0), params)
    fitness = jnp.arange(size, dtype=jnp.float32).at[0].set(jnp.nan)
    fitness = fitness.at[min(1, size - 1)].set(-jnp.inf)
    selected = jnp.arange(size) == size - 1

    def cycle(key, state):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        active = jnp.ones(size, bool)
        pop, state = source.ask(k1, state, params, batch, active)
        moved = jax.tree.map(lambda x: x[size - 1], pop)
        state = source.tell(k2, state, pop, Feedback(fitness, selected, moved, jnp.asarray(False)))
        told = state
        none = jnp.full(size, -jnp.inf)
        state = source.tell(
            k3, state, pop, Feedback(none, jnp.zeros(size, bool), params, jnp.asarray(True))
        )
        pop2, state = source.ask(k4, state, params, batch, active)
        return pop, told, pop2, state

    fn = cycle if source.host else jax.jit(cycle)
    for seed in (1, 2):
        pop, told, pop2, state = fn(jax.random.key(seed), state0)
        for p in (pop, pop2):
            assert same_structure(p, jax.tree.map(lambda x: jnp.zeros((size, *x.shape), x.dtype),
                                                  params)), f"{name}: population shape"
            assert finite_tree(p), f"{name}: non-finite candidates"
        assert no_nan_tree(told), f"{name}: NaN in the state after tell(NaN fitness)"
        assert same_structure(told, state0) and same_structure(state, state0), name
    if not source.host:
        assert fn._cache_size() == 1, f"{name}: ask/tell recompiled on the second call"


@pytest.mark.parametrize("name", NAMES)
def test_step_jit_no_recompile_and_state_structure(runs, name):
    run, source = runs(name)
    engine, i = run.engine, run.index[source.name]
    if not engine.host:
        assert engine.step._cache_size() == 1, (
            f"{STEPS} steps compiled {engine.step._cache_size()} programs"
        )
    for before, after in zip(run.states, run.states[1:]):
        assert same_structure(before, after), "EV3 state structure changed"
        assert same_structure(before.sources.parts[i], after.sources.parts[i]), f"{name}: state changed"
    last = run.states[-1]
    assert int(last.step) == STEPS
    assert finite_tree(last.current) and finite_tree(last.stable)
    assert no_nan_tree(last.sources.parts[i]), f"{name}: NaN in its state"


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_candidates_ranked_worst_never_selected(runs, name):
    run, source = runs(name)
    bad, i = run.bad_slots(source.name), run.index[source.name]
    clean = np.setdiff1d(np.arange(source.size), poisoned_slots(source.size))
    assert bad, "nothing poisoned"
    all_bad = [j for s in run.sources for j in run.bad_slots(s.name)]
    for info, state in zip(run.infos, run.states[1:]):
        assert int(info.winner) not in all_bad, f"selected non-finite slot {int(info.winner)}"
        assert int(info.num_invalid) == len(all_bad)
        fitness = np.asarray(state.sources.parts[i][1])  # what this source was told
        assert np.all(fitness[poisoned_slots(source.size)] == -np.inf), fitness
        assert np.all(np.isfinite(fitness[clean])), fitness
        if int(info.winner) in run.slots[source.name]:
            assert fitness[int(info.winner) - run.slots[source.name].start] == fitness.max()


@pytest.mark.parametrize("name", NAMES)
def test_scan_and_vmap_over_keys_match_sequential_steps(runs, name):
    run, source = runs(name)
    _skip_host(source, "jax.lax.scan / jax.vmap")
    if not hasattr(run, "scanned"):  # one compilation for every JAX source
        engine, batch = run.engine, run.problem.batch

        def trajectory(keys):
            return jax.lax.scan(lambda s, k: engine.step(k, s, batch, batch), run.state0, keys)

        other = jax.random.split(jax.random.key(7), STEPS)
        keys = jnp.stack([jax.random.key_data(run.keys), jax.random.key_data(other)])
        run.scanned = jax.jit(jax.vmap(lambda kd: trajectory(jax.random.wrap_key_data(kd))))(keys)
    final, infos = run.scanned
    i = run.index[source.name]
    assert np.all(np.asarray(final.step) == STEPS)
    assert np.asarray(infos.accepted).shape == (2, STEPS)
    first = jax.tree.map(lambda x: x[0], final)
    assert same_structure(first.sources.parts[i], run.states[-1].sources.parts[i])
    np.testing.assert_array_equal(np.asarray(infos.winner[0]), [int(x.winner) for x in run.infos])
    for a, b in zip(jax.tree.leaves(first.current), jax.tree.leaves(run.states[-1].current)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert finite_tree(final.current) and finite_tree(final.stable)
    assert no_nan_tree(final.sources.parts[i])
    assert not np.isin(np.asarray(infos.winner), run.bad_slots(source.name)).any()


IMPROVE_STEPS = 10


@pytest.mark.parametrize("name", NAMES)
def test_improves_a_simple_objective(name):
    """The source alone drives EV3 to a better model: the toy problem's negative loss rises."""
    problem = example_problem()
    source = build(name, problem)
    metric = ev3evo.metrics.neg_loss(problem.apply)
    engine = ev3evo.EV3([source], [metric])
    batch = problem.batch
    state = engine.init(jax.random.key(0), problem.params)
    start = float(ev3evo.metrics.value(metric, metric.stats(problem.params, batch)))
    if source.host:
        for t in range(IMPROVE_STEPS):
            state, _ = engine.step(jax.random.key(t), state, batch, batch)
    else:  # one compiled trajectory
        keys = jax.random.split(jax.random.key(1), IMPROVE_STEPS)
        state, _ = jax.jit(lambda s, k: jax.lax.scan(
            lambda s, k: engine.step(k, s, batch, batch), s, k))(state, keys)
    end = float(ev3evo.metrics.value(metric, metric.stats(state.current, batch)))
    assert end > start + 1e-3, f"{name}: negative loss {start:.4f} -> {end:.4f}"
