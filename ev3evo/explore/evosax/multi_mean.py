"""A several-mean evosax algorithm (Stein-variational ``SV_CMA_ES``, ``SV_Open_ES``) as a source.

These algorithms move ``num_populations`` means (particles) together, repelled by a kernel,
each sampling ``population_size`` candidates: the source has
``population_size * num_populations`` slots, grouped by mean. Every mean starts at the model;
keys go to evosax unchanged, as for a single mean.

**Re-centring** (``recenter=True``): after each tell all means are shifted by the same vector,
so that their average is the accepted model (their spread is kept).

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.explore.evosax import driver
    from ev3evo.explore.evosax.multi_mean import multi_mean_source
    src = multi_mean_source(driver.spec("SV_Open_ES", 4, num_populations=2))
    assert src.size == 8
    params = {"w": jnp.ones(3)}
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, None, jnp.ones(8, bool))
    assert state.es.mean.shape == (2, 3)

Reference: Braun et al., "Stein Variational Evolution Strategies", 2024.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..._checks import check_positive_int
from ...types import Feedback, Source
from . import driver


class MultiMeanState(NamedTuple):
    """State of a :func:`multi_mean_source`.

    Attributes:
      es: the evosax state (``mean`` of shape ``(num_populations, d)``, ...).
      algorithm: the :class:`~ev3evo.explore.evosax.driver.Algorithm` (static: no leaves).
    """

    es: Any
    algorithm: driver.Algorithm


def num_populations(spec: driver.AlgorithmSpec) -> int | None:
    """The number of means of a several-mean algorithm (``None`` for other algorithms).

    Raises:
      TypeError: a several-mean algorithm given by name or class without ``num_populations=``.
    """
    if not spec.cls.__name__.startswith("SV_"):
        return None
    n = spec.kwargs.get("num_populations")
    if spec.instance is not None:
        n = spec.instance.num_populations
    if n is None:
        raise TypeError(f"{spec.cls.__name__} needs num_populations= (the number of particles)")
    return check_positive_int(n, "num_populations")


def multi_mean_source(spec: driver.AlgorithmSpec, *, recenter: bool = True,
                      name: str | None = None) -> Source:  # fmt: skip
    """A several-mean evosax algorithm as a :class:`~ev3evo.Source`.

    Args:
      spec: from :func:`ev3evo.explore.evosax.driver.spec`, with ``num_populations=``.
      recenter: shift the means after each tell so that their average is the accepted model.
      name: the source's name (default: the algorithm's).

    Returns:
      A source with ``population_size * num_populations`` slots and a
      :class:`MultiMeanState`.
    """
    size = spec.population_size * num_populations(spec)

    def start(key, algorithm, params):
        return MultiMeanState(driver.init(key, algorithm, params), algorithm)

    def ask(key, state, params, batch, active):
        del params, batch, active  # every slot is sampled; EV3 evaluates only the active ones
        population, es = driver.ask(key, state.algorithm, state.es)
        return population, state._replace(es=es)

    def tell(key, state, population, feedback: Feedback):
        es = driver.tell(key, state.algorithm, state.es, population, feedback.fitness)
        if recenter:
            es = shifted(es, ravel_pytree(feedback.params)[0])
        return state._replace(es=es)

    init = driver.source_init(spec, start)
    return Source(init, ask, tell, size, name or spec.cls.__name__)


def shifted(es, flat_model: jax.Array):
    """The evosax state with every mean shifted so that their average is ``flat_model``."""
    mean = es.mean
    return es.replace(mean=jnp.asarray(mean + (flat_model - jnp.mean(mean, axis=0)), mean.dtype))
