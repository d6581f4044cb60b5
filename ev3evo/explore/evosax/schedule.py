"""Restart schedules (IPOP, BIPOP) for :func:`ev3evo.explore.evosax.restarts.restarts`.

A restart re-initializes the search distribution (mean, step size, covariance) when a stop
criterion fires, with a larger population (IPOP, Auger & Hansen 2005) or alternating large and
small populations (BIPOP, Hansen 2009). Population sizes are rungs of a fixed *ladder*
``population_size * multiplier**l`` for ``l < levels`` (JAX compiles fixed shapes); after the
top rung, IPOP restarts stay on it, and BIPOP's small-regime sizes are rounded down to the
ladder.

**What is reused from evosax.** The stop criteria (``spread_cond``, ``cma_cond``,
``amalgam_cond``, ``fitness_std_cond``, ``generation_cond`` from ``evosax.core.restart``), their
tolerances (``evosax.core.restart.RestartParams``) and ``RestartController.should_restart``.
evosax's ``IPOPRestart``/``BIPOPRestart.restart`` are host-side (they call ``int()`` on traced
counters and build new algorithm objects), so the schedule arithmetic is written below in
``jnp`` to run inside the compiled step; it follows ``BIPOPRestart._next_population_size`` and
``_updated_bipop_budgets`` line for line, except for the rounding to the ladder.

Example::

    import jax, ev3evo
    from ev3evo.explore.evosax import schedule
    s = ev3evo.bipop(levels=3, min_num_gens=5)
    assert schedule.ladder(s, 8) == (8, 16, 32)
    level, std_scale, state = schedule.next_run(jax.random.key(0), s, schedule.init_state())
    assert int(state.restarts) == 1 and 0 <= int(level) <= 2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from evosax.core import restart as evr

from ..._checks import check_positive_int


class RestartSchedule(NamedTuple):
    """A restart configuration (static). Build it with :func:`ipop` or :func:`bipop`.

    Attributes:
      kind: ``"ipop"`` or ``"bipop"``.
      levels: rungs of the population ladder (the largest population is
        ``population_size * multiplier**(levels - 1)``).
      multiplier: population growth factor per large restart (evosax's
        ``population_size_multiplier``).
      stop_criteria: evosax restart conditions; ``None`` picks ``spread_cond`` plus
        ``cma_cond`` (for CMA-like states with a covariance) or ``amalgam_cond`` (iAMaLGaM).
      restart_params: an ``evosax.core.restart.RestartParams`` with the tolerances and
        ``min_num_gens`` (generations before a restart may fire).
    """

    kind: str
    levels: int
    multiplier: int
    stop_criteria: tuple | None
    restart_params: evr.RestartParams


class ScheduleState(NamedTuple):
    """Where a restart schedule stands (int32 / bool scalars).

    Attributes:
      level: current rung of the ladder.
      restarts: restarts so far.
      large_restarts: BIPOP large-regime restarts so far.
      large_budget, small_budget: BIPOP evaluations spent in each regime.
      small_active: BIPOP, true while a small-regime run is active.
      evaluations: evaluations (told, finite fitness) in the current run.
    """

    level: jax.Array
    restarts: jax.Array
    large_restarts: jax.Array
    large_budget: jax.Array
    small_budget: jax.Array
    small_active: jax.Array
    evaluations: jax.Array


def _schedule(kind, levels, multiplier, min_num_gens, stop_criteria, **tolerances):
    check_positive_int(levels, "levels")
    check_positive_int(multiplier, "multiplier")
    if multiplier < 2 and levels > 1:
        raise ValueError(f"multiplier must be >= 2 when levels > 1, got {multiplier}")
    if isinstance(min_num_gens, bool) or not isinstance(min_num_gens, int) or min_num_gens < 0:
        raise ValueError(f"min_num_gens must be a non-negative integer, got {min_num_gens!r}")
    if stop_criteria is not None:
        stop_criteria = tuple(stop_criteria)
        if not stop_criteria or not all(callable(c) for c in stop_criteria):
            raise TypeError(
                "stop_criteria must be a non-empty sequence of evosax restart conditions"
            )
    fields = evr.RestartParams.__dataclass_fields__
    unknown = sorted(set(tolerances) - set(fields))
    if unknown:
        raise ValueError(f"unknown restart tolerance(s) {unknown}; known: {sorted(fields)}")
    params = evr.RestartParams(min_num_gens=min_num_gens, **tolerances)
    return RestartSchedule(kind, int(levels), int(multiplier), stop_criteria, params)


def ipop(
    levels: int = 4,
    multiplier: int = 2,
    min_num_gens: int = 50,
    stop_criteria: Sequence[Callable] | None = None,
    **tolerances,
) -> RestartSchedule:
    """IPOP: restart with ``multiplier`` times the population each time a stop criterion fires.

    Args:
      levels: rungs of the ladder; the source has ``population_size * multiplier**(levels-1)``
        slots. Once on the top rung, further restarts keep that population.
      multiplier: growth factor of the population per restart.
      min_num_gens: generations of a run before a restart may fire (evosax's default is 50).
      stop_criteria: evosax restart conditions (see :class:`RestartSchedule`).
      **tolerances: fields of ``evosax.core.restart.RestartParams`` (``min_fitness_spread``,
        ``tol_x``, ``tol_x_up``, ``tol_condition_C``, ...).

    Reference: Auger & Hansen, "A restart CMA evolution strategy with increasing population
    size", CEC 2005.
    """
    return _schedule("ipop", levels, multiplier, min_num_gens, stop_criteria, **tolerances)


def bipop(
    levels: int = 4,
    multiplier: int = 2,
    min_num_gens: int = 50,
    stop_criteria: Sequence[Callable] | None = None,
    **tolerances,
) -> RestartSchedule:
    """BIPOP: interleave IPOP (large) restarts with small-population, small-step restarts.

    The regime with the smaller evaluation budget so far runs next. Small runs draw
    ``U ~ U(0, 1)``, use ``λ0 · (λ_large / (2 λ0))^(U²)`` (rounded down to the ladder) and
    ``std_init · 10^(-2U)``; large runs climb the ladder. Arguments as in :func:`ipop`.

    Reference: Hansen, "Benchmarking a BI-population CMA-ES on the BBOB-2009 function
    testbed", GECCO 2009.
    """
    return _schedule("bipop", levels, multiplier, min_num_gens, stop_criteria, **tolerances)


def resolve(restart) -> RestartSchedule | None:
    """``None``, ``"ipop"``, ``"bipop"`` or a :class:`RestartSchedule` → schedule or None."""
    if restart is None or isinstance(restart, RestartSchedule):
        return restart
    if isinstance(restart, str):
        if restart.lower() == "ipop":
            return ipop()
        if restart.lower() == "bipop":
            return bipop()
    raise ValueError(
        f"restart must be None, 'ipop', 'bipop' or ev3evo.ipop(...)/ev3evo.bipop(...), "
        f"got {restart!r}"
    )


def ladder(schedule: RestartSchedule, population_size: int) -> tuple[int, ...]:
    """Population sizes of the rungs: ``population_size * multiplier**l``."""
    return tuple(population_size * schedule.multiplier**level for level in range(schedule.levels))


def cma_cond_decomposed(population, fitness, state, params, restart_state, restart_params):
    """evosax's ``cma_cond`` (CMA-ES's tolX, tolUpSigma, noEffectCoord, noEffectAxis and
    conditionCov stops), on the eigendecomposition ``B, D`` the state already holds.

    evosax's version decomposes ``C`` again at every generation, which costs as much as the
    generation's own ``ask`` (a dense ``d × d`` eigendecomposition: it doubles the step of a
    CMA-ES with restarts on a model of a few hundred parameters). CMA-ES's ``ask`` stores the
    decomposition of ``C`` in the state; the criteria read it one generation later, which is
    how pycma checks them too (it decomposes lazily).
    """
    del population, fitness, params, restart_state
    dC = jnp.diag(state.C)
    D, B = state.D, state.B
    tol_x = jnp.all(state.std * jnp.sqrt(dC) < restart_params.tol_x) & jnp.all(
        jnp.abs(state.std * state.p_c) < restart_params.tol_x)
    diverged = state.std * jnp.max(D) > restart_params.tol_x_up
    no_coordinate_effect = jnp.any(state.mean == state.mean + 0.2 * state.std * jnp.sqrt(dC))
    no_axis_effect = jnp.all(state.mean == state.mean + 0.1 * state.std * D[0] * B[:, 0])
    ill_conditioned = (jnp.max(D) / jnp.min(D)) ** 2 > restart_params.tol_condition_C
    return tol_x | diverged | no_coordinate_effect | no_axis_effect | ill_conditioned


def default_criteria(es_state) -> tuple:
    """``spread_cond`` plus the criterion matching the algorithm's state, as evosax pairs them
    (CMA-like states that hold their decomposition use :func:`cma_cond_decomposed`)."""
    criteria = [evr.spread_cond]
    if all(hasattr(es_state, f) for f in ("C", "p_c", "std", "mean", "B", "D")):
        criteria.append(cma_cond_decomposed)
    elif all(hasattr(es_state, f) for f in ("C", "p_c", "std", "mean")):
        criteria.append(evr.cma_cond)
    if hasattr(es_state, "c_mult"):
        criteria.append(evr.amalgam_cond)
    return tuple(criteria)


def init_state() -> ScheduleState:
    """The schedule before its first restart: rung 0, nothing counted."""
    zero = jnp.zeros((), jnp.int32)
    return ScheduleState(zero, zero, zero, zero, zero, jnp.zeros((), bool), zero)


def should_restart(schedule, population, fitness, es_state, es_params, rstate) -> jax.Array:
    """Whether the generation just told stalls the run (evosax's criteria, finite fitness only).

    ``fitness`` is the minimized fitness with ``+inf`` for slots without a finite value; those
    are replaced by a finite value of the same generation so that they neither widen nor
    shrink the spread. Fewer than two finite values never trigger a restart.
    """
    finite = jnp.isfinite(fitness)
    fill = jnp.min(jnp.where(finite, fitness, jnp.inf))
    clean = jnp.where(finite, fitness, fill)
    criteria = schedule.stop_criteria or default_criteria(es_state)
    controller = evr.RestartController(criteria, schedule.restart_params)
    fired = controller.should_restart(
        population, clean, es_state, es_params, evr.RestartState(restart_counter=rstate.restarts)
    )
    return fired & (jnp.sum(finite) >= 2)


def next_run(key, schedule: RestartSchedule, rstate: ScheduleState):
    """The rung of the next run, the scale of its ``std_init``, and the new schedule state.

    Follows evosax's ``BIPOPRestart`` (budgets, ``_next_population_size``) and IPOP's growth,
    with population sizes expressed as rungs of the ladder.
    """
    top = schedule.levels - 1
    one = jnp.ones((), jnp.int32)
    if schedule.kind == "ipop":
        level = jnp.minimum(rstate.level + 1, top)
        new = rstate._replace(
            level=level,
            restarts=rstate.restarts + 1,
            evaluations=jnp.zeros_like(rstate.evaluations),
        )
        return level, jnp.ones(()), new
    # BIPOP: account the finished run to its regime (the first run counts as neither, as in
    # evosax's _updated_bipop_budgets).
    first = rstate.restarts == 0
    ev = rstate.evaluations
    small_budget = jnp.where(
        first | ~rstate.small_active, rstate.small_budget, rstate.small_budget + ev
    )
    large_budget = jnp.where(
        first | rstate.small_active, rstate.large_budget, rstate.large_budget + ev
    )
    use_small = small_budget < large_budget
    u = jax.random.uniform(key)
    # Small regime: λ0 · (0.5 · m^large_restarts)^(u²) → rung log_m(...) rounded down.
    log_m = jnp.log(float(schedule.multiplier))
    exponent = u**2 * (jnp.log(0.5) + rstate.large_restarts * log_m) / log_m
    small_level = jnp.clip(jnp.floor(exponent), 0, top).astype(jnp.int32)
    large_level = jnp.minimum(rstate.large_restarts + one, top).astype(jnp.int32)
    level = jnp.where(use_small, small_level, large_level)
    std_scale = jnp.where(use_small, 10.0 ** (-2.0 * u), 1.0)
    new = ScheduleState(
        level=level,
        restarts=rstate.restarts + 1,
        large_restarts=jnp.where(use_small, rstate.large_restarts, rstate.large_restarts + 1),
        large_budget=large_budget.astype(jnp.int32),
        small_budget=small_budget.astype(jnp.int32),
        small_active=use_small,
        evaluations=jnp.zeros_like(rstate.evaluations),
    )
    return level, std_scale, new
