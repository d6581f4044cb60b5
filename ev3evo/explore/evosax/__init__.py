"""evosax 0.3 algorithms as EV3 sources, one module per kind, over one shared driver.

* :mod:`~ev3evo.explore.evosax.driver`: building an algorithm, ``init``/``ask``/``tell`` with
  EV3's fitness convention; used by the sources, the ES baseline and host loops.
* :mod:`~ev3evo.explore.evosax.distribution`: one mean (CMA-ES, OpenAI-ES, SNES, ...).
* :mod:`~ev3evo.explore.evosax.population`: population-based (differential evolution, PSO, GAs).
* :mod:`~ev3evo.explore.evosax.multi_mean`: several means (Stein-variational ``SV_*``).
* :mod:`~ev3evo.explore.evosax.restarts`: IPOP/BIPOP restarts around distribution sources;
  :mod:`~ev3evo.explore.evosax.schedule`: the restart schedules.
* :mod:`~ev3evo.explore.evosax.source`: :func:`evosax_source`, which picks the kind.

Example::

    import jax, jax.numpy as jnp, ev3evo
    source = ev3evo.evosax_source("CMA_ES", 8, init_std=0.5, restart="ipop")
    params = {"w": jnp.ones(3)}
    state = source.init(jax.random.key(0), params)
    population, state = source.ask(jax.random.key(1), state, params, None,
                                   jnp.ones(source.size, bool))
    assert population["w"].shape == (source.size, 3)
"""

from .distribution import DistributionState as DistributionState
from .distribution import distribution_source as distribution_source
from .multi_mean import MultiMeanState as MultiMeanState
from .multi_mean import multi_mean_source as multi_mean_source
from .population import PopulationState as PopulationState
from .population import population_source as population_source
from .restarts import RestartState as RestartState
from .restarts import restarts as restarts
from .schedule import RestartSchedule as RestartSchedule
from .schedule import ScheduleState as ScheduleState
from .schedule import bipop as bipop
from .schedule import ipop as ipop
from .source import EvosaxState as EvosaxState
from .source import evosax_mean as evosax_mean
from .source import evosax_source as evosax_source
