"""Any evosax 0.3 algorithm as an EV3 source (distribution-based and population-based).

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

**Sign.** EV3 fitness is higher-is-better, with ``-inf`` for inactive/invalid slots; evosax
minimizes. The source tells evosax ``-fitness``. Slots without a finite fitness become the
worst finite value of the generation for distribution-based algorithms (several of them average
raw fitness values, where ``+inf`` would turn the update into NaN) and ``+inf`` for
population-based ones (selection only: a slot never evaluated must never replace a member).
Such slots' candidates are replaced, before the tell, by the distribution's mean or the parent
member (a NaN or 1e30 row would poison the update even ranked worst). A generation with no
finite fitness at all is not told (the state is kept).

**Key derivation** (what the parity tests replay with raw evosax):

* distribution-based: ``init(key)`` → ``es.init(key, params, es_params)``;
  ``ask(key)`` → ``es.ask(key, ...)``; ``tell(key)`` → ``es.tell(key, ...)``: keys are passed
  through unchanged. With restarts, the restart draws from ``fold_in(key, 1)`` (schedule) and
  ``fold_in(key, 2)`` (re-initialization) of the tell key.
* population-based (``es.init`` needs an *evaluated* population): ``init(key)`` splits
  ``key_population, key_init = jax.random.split(key)`` and draws the initial population
  ``params + init_std * N(0, I)`` (ravelled, one draw of shape ``(population_size, d)`` from
  ``key_population``). The first ``ask`` returns that population unchanged; the first ``tell``
  calls ``es.init(key, population, -fitness, es_params)`` with the tell key, so no
  evaluation is wasted. Later asks and tells pass keys through as above.

**Re-centring** (``recenter=True``): after each tell, the distribution's mean is set to the
accepted model ``feedback.params`` (for Stein-variational algorithms with several means, all
means are shifted so that their average is the model). Population-based algorithms have no
mean: the accepted model replaces the worst member (ranked as the best member so far) unless it
is already in the population.

The evosax algorithm objects are built once per source and parameter shape (evosax jits with
the object as a static argument hashed by identity), and the state is cast to strong dtypes
after every ``es.init`` (evosax's weak-typed init state would otherwise compile a step twice).
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from evosax.algorithms import algorithms as EVOSAX_ALGORITHMS
from evosax.algorithms.base import EvolutionaryAlgorithm
from evosax.algorithms.distribution_based.base import DistributionBasedAlgorithm
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm
from jax.flatten_util import ravel_pytree

from .. import _tree
from .._checks import check_positive_int
from ..types import Feedback, Params, Source
from . import restart as rs


class EvosaxState(NamedTuple):
    """State of an :func:`evosax_source`.

    Attributes:
      es: the evosax states, one per rung of the restart ladder (one without restarts).
      started: population-based: whether the initial population has been told (bool).
      restart: a :class:`~ev3evo.explore.restart.RestartState`, or ``()`` without restarts.
      center: the ravelled model the source was initialized at (restarts return there when
        ``recenter=False``).
    """

    es: tuple
    started: jax.Array
    restart: Any
    center: jax.Array


def _resolve(algorithm):
    """Name, class or instance → (class, instance or None)."""
    if isinstance(algorithm, str):
        if algorithm not in EVOSAX_ALGORITHMS:
            close = difflib.get_close_matches(algorithm, list(EVOSAX_ALGORITHMS), n=4, cutoff=0.4)
            lower = [n for n in EVOSAX_ALGORITHMS if n.lower() == algorithm.lower()]
            hint = lower or close
            raise ValueError(
                f"unknown evosax algorithm {algorithm!r}"
                + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
                + f" Known: {', '.join(sorted(EVOSAX_ALGORITHMS))}"
            )
        return EVOSAX_ALGORITHMS[algorithm], None
    if isinstance(algorithm, type) and issubclass(algorithm, EvolutionaryAlgorithm):
        return algorithm, None
    if isinstance(algorithm, EvolutionaryAlgorithm):
        return type(algorithm), algorithm
    raise TypeError(
        "algorithm must be an evosax algorithm name (a key of evosax.algorithms.algorithms), "
        f"class or instance; got {algorithm!r}"
    )


def _strong(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), tree)


def _like(new, old):
    """Casts ``new`` leaf by leaf to the dtypes of ``old`` (branches of a cond must agree)."""
    return jax.tree.map(lambda n, o: jnp.asarray(n, dtype=o.dtype), new, old)


def _concrete(x):
    """``x`` as a Python value when it is concrete (eager calls), else ``None`` (under jit)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x).item()


