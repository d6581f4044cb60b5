"""A population-based evosax algorithm (differential evolution, PSO, GAs) as a source.

evosax's population-based ``init`` needs an *evaluated* population, which a source does not
have at ``init``. So ``init(key)`` splits ``key_population, key_init = jax.random.split(key)``
and draws the initial population ``params + init_std · N(0, I)`` (ravelled, one draw of shape
``(population_size, d)`` from ``key_population``; ``init_std`` defaults to 0.1). The first
``ask`` returns that population unchanged; the first ``tell`` calls
``es.init(key, population, -fitness, es_params)`` with the tell key, so no evaluation is
wasted. Later asks and tells pass their keys to evosax unchanged.

**Re-centring** (``recenter=True``): a population has no mean; after each tell the accepted
model replaces the worst member (ranked as the best member so far) unless it is already in the
population.

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.explore.evosax import driver
    from ev3evo.explore.evosax.population import population_source
    src = population_source(driver.spec("DifferentialEvolution", 8), recenter=False)
    params = {"w": jnp.ones(3)}
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(8, bool))
    fb = ev3evo.Feedback(-jnp.sum(pop["w"] ** 2, axis=1), jnp.zeros(8, bool), params,
                         jnp.array(False))
    state = src.tell(jax.random.key(2), state, pop, fb)
    assert bool(state.started)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ...types import Feedback, Source
from . import driver


class PopulationState(NamedTuple):
    """State of a :func:`population_source`.

    Attributes:
      es: the evosax state (``population``, ``fitness``, ...).
      started: whether a generation with a finite fitness has been told (before that, the
        state holds the initial population, not yet evaluated).
      algorithm: the :class:`~ev3evo.explore.evosax.driver.Algorithm` (static: no leaves).
    """

    es: Any
    started: jax.Array
    algorithm: driver.Algorithm


def population_source(spec: driver.AlgorithmSpec, *, recenter: bool = True,
                      name: str | None = None) -> Source:  # fmt: skip
    """A population-based evosax algorithm as a :class:`~ev3evo.Source`.

    Args:
      spec: from :func:`ev3evo.explore.evosax.driver.spec` (a population-based algorithm);
        ``spec.init_std`` is the noise of the initial population.
      recenter: put the accepted model into the population after each tell.
      name: the source's name (default: the algorithm's).

    Returns:
      A source with ``spec.population_size`` slots and a :class:`PopulationState`.
    """

    def start(key, algorithm, params):
        key_population, key_init = jax.random.split(key)
        population = driver.initial_population(key_population, algorithm, params, spec.spread)
        es = driver.init_population(key_init, algorithm, population)
        return PopulationState(es, jnp.asarray(False), algorithm)

    def ask(key, state, params, batch, active):
        del params, batch, active  # every slot is sampled; EV3 evaluates only the active ones
        first = ~state.started
        population, es = driver.ask(key, state.algorithm, state.es, first=first)
        return population, state._replace(es=es)

    def tell(key, state, population, feedback: Feedback):
        algorithm, fitness = state.algorithm, feedback.fitness
        es = driver.tell(key, algorithm, state.es, population, fitness, first=~state.started)
        if recenter:
            es = injected(es, ravel_pytree(feedback.params)[0])
        told = jnp.any(driver.finite(population, fitness))
        return state._replace(es=es, started=state.started | told)

    init = driver.source_init(spec, start)
    return Source(init, ask, tell, spec.population_size, name or spec.cls.__name__)


def injected(es, flat_model: jax.Array):
    """The evosax population with ``flat_model`` in place of its worst member (and that
    member's fitness set to the best so far), unless the model is already a member."""
    present = jnp.any(jnp.all(es.population == flat_model, axis=1))
    worst = jnp.argmax(es.fitness)
    best = jnp.min(es.fitness)
    population = es.population.at[worst].set(flat_model.astype(es.population.dtype))
    fitness = es.fitness.at[worst].set(best)
    return es.replace(
        population=jnp.where(present, es.population, population),
        fitness=jnp.where(present, es.fitness, fitness),
    )
