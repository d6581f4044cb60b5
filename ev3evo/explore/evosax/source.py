"""Any evosax 0.3 algorithm as an EV3 source: :func:`evosax_source` picks the kind.

* population-based (``DifferentialEvolution``, ``PSO``, GAs):
  :func:`~ev3evo.explore.evosax.population.population_source`;
* several means (``SV_CMA_ES``, ``SV_Open_ES``):
  :func:`~ev3evo.explore.evosax.multi_mean.multi_mean_source`;
* one mean (``CMA_ES``, ``Open_ES``, ``SNES``, ...):
  :func:`~ev3evo.explore.evosax.distribution.distribution_source`, or with ``restart=``
  :func:`~ev3evo.explore.evosax.restarts.restarts` around one such source per population size.

Each kind's module documents its key derivation and re-centring; fitness signs, non-finite
fitness and candidates are handled as :mod:`~ev3evo.explore.evosax.driver` describes.

Example::

    import jax, jax.numpy as jnp, ev3evo
    src = ev3evo.evosax_source("CMA_ES", 8, params={"std_init": 0.5}, recenter=False)
    params = {"w": jnp.ones(3)}
    state = src.init(jax.random.key(0), params)
    for t in range(20):
        pop, state = src.ask(jax.random.key(t), state, params, None, jnp.ones(8, bool))
        fitness = -jnp.sum(pop["w"] ** 2, axis=1)          # EV3 fitness: higher is better
        fb = ev3evo.Feedback(fitness, jnp.zeros(8, bool), params, jnp.array(False))
        state = src.tell(jax.random.key(100 + t), state, pop, fb)
    assert float(jnp.sum(ev3evo.evosax_mean(state, params)["w"] ** 2)) < 3.0
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ...types import Params, Source
from . import driver
from . import schedule as sch
from .distribution import DistributionState, distribution_source
from .multi_mean import MultiMeanState, multi_mean_source, num_populations
from .population import PopulationState, population_source
from .restarts import RestartState, restarts

#: The state of an :func:`evosax_source`, by kind.
EvosaxState = DistributionState | MultiMeanState | PopulationState | RestartState


def evosax_source(
    algorithm,
    population_size: int,
    *,
    params=None,
    recenter: bool = True,
    name: str | None = None,
    restart=None,
    init_std: float | None = None,
    compile_params: bool = False,
    **algo_kwargs,
) -> Source:
    """An evosax algorithm as a :class:`~ev3evo.Source` (a JAX source: compiled in the step).

    Args:
      algorithm: a key of ``evosax.algorithms.algorithms`` (``"CMA_ES"``, ``"Open_ES"``,
        ``"DifferentialEvolution"``, ...), an algorithm class, or an instance (its
        ``solution`` template must match the model; restarts need a name or class).
      population_size: candidates per generation (for Stein-variational algorithms, per
        particle: the source has ``population_size * num_populations`` slots; with restarts,
        the first rung: the source has ``population_size * multiplier**(levels - 1)`` slots).
      params: evosax hyperparameter overrides, a dict of fields of the algorithm's
        ``default_params`` (e.g. ``{"std_init": 0.1}``) or a full ``Params`` object.
      recenter: re-centre on the accepted model after each tell (see each kind's module).
      name: the source's name (defaults to the algorithm's name).
      restart: ``None``, ``"ipop"``, ``"bipop"`` or :func:`ev3evo.ipop` / :func:`ev3evo.bipop`
        (distribution-based, single-mean algorithms only).
      init_std: the initial spread: ``std_init`` of distribution-based algorithms (when they
        have one), the noise of the initial population of population-based ones (default 0.1).
      compile_params: compute the algorithms' default hyperparameters (CMA-ES's weights and
        learning rates, ...) in one compiled program rather than with evosax's eager ``jnp``
        operations, each of which compiles on first use for its shapes (once per process and
        rung of a restart ladder). The values agree with evosax's up to float rounding, so the
        source is then not bit-for-bit identical to raw evosax (near-isotropic covariances
        amplify such rounding in the eigenvectors). :func:`ev3evo.minimize` uses it.
      **algo_kwargs: passed to the algorithm's constructor (``optimizer=``, ``std_schedule=``,
        ``num_populations=``, ``sampling_fn=``, ...).

    Returns:
      A :class:`~ev3evo.Source` whose state is one of :data:`EvosaxState` (read its centre
      with :func:`evosax_mean`).
    """
    spec = driver.spec(algorithm, population_size, params=params, init_std=init_std,
                       compile_params=compile_params, **algo_kwargs)  # fmt: skip
    schedule = sch.resolve(restart)
    name = name or spec.cls.__name__
    if schedule is not None:
        return restarts(spec, schedule, recenter=recenter, name=name)
    if spec.population_based:
        return population_source(spec, recenter=recenter, name=name)
    if num_populations(spec) is not None:
        return multi_mean_source(spec, recenter=recenter, name=name)
    return distribution_source(spec, recenter=recenter, name=name)


def evosax_mean(state: EvosaxState, params: Params) -> Params:
    """The current centre of an :func:`evosax_source`, as a pytree shaped like ``params``.

    Distribution-based: the mean (of the active rung with restarts; the average of several
    means); population-based: the best member.
    """
    if isinstance(state, RestartState):
        means = jnp.stack([rung.es.mean for rung in state.rungs])
        return ravel_pytree(params)[1](means[state.schedule.level])
    return driver.center(state.algorithm, state.es)
