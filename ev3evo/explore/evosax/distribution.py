"""A single-mean distribution-based evosax algorithm (CMA-ES, OpenAI-ES, SNES, ...) as a source.

The source samples ``population_size`` candidates around one mean per step and tells evosax
their fitness through :mod:`~ev3evo.explore.evosax.driver` (sign, non-finite fitness and rows,
keys passed through unchanged: ``init(key)`` → ``es.init(key, params, es_params)``,
``ask(key)`` → ``es.ask(key, ...)``, ``tell(key)`` → ``es.tell(key, ...)``).

**Re-centring** (``recenter=True``): after each tell the mean is set to the accepted model
``feedback.params``, so the search explores around whatever EV3 accepted last.

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.explore.evosax import driver
    from ev3evo.explore.evosax.distribution import distribution_source
    src = distribution_source(driver.spec("SNES", 6, init_std=0.3), recenter=False, name="snes")
    params = {"w": jnp.ones(3)}
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(6, bool))
    fb = ev3evo.Feedback(-jnp.sum(pop["w"] ** 2, axis=1), jnp.zeros(6, bool), params,
                         jnp.array(False))
    state = src.tell(jax.random.key(2), state, pop, fb)
    assert pop["w"].shape == (6, 3) and int(state.es.generation_counter) == 1
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ...types import Feedback, Source
from . import driver
from ._branch import like


class DistributionState(NamedTuple):
    """State of a :func:`distribution_source`.

    Attributes:
      es: the evosax state (``mean``, ``std``, ... as the algorithm keeps them).
      algorithm: the :class:`~ev3evo.explore.evosax.driver.Algorithm` (static: no leaves).
    """

    es: Any
    algorithm: driver.Algorithm


def distribution_source(spec: driver.AlgorithmSpec, *, recenter: bool = True,
                        name: str | None = None) -> Source:  # fmt: skip
    """A single-mean distribution-based evosax algorithm as a :class:`~ev3evo.Source`.

    Args:
      spec: from :func:`ev3evo.explore.evosax.driver.spec` (a distribution-based algorithm
        with one mean).
      recenter: set the mean to the accepted model after each tell.
      name: the source's name (default: the algorithm's).

    Returns:
      A source with ``spec.population_size`` slots and a :class:`DistributionState`.
    """

    def start(key, algorithm, params):
        return DistributionState(driver.init(key, algorithm, params), algorithm)

    def ask(key, state, params, batch, active):
        del params, batch, active  # every slot is sampled; EV3 evaluates only the active ones
        population, es = driver.ask(key, state.algorithm, state.es)
        return population, state._replace(es=es)

    def tell(key, state, population, feedback: Feedback):
        es = driver.tell(key, state.algorithm, state.es, population, feedback.fitness)
        state = state._replace(es=es)
        return recentered(state, ravel_pytree(feedback.params)[0]) if recenter else state

    init = driver.source_init(spec, start)
    return Source(init, ask, tell, spec.population_size, name or spec.cls.__name__)


def recentered(state: DistributionState, flat_mean: jax.Array) -> DistributionState:
    """The state with its mean set to ``flat_mean`` (a ravelled solution)."""
    mean = state.es.mean
    return state._replace(es=state.es.replace(mean=jnp.asarray(flat_mean, mean.dtype)))


def restarted(key, state: DistributionState, flat_mean: jax.Array,
              std_scale=1.0) -> DistributionState:  # fmt: skip
    """The search started afresh at ``flat_mean``, with ``std_init`` scaled by ``std_scale``
    (``es.init(key, mean, es_params)``, cast to the state's dtypes)."""
    algorithm = state.algorithm
    params = algorithm.params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=params.std_init * std_scale)
    fresh = driver.init(key, algorithm, algorithm.unravel(flat_mean), params=params)
    return state._replace(es=like(fresh, state.es))