def _tree_where(cond, x, y):
    c = _concrete(cond)
    if c is not None:  # eager: pick in Python rather than compile a select per leaf
        return x if c else y
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), x, y)


def _cond(pred, true_fn, false_fn, operand):
    """``lax.cond`` that branches in Python when ``pred`` is concrete.

    Called eagerly, ``lax.cond`` with fresh closures compiles on every call; inside a jitted
    EV3 step ``pred`` is a tracer and this is plain ``lax.cond``.
    """
    c = _concrete(pred)
    if c is not None:
        return true_fn(operand) if c else false_fn(operand)
    return jax.lax.cond(pred, true_fn, false_fn, operand)


def _switch(index, branches, operand):
    """``lax.switch`` that indexes in Python when ``index`` is concrete (see :func:`_cond`)."""
    i = _concrete(index)
    if i is not None:
        return branches[int(i)](operand)
    return jax.lax.switch(index, branches, operand)


def _template(params):
    """Concrete zeros shaped like ``params`` (the solution template; never a tracer)."""
    return jax.tree.map(lambda x: np.zeros(jnp.shape(x), jnp.result_type(x)), params)


def _signature(params):
    leaves, treedef = jax.tree.flatten(params)
    return treedef, tuple((tuple(jnp.shape(x)), jnp.result_type(x).name) for x in leaves)


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
      recenter: re-centre on the accepted model after each tell (see the module docstring).
      name: the source's name (defaults to the algorithm's name).
      restart: ``None``, ``"ipop"``, ``"bipop"`` or :func:`ev3evo.ipop` / :func:`ev3evo.bipop`
        (distribution-based, single-mean algorithms only).
      init_std: the initial spread: ``std_init`` of distribution-based algorithms (when they
        have one), the noise of the initial population of population-based ones (default 0.1).
      compile_params: compute the algorithms' default hyperparameters (CMA-ES's weights and
        learning rates, ...) in one compiled program rather than with evosax's eager ``jnp``
        operations, each of which compiles on first use for its shapes (about 1 s per rung of
        a restart ladder on CPU, once per process). The values agree with evosax's up to float
        rounding, so the source is then not bit-for-bit identical to raw evosax (near-isotropic
        covariances amplify such rounding in the eigenvectors). :func:`ev3evo.minimize` uses it.
      **algo_kwargs: passed to the algorithm's constructor (``optimizer=``, ``std_schedule=``,
        ``num_populations=``, ``sampling_fn=``, ...).

    Returns:
      A :class:`~ev3evo.Source` whose state is an :class:`EvosaxState` (read its centre with
      :func:`evosax_mean`).
    """
    cls, instance = _resolve(algorithm)
    population_size = check_positive_int(population_size, "population_size")
    schedule = rs.resolve(restart)
    population_based = issubclass(cls, PopulationBasedAlgorithm)
    distribution_based = issubclass(cls, DistributionBasedAlgorithm)
    if params is not None and not isinstance(params, dict) and not hasattr(params, "replace"):
        raise TypeError(f"params must be a dict of overrides or an evosax Params, got {params!r}")
    if init_std is not None and not (isinstance(init_std, (int, float)) and init_std > 0):
        raise ValueError(f"init_std must be a positive number, got {init_std!r}")
    if instance is not None:
        if algo_kwargs:
            raise ValueError("algo_kwargs apply to an algorithm name or class, not an instance")
        if instance.population_size != population_size:
            raise ValueError(
                f"population_size {population_size} differs from the instance's "
                f"{instance.population_size}"
            )
    num_populations = 1
    if cls.__name__.startswith("SV_"):
        num_populations = algo_kwargs.get("num_populations")
        if instance is not None:
            num_populations = instance.num_populations
        if num_populations is None:
            raise TypeError(f"{cls.__name__} needs num_populations= (the number of particles)")
        num_populations = check_positive_int(num_populations, "num_populations")
    if schedule is not None:
        if not distribution_based or num_populations > 1:
            raise ValueError(
                f"restarts apply to single-distribution distribution-based algorithms; "
                f"{cls.__name__} is not one"
            )
        if instance is not None:
            raise ValueError("restarts rebuild the algorithm per population size: pass its name")
        if params is not None and not isinstance(params, dict):
            raise ValueError("with restarts pass params as a dict (weights depend on the size)")
    rungs = rs.ladder(schedule, population_size) if schedule else (population_size,)
    size = rungs[-1] * num_populations
    name = name or cls.__name__
    spread = 0.1 if init_std is None else float(init_std)
    cache: dict = {}

    def build(like):
        """The algorithm objects (one per rung) and their params, built once per shape."""
        sig = _signature(like)
        if sig in cache:
            return cache[sig]
        template = _template(like)
        objects = []
        for lam in rungs:
            if instance is not None:
                es = instance
                n_inst = ravel_pytree(instance.solution)[0].size
                n_model = ravel_pytree(template)[0].size
                if n_inst != n_model:
                    raise ValueError(
                        f"the evosax instance's solution has {n_inst} entries; the model has "
                        f"{n_model}"
                    )
            else:
                kwargs = dict(algo_kwargs)
                if cls.__name__ == "RandomSearch" and "sampling_fn" not in kwargs:
                    flat0, unravel0 = ravel_pytree(template)
                    kwargs["sampling_fn"] = lambda k, f=flat0, u=unravel0: u(
                        f + spread * jax.random.normal(k, f.shape, f.dtype)
                    )
                try:
                    es = cls(population_size=lam, solution=template, **kwargs)
                except AssertionError as e:
                    raise ValueError(
                        f"evosax {cls.__name__} rejected population_size={lam}: {e}"
                    ) from None
                except TypeError as e:
                    raise TypeError(f"evosax {cls.__name__}: {e}") from None
            objects.append(es)
        if compile_params:
            defaults = _default_params(objects)
        else:
            defaults = tuple(o.default_params for o in objects)
        es_params = []
        for esp in defaults:
            if isinstance(params, dict):
                fields = getattr(type(esp), "__dataclass_fields__", {})
                unknown = sorted(set(params) - set(fields))
                if unknown:
                    raise ValueError(
                        f"unknown {cls.__name__} params {unknown}; known: {sorted(fields)}"
                    )
                if init_std is not None and "std_init" in fields and "std_init" not in params:
                    esp = esp.replace(std_init=init_std)
                esp = esp.replace(**params)
            elif params is not None:
                esp = params
            elif init_std is not None and hasattr(esp, "std_init"):
                esp = esp.replace(std_init=init_std)
            es_params.append(esp)
        cache[sig] = (tuple(objects), tuple(es_params))
        return cache[sig]

    def init(key, params_):
        objects, es_params = build(params_)
        flat, unravel = ravel_pytree(params_)
        es, esp = objects[0], es_params[0]
        if population_based:
            key_population, key_init = jax.random.split(key)
            noise = jax.random.normal(key_population, (population_size, flat.size), flat.dtype)
            population = jax.vmap(unravel)(flat + spread * noise)
            state = es.init(key_init, population, jnp.full((population_size,), jnp.inf), esp)
            states = (_strong(state),)
        elif num_populations > 1:
            means = jax.vmap(unravel)(jnp.broadcast_to(flat, (num_populations, flat.size)))
            states = (_seed_best(_strong(es.init(key, means, esp)), flat),)
        else:
            # Every rung's state is kept (lax.switch needs them all); only rung 0 is used now.
            states = tuple(
                _seed_best(_strong(o.init(key, params_, p)), flat)
                for o, p in zip(objects, es_params)
            )
        started = jnp.asarray(not population_based)
        restart_state = rs.init_state() if schedule else ()
        return EvosaxState(states, started, restart_state, flat)

    def pad(population, lam):
        if lam == size:
            return population
        return jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.full((size - lam, *x.shape[1:]), jnp.nan, x.dtype)]),
            population,
        )

    def ask(key, state, params_, batch, active):
        del batch, active  # every slot is sampled; EV3 evaluates only the active ones
        objects, es_params = build(params_)
        if population_based:
            es, esp = objects[0], es_params[0]

            def normal(st):
                return es.ask(key, st, esp)

            def first(st):
                return es.get_population(st), st

            population, st = _cond(state.started, normal, first, state.es[0])
            return population, state._replace(es=(st,))
        if schedule is None:
            population, st = objects[0].ask(key, state.es[0], es_params[0])
            return population, state._replace(es=(_like(st, state.es[0]),))

        def rung(level):
            def branch(states):
                population, st = objects[level].ask(key, states[level], es_params[level])
                new = list(states)
                new[level] = _like(st, states[level])
                return pad(population, rungs[level]), tuple(new)

            return branch

        population, states = _switch(
            state.restart.level, [rung(i) for i in range(len(rungs))], state.es
        )
        return population, state._replace(es=states)

    def clean(population, rows_ok, st, unravel):
        """Candidates without a finite fitness (non-finite, or whose metrics failed) → the
        parent member (population-based) or the mean (zero offset): such a row would poison
        the update even ranked worst (a NaN times a zero weight; CMA's negative weights)."""
        if _concrete(jnp.all(rows_ok)):
            return population
        if population_based:
            repl = jax.vmap(unravel)(st.population)
        else:
            n = rows_ok.shape[0]
            mean = st.mean
            rows = (jnp.repeat(mean, n // mean.shape[0], axis=0) if mean.ndim == 2
                    else jnp.broadcast_to(mean, (n, mean.shape[0])))
            repl = jax.vmap(unravel)(rows)
        return _tree.population_where(rows_ok, population, repl)

    def tell(key, state, population, feedback: Feedback):
        model = feedback.params
        objects, es_params = build(model)
        flat_model, unravel = ravel_pytree(model)
        rows_ok = _tree.all_finite(population)
        fitness = -jnp.asarray(feedback.fitness)
        finite = jnp.isfinite(fitness) & rows_ok
        any_finite = jnp.any(finite)
        if population_based:
            fitness = jnp.where(finite, fitness, jnp.inf)
        else:
            worst = jnp.max(jnp.where(finite, fitness, -jnp.inf))
            fitness = jnp.where(finite, fitness, worst)
        if population_based:
            es, esp = objects[0], es_params[0]
            old = state.es[0]
            population = clean(population, finite, old, unravel)

            def normal(st):
                return _like(es.tell(key, population, fitness, st, esp)[0], st)

            def first(st):
                return _like(es.init(key, population, fitness, esp), st)

            st = _cond(state.started, normal, first, old)
            st = _tree_where(any_finite, st, old)
            if recenter:
                st = _inject(st, flat_model)
            return state._replace(es=(st,), started=state.started | any_finite)
        if schedule is None:
            old = state.es[0]
            population = clean(population, finite, old, unravel)
            st, _ = objects[0].tell(key, population, fitness, old, es_params[0])
            st = _tree_where(any_finite, _like(st, old), old)
            if recenter:
                st = _recenter(st, flat_model)
            return state._replace(es=(st,))
        return _tell_restart(key, state, population, fitness, finite, flat_model, objects,
                             es_params, unravel)

    def _tell_restart(key, state, population, fitness, finite, flat_model, objects, es_params,
                      unravel):
        def rung(level):
            lam = rungs[level]

            def branch(states):
                f = fitness[:lam]
                old = states[level]
                pop = jax.tree.map(lambda x: x[:lam], population)
                pop = clean(pop, finite[:lam], old, unravel)
                st, _ = objects[level].tell(key, pop, f, old, es_params[level])
                st = _tree_where(jnp.any(finite[:lam]), _like(st, old), old)
                flat_pop = jax.vmap(lambda p: ravel_pytree(p)[0])(pop)
                f_stop = jnp.where(finite[:lam], f, jnp.inf)
                fired = rs.should_restart(schedule, flat_pop, f_stop, st, es_params[level],
                                          state.restart)
                if recenter:
                    st = _recenter(st, flat_model)
                new = list(states)
                new[level] = st
                return tuple(new), fired, jnp.sum(finite[:lam]).astype(jnp.int32)

            return branch

        level = state.restart.level
        states, fired, told = _switch(
            level, [rung(i) for i in range(len(rungs))], state.es
        )
        rstate = state.restart._replace(evaluations=state.restart.evaluations + told)
        center = flat_model if recenter else state.center

        def do_restart(args):
            states, rstate = args
            new_level, std_scale, rstate = rs.next_run(jax.random.fold_in(key, 1), schedule,
                                                       rstate)
            key_init = jax.random.fold_in(key, 2)

            def reinit(i):
                def branch(states):
                    esp = es_params[i]
                    if hasattr(esp, "std_init"):
                        esp = esp.replace(std_init=esp.std_init * std_scale)
                    mean = objects[i]._unravel_solution(center)
                    new = list(states)
                    st = _seed_best(objects[i].init(key_init, mean, esp), center)
                    new[i] = _like(st, states[i])
                    return tuple(new)

                return branch

            states = _switch(new_level, [reinit(i) for i in range(len(rungs))], states)
            return states, rstate

        states, rstate = _cond(fired, do_restart, lambda a: a, (states, rstate))
        return state._replace(es=states, restart=rstate)

    return Source(init, ask, tell, size, name)


def _default_params(objects) -> tuple:
    """``default_params`` of every algorithm object, computed in one compiled program.

    evosax computes them with eager ``jnp`` operations, each compiled on first use for its
    shapes (one set per rung of a restart ladder: ~1 s per CMA-ES rung on CPU, paid once per
    process); one jitted call costs a fraction of that. Falls back to eager evaluation when an
    algorithm's parameters do not go through ``jit``.
    """

    def eager():
        with jax.ensure_compile_time_eval():  # concrete even when first built under a trace
            return tuple(o.default_params for o in objects)

    try:
        fn = jax.jit(lambda: tuple(o.default_params for o in objects),
                     compiler_options={"xla_backend_optimization_level": 0})  # fmt: skip
        out = tuple(fn())
    except Exception:  # parameters that are not JAX types
        return eager()
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(out)):
        return eager()  # built inside a trace: the jitted call was staged, not run
    return out


def _seed_best(st, flat):
    """evosax starts ``best_solution`` as NaN until a finite fitness arrives; start it at the
    model instead (``best_fitness`` stays ``+inf``, so the first finite fitness replaces it), so
    that a source never told a finite fitness holds no NaN."""
    best = st.best_solution
    return st.replace(best_solution=jnp.where(jnp.isnan(best), flat.astype(best.dtype), best))


def _recenter(st, flat_model):
    mean = st.mean
    if mean.ndim == 2:  # several means (Stein-variational): shift their average to the model
        new = mean + (flat_model - jnp.mean(mean, axis=0))
    else:
        new = flat_model
    return st.replace(mean=jnp.asarray(new, mean.dtype))


def _inject(st, flat_model):
    """Population-based re-centring: the model replaces the worst member unless present."""
    present = jnp.any(jnp.all(st.population == flat_model, axis=1))
    worst = jnp.argmax(st.fitness)
    best = jnp.min(st.fitness)
    population = st.population.at[worst].set(flat_model.astype(st.population.dtype))
    fitness = st.fitness.at[worst].set(best)
    return st.replace(
        population=jnp.where(present, st.population, population),
        fitness=jnp.where(present, st.fitness, fitness),
    )


def evosax_mean(state: EvosaxState, params: Params) -> Params:
    """The current centre of an :func:`evosax_source`, as a pytree shaped like ``params``.

    Distribution-based: the mean of the active rung (the average mean for several means);
    population-based: the best member.
    """
    _, unravel = ravel_pytree(params)
    if isinstance(state.restart, rs.RestartState):
        means = jnp.stack([s.mean for s in state.es])
        return unravel(means[state.restart.level])
    st = state.es[0]
    if hasattr(st, "mean"):
        mean = st.mean
        return unravel(jnp.mean(mean, axis=0) if mean.ndim == 2 else mean)
    return unravel(st.population[jnp.argmin(st.fitness)])
