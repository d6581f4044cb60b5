"""IPOP / BIPOP restarts: a wrapper around distribution sources, one per rung of a ladder.

**Static shapes.** JAX compiles a fixed population size, and an evosax algorithm object bakes
its population size into its weights. The wrapper therefore holds one
:func:`~ev3evo.explore.evosax.distribution.distribution_source` per rung of the ladder
``population_size * multiplier**l`` for ``l < levels`` (each compiled once, the active rung
chosen with ``lax.switch``), and always returns ``size`` = the largest rung. Slots beyond the
active rung's population are NaN and marked *unused* (``Source.used``): EV3 neither evaluates
them nor counts them as invalid, and :func:`ev3evo.minimize` spends no evaluation on them.

**A tell.** The active rung is told its slots. evosax's stop criteria (see
:mod:`~ev3evo.explore.evosax.schedule`) then look at the generation as evosax was told it and
at the told state; the mean is re-centred on the accepted model (``recenter=True``); when a
criterion fired, :func:`~ev3evo.explore.evosax.schedule.next_run` picks the next rung (and
BIPOP's scale of ``std_init``), and that rung's search starts afresh at the centre: the
accepted model (``recenter=True``) or the model the source was initialized at.

**Keys.** The active rung gets the ask and tell keys unchanged; a restart draws from
``fold_in(key, 1)`` (the schedule) and ``fold_in(key, 2)`` (the new run's ``es.init``) of the
tell key. ``init`` gives every rung the same key.

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.explore.evosax import driver
    from ev3evo.explore.evosax.restarts import restarts
    src = restarts(driver.spec("CMA_ES", 4), ev3evo.ipop(levels=3, min_num_gens=5))
    assert src.size == 16  # 4 * 2**(3 - 1) slots: the largest population of the ladder
    params = {"w": jnp.zeros(3)}
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(16, bool))
    assert int(jnp.sum(jnp.isfinite(pop["w"][:, 0]))) == 4  # rung 0: 4 candidates, 12 NaN

References: Auger & Hansen, "A restart CMA evolution strategy with increasing population size",
CEC 2005; Hansen, "Benchmarking a BI-population CMA-ES on the BBOB-2009 function testbed",
GECCO 2009.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from evosax.algorithms.distribution_based.base import DistributionBasedAlgorithm
from jax.flatten_util import ravel_pytree

from ... import _tree
from ...types import Feedback, Source
from . import driver
from . import schedule as sch
from ._branch import cond, switch
from .distribution import DistributionState, distribution_source, recentered, restarted
from .multi_mean import num_populations


class RestartState(NamedTuple):
    """State of a :func:`restarts` source.

    Attributes:
      rungs: one :class:`~ev3evo.explore.evosax.distribution.DistributionState` per rung of
        the ladder (every one is kept, as ``lax.switch`` needs them all; the active one is
        ``rungs[schedule.level]``).
      schedule: the :class:`~ev3evo.explore.evosax.schedule.ScheduleState`.
      center: the ravelled model the source was initialized at (restarts return there when
        ``recenter=False``).
    """

    rungs: tuple[DistributionState, ...]
    schedule: sch.ScheduleState
    center: jax.Array


def restarts(spec: driver.AlgorithmSpec, schedule: sch.RestartSchedule, *,
             recenter: bool = True, name: str | None = None) -> Source:  # fmt: skip
    """A distribution-based evosax algorithm that restarts when its run stalls.

    Args:
      spec: from :func:`ev3evo.explore.evosax.driver.spec`: a single-mean
        distribution-based algorithm given by name or class; ``spec.population_size`` is the
        first rung's.
      schedule: :func:`ev3evo.ipop` or :func:`ev3evo.bipop`.
      recenter: set the mean to the accepted model after each tell, and restart there.
      name: the source's name (default: the algorithm's).

    Returns:
      A source with ``population_size * multiplier**(levels - 1)`` slots and a
      :class:`RestartState`.
    """
    _check(spec)
    sizes = sch.ladder(schedule, spec.population_size)
    rungs = tuple(distribution_source(spec._replace(population_size=lam), recenter=False)
                  for lam in sizes)  # fmt: skip
    size = sizes[-1]

    def init(key, params):
        states = tuple(r.init(key, params) for r in rungs)
        return RestartState(states, sch.init_state(), ravel_pytree(params)[0])

    def ask(key, state, params, batch, active):
        def rung(level):
            def branch(states):
                lam = sizes[level]
                population, st = rungs[level].ask(key, states[level], params, batch, active[:lam])
                return _padded(population, size), _put(states, level, st)

            return branch

        branches = [rung(level) for level in range(len(rungs))]
        population, states = switch(state.schedule.level, branches, state.rungs)
        return population, state._replace(rungs=states)

    def tell(key, state, population, feedback: Feedback):
        flat_model = ravel_pytree(feedback.params)[0]

        def rung(level):
            def branch(states):
                lam = sizes[level]
                told = feedback._replace(fitness=feedback.fitness[:lam],
                                         selected=feedback.selected[:lam])  # fmt: skip
                st, fired, count = _tell_rung(key, rungs[level], states[level],
                                              _tree.slice_(population, 0, lam), told,
                                              schedule, state.schedule)  # fmt: skip
                if recenter:
                    st = recentered(st, flat_model)
                return _put(states, level, st), fired, count

            return branch

        branches = [rung(level) for level in range(len(rungs))]
        states, fired, count = switch(state.schedule.level, branches, state.rungs)
        progress = state.schedule._replace(evaluations=state.schedule.evaluations + count)
        center = flat_model if recenter else state.center

        def restart(args):
            states, progress = args
            level, std_scale, progress = sch.next_run(jax.random.fold_in(key, 1), schedule,
                                                      progress)  # fmt: skip
            key_init = jax.random.fold_in(key, 2)
            fresh = [lambda s, i=i: _put(s, i, restarted(key_init, s[i], center, std_scale))
                     for i in range(len(rungs))]  # fmt: skip
            return switch(level, fresh, states), progress

        states, progress = cond(fired, restart, lambda args: args, (states, progress))
        return state._replace(rungs=states, schedule=progress)

    def used(state):  # the active rung's population; the padding beyond it is unused
        rung_size = jnp.asarray(sizes, jnp.int32)[state.schedule.level]
        return jnp.arange(size) < rung_size

    return Source(init, ask, tell, size, name or spec.cls.__name__, used=used)


def _check(spec: driver.AlgorithmSpec) -> None:
    single = issubclass(spec.cls, DistributionBasedAlgorithm) and num_populations(spec) is None
    if not single:
        raise ValueError(
            f"restarts apply to single-distribution distribution-based algorithms; "
            f"{spec.cls.__name__} is not one"
        )
    if spec.instance is not None:
        raise ValueError("restarts rebuild the algorithm per population size: pass its name")
    if spec.params is not None and not isinstance(spec.params, dict):
        raise ValueError("with restarts pass params as a dict (weights depend on the size)")


def _tell_rung(key, rung: Source, state: DistributionState, population, feedback: Feedback,
               schedule: sch.RestartSchedule, progress: sch.ScheduleState):  # fmt: skip
    """Tells one rung; returns its state, whether a stop criterion fired, and how many slots
    had a finite fitness."""
    told = driver.generation(state.algorithm, state.es, population, feedback.fitness)
    new = rung.tell(key, state, population, feedback)
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(told.population)
    minimized = jnp.where(told.finite, told.fitness, jnp.inf)
    fired = sch.should_restart(schedule, flat, minimized, new.es, state.algorithm.params,
                               progress)  # fmt: skip
    return new, fired, jnp.sum(told.finite).astype(jnp.int32)


def _put(states: tuple, index: int, state) -> tuple:
    new = list(states)
    new[index] = state
    return tuple(new)


def _padded(population, size: int):
    """The population with NaN rows appended up to ``size`` members."""
    lam = _tree.num_members(population)
    if lam == size:
        return population
    return jax.tree.map(
        lambda x: jnp.concatenate([x, jnp.full((size - lam, *x.shape[1:]), jnp.nan, x.dtype)]),
        population,
    )
