"""The evosax driver: one evosax 0.3 algorithm driven with EV3's conventions.

Every user of evosax in ev3evo (the evosax sources, the ES baseline of the distillation run, a
plain host loop) goes through these functions, so that each convention is written once:

* :func:`spec` resolves the algorithm (a key of ``evosax.algorithms.algorithms``, a class or
  an instance, with a "did you mean" error for a misspelt name) and checks the configuration;
  :func:`build` makes the algorithm object and its hyperparameters for a solution template
  (an :class:`Algorithm`); :func:`algorithm` does both.
* :func:`init` (distribution-based) and :func:`init_population` (population-based) start a
  search. The state is cast to strong dtypes here: evosax's ``init`` returns weak-typed leaves
  that become strong after one ``tell``, so a jitted step would otherwise compile twice.
* :func:`ask` samples a generation; :func:`tell` updates the state with it; :func:`center`
  reads the current mean (population-based: the best member).

**Fitness.** The fitness given to :func:`tell` is higher-is-better, with ``-inf`` (or NaN) for
invalid slots, as EV3 scores candidates; evosax minimizes, so evosax is told ``-fitness``. A
slot without a finite fitness, or whose candidate has a non-finite entry, is told the worst
finite value of the generation for distribution-based algorithms (several of them average raw
fitness values, where ``+inf`` would turn the update into NaN) and ``+inf`` for
population-based ones (selection only: a slot never evaluated must never replace a member). Its
candidate is replaced by the distribution's mean (population-based: the parent member), since a
NaN or 1e30 row poisons the update even ranked worst (a NaN times a zero weight; CMA-ES's
negative weights). A generation without any finite fitness is not told: the state is kept.

**Keys** go to evosax unchanged: ``init(key)`` calls ``es.init(key, ...)``, ``ask(key)``
``es.ask(key, ...)`` and ``tell(key)`` ``es.tell(key, ...)``, so a run through the driver asks
what raw evosax asks for the same keys.

Example (a host loop on a numpy function)::

    import jax, numpy as np
    from ev3evo.explore.evosax import driver

    def sphere(x):  # minimized; x is a (population, 3) numpy array
        return np.sum((x - 1.0) ** 2, axis=1)

    algo = driver.algorithm("CMA_ES", 8, np.zeros(3, np.float32), params={"std_init": 0.5})
    ask, tell = jax.jit(driver.ask), jax.jit(driver.tell)  # an Algorithm is a static argument
    compiled = tell._cache_size()  # jit wrappers of one function share its cache
    state = driver.init(jax.random.key(0), algo, np.zeros(3, np.float32))
    for g in range(40):
        key_ask, key_tell = jax.random.split(jax.random.key(g))
        x, state = ask(key_ask, algo, state)
        f = sphere(np.asarray(x))
        state = tell(key_tell, algo, state, x, (-f).astype(np.float32))  # higher is better
    assert np.allclose(driver.center(algo, state), 1.0, atol=0.05)
    assert tell._cache_size() - compiled <= 1  # the strong state compiles the step once

Reference: Lange, "evosax: JAX-based evolution strategies", GECCO 2023 companion.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from evosax.algorithms import algorithms as EVOSAX_ALGORITHMS
from evosax.algorithms.base import EvolutionaryAlgorithm
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm
from jax.flatten_util import ravel_pytree

from ... import _tree
from ..._checks import check_positive_int
from ...types import Array, Params, Population, PRNGKey
from ._branch import concrete, cond, like

# ------------------------------------------------------------------------ configuration


class AlgorithmSpec(NamedTuple):
    """A checked evosax configuration, not yet built for a solution shape (see :func:`spec`).

    Attributes:
      cls: the evosax algorithm class.
      instance: the algorithm object when one was given (used as it is), else ``None``.
      population_size: candidates per generation (per mean for several-mean algorithms).
      params: hyperparameter overrides (a dict of fields of ``default_params``), a full evosax
        ``Params``, or ``None``.
      init_std: the initial spread: ``std_init`` when the algorithm has one, and the noise of
        the initial population of population-based algorithms; ``None`` keeps the defaults.
      compile_params: compute ``default_params`` in one compiled program (see :func:`build`).
      kwargs: keyword arguments of the algorithm's constructor.
    """

    cls: type
    instance: EvolutionaryAlgorithm | None
    population_size: int
    params: Any
    init_std: float | None
    compile_params: bool
    kwargs: dict

    @property
    def spread(self) -> float:
        """The initial population's noise scale (population-based; ``RandomSearch``)."""
        return 0.1 if self.init_std is None else self.init_std

    @property
    def population_based(self) -> bool:
        return issubclass(self.cls, PopulationBasedAlgorithm)


def resolve(algorithm) -> tuple[type, EvolutionaryAlgorithm | None]:
    """An algorithm name, class or instance → ``(class, instance or None)``."""
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


def spec(
    algorithm,
    population_size: int,
    *,
    params=None,
    init_std: float | None = None,
    compile_params: bool = False,
    **algo_kwargs,
) -> AlgorithmSpec:
    """Checks an evosax configuration (eagerly, before any shape is known).

    Args:
      algorithm: a key of ``evosax.algorithms.algorithms`` (``"CMA_ES"``, ``"Open_ES"``,
        ``"DifferentialEvolution"``, ...), an algorithm class, or an instance (its
        ``solution`` template must have as many entries as the solutions it will drive).
      population_size, params, init_std, compile_params: see :class:`AlgorithmSpec`.
      **algo_kwargs: passed to the algorithm's constructor (``optimizer=``, ``std_schedule=``,
        ``num_populations=``, ``sampling_fn=``, ...).
    """
    cls, instance = resolve(algorithm)
    population_size = check_positive_int(population_size, "population_size")
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
    std = None if init_std is None else float(init_std)
    return AlgorithmSpec(cls, instance, population_size, params, std, bool(compile_params),
                         dict(algo_kwargs))  # fmt: skip


# ------------------------------------------------------------------------------- building


@jax.tree_util.register_static
class Algorithm:
    """An evosax algorithm object with its hyperparameters, built for one solution shape.

    A static pytree node (it has no array leaves): it can sit inside a state, or be passed to
    a jitted function, whose compilation cache then keys on it. Two ``Algorithm`` s are equal
    when their ``key`` s are; the default key is unique to the object, so that equality is
    identity (as for evosax's own jitted methods, which key on the algorithm object).

    Attributes:
      es: the evosax algorithm object.
      params: its hyperparameters (an evosax ``Params``).
      unravel: flat vector → solution pytree (the algorithm's solution template).
      key: the hashable value that equality and hashing use.
    """

    __slots__ = ("es", "key", "params", "unravel")

    def __init__(self, es: EvolutionaryAlgorithm, params, key=None):
        self.es, self.params = es, params
        self.unravel = ravel_pytree(es.solution)[1]
        self.key = object() if key is None else key

    @property
    def population_based(self) -> bool:
        return isinstance(self.es, PopulationBasedAlgorithm)

    def __eq__(self, other) -> bool:
        return isinstance(other, Algorithm) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        es = self.es
        return f"Algorithm({type(es).__name__}, population_size={es.population_size}, " \
               f"num_dims={es.num_dims})"  # fmt: skip


def build(spec: AlgorithmSpec, solution, *, key=None) -> Algorithm:
    """The algorithm object and hyperparameters of ``spec`` for solutions shaped like
    ``solution``.

    Only the shapes and dtypes of ``solution`` are used, so ``build`` may run while a
    function is traced; the object and its hyperparameters are computed concretely all the
    same. With ``spec.compile_params``, ``default_params`` (CMA-ES's weights and learning
    rates, ...) is computed by one compiled program rather than evosax's eager ``jnp``
    operations, each of which compiles on first use for its shapes; the values agree with
    evosax's up to float rounding.

    Args:
      spec: from :func:`spec`.
      solution: a solution pytree (its values are ignored).
      key: the :class:`Algorithm`'s equality key (default: identity).

    Raises:
      ValueError: a ``params`` field the algorithm does not have, a population size the
        algorithm rejects, or an instance whose solution has a different size.
    """
    template = jax.tree.map(lambda x: np.zeros(jnp.shape(x), jnp.result_type(x)), solution)
    with jax.ensure_compile_time_eval():  # concrete even when called while tracing
        es = _construct(spec, template)
    if spec.compile_params:  # outside the context, which would run the program op by op
        defaults = compiled_default_params([es])[0]
    else:
        with jax.ensure_compile_time_eval():
            defaults = es.default_params
    with jax.ensure_compile_time_eval():
        return Algorithm(es, _hyperparameters(spec, defaults), key)


def algorithm(algorithm, population_size: int, solution, **options) -> Algorithm:
    """``build(spec(algorithm, population_size, **options), solution)``."""
    return build(spec(algorithm, population_size, **options), solution)


def _construct(spec: AlgorithmSpec, template) -> EvolutionaryAlgorithm:
    cls = spec.cls
    if spec.instance is not None:
        n_inst = ravel_pytree(spec.instance.solution)[0].size
        n_model = ravel_pytree(template)[0].size
        if n_inst != n_model:
            raise ValueError(
                f"the evosax instance's solution has {n_inst} entries; the model has {n_model}"
            )
        return spec.instance
    kwargs = dict(spec.kwargs)
    if cls.__name__ == "RandomSearch" and "sampling_fn" not in kwargs:
        flat0, unravel0 = ravel_pytree(template)
        kwargs["sampling_fn"] = lambda k, f=flat0, u=unravel0, s=spec.spread: u(
            f + s * jax.random.normal(k, f.shape, f.dtype)
        )
    try:
        return cls(population_size=spec.population_size, solution=template, **kwargs)
    except AssertionError as e:
        raise ValueError(
            f"evosax {cls.__name__} rejected population_size={spec.population_size}: {e}"
        ) from None
    except TypeError as e:
        raise TypeError(f"evosax {cls.__name__}: {e}") from None


def _hyperparameters(spec: AlgorithmSpec, esp):
    """``default_params`` with ``spec.params`` and ``spec.init_std`` applied."""
    params, init_std = spec.params, spec.init_std
    if isinstance(params, dict):
        fields = getattr(type(esp), "__dataclass_fields__", {})
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown {spec.cls.__name__} params {unknown}; known: {sorted(fields)}"
            )
        if init_std is not None and "std_init" in fields and "std_init" not in params:
            esp = esp.replace(std_init=init_std)
        return esp.replace(**params)
    if params is not None:
        return params
    if init_std is not None and hasattr(esp, "std_init"):
        return esp.replace(std_init=init_std)
    return esp


def compiled_default_params(objects: Sequence[EvolutionaryAlgorithm]) -> tuple:
    """``default_params`` of every algorithm object, computed in one compiled program.

    evosax computes them with eager ``jnp`` operations, each compiled on first use for its
    shapes; one program at XLA's lowest optimization level costs a fraction of that. It is
    compiled ahead of time, so that it runs (rather than being staged) when called while a
    function is traced. Falls back to eager evaluation when an algorithm's parameters do not
    go through ``jit``.
    """

    def eager():
        with jax.ensure_compile_time_eval():
            return tuple(o.default_params for o in objects)

    try:
        fn = jax.jit(lambda: tuple(o.default_params for o in objects),
                     compiler_options={"xla_backend_optimization_level": 0})  # fmt: skip
        out = tuple(fn.lower().compile()())
    except Exception:  # parameters that are not JAX types
        return eager()
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(out)):
        return eager()  # staged into an enclosing trace rather than run
    return out


def signature(tree) -> tuple:
    """The structure, shapes and dtypes of a pytree (hashable; values ignored)."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(jnp.shape(x)), jnp.result_type(x).name) for x in leaves)


def source_init(spec: AlgorithmSpec, start: Callable) -> Callable:
    """A source's ``init(key, params)``: builds the :class:`Algorithm` for the shape of
    ``params``, then returns ``start(key, algorithm, params)`` (a state holding it).

    evosax's algorithm objects depend on the parameters' shape, which a source learns only
    from ``init``. The returned ``init`` is jitted and builds them while it is traced: they
    leave the trace inside the state, as static data, and jit's own cache (one trace per
    parameter shape and dtype) hands the same objects to every later ``init`` with that shape.
    So evosax's jitted ``ask``/``tell``, keyed on the object, compile once per shape even when
    called eagerly; no Python cache is kept or mutated, and ``ask``/``tell`` build nothing.
    The :class:`Algorithm`'s key (this source, the shape) makes states of two ``init`` calls
    compare equal even if jit traced twice.
    """
    token = object()

    def init(key, params):
        algorithm = build(spec, params, key=(token, signature(params)))
        return start(key, algorithm, params)

    return jax.jit(init)


# ------------------------------------------------------------------------------- driving


class Generation(NamedTuple):
    """A generation as evosax is told it (see the module docstring).

    Attributes:
      population: the candidates, rows without a finite fitness replaced.
      fitness: ``(P,)`` minimized fitness (``-fitness``), non-finite slots filled.
      finite: ``(P,)`` bool: the slot had a finite fitness and a finite candidate.
    """

    population: Population
    fitness: Array
    finite: Array


def strong(tree):
    """Every leaf cast to its own dtype, dropping weak types."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), tree)


def init(key: PRNGKey, algorithm: Algorithm, mean, *, params=None):
    """Starts a distribution-based search at ``mean`` (a solution pytree).

    Several-mean algorithms (``SV_*``) start every mean there. ``best_solution`` starts at
    ``mean`` rather than evosax's NaN (``best_fitness`` stays ``+inf``, so the first finite
    fitness replaces it): a search never told a finite fitness holds no NaN.

    Args:
      key: passed to ``es.init``.
      algorithm: from :func:`build`.
      mean: the initial mean.
      params: hyperparameters to start with instead of ``algorithm.params`` (a restart's).

    Returns:
      The evosax state, with strong dtypes (the one place the driver casts them).
    """
    es = algorithm.es
    if algorithm.population_based:
        raise TypeError(f"{type(es).__name__} is population-based: use init_population")
    flat = ravel_pytree(mean)[0]
    if hasattr(es, "num_populations"):
        mean = _tree.broadcast(mean, es.num_populations)
    state = strong(es.init(key, mean, algorithm.params if params is None else params))
    best = state.best_solution
    return state.replace(best_solution=jnp.where(jnp.isnan(best), flat.astype(best.dtype), best))


def initial_population(key: PRNGKey, algorithm: Algorithm, mean, spread: float) -> Population:
    """``mean + spread · N(0, I)``: one draw of shape ``(population_size, num_dims)``."""
    flat = ravel_pytree(mean)[0]
    noise = jax.random.normal(key, (algorithm.es.population_size, flat.size), flat.dtype)
    return jax.vmap(algorithm.unravel)(flat + spread * noise)


def init_population(key: PRNGKey, algorithm: Algorithm, population: Population):
    """Starts a population-based search holding ``population``, not yet evaluated.

    :func:`ask` with ``first=True`` returns it; :func:`tell` with ``first=True`` initializes
    evosax with its fitness (evosax's population-based ``init`` needs an evaluated population).
    """
    es = algorithm.es
    if not algorithm.population_based:
        raise TypeError(f"{type(es).__name__} is distribution-based: use init")
    unevaluated = jnp.full((es.population_size,), jnp.inf)
    return strong(es.init(key, population, unevaluated, algorithm.params))


def ask(key: PRNGKey, algorithm: Algorithm, state, *, first=False):
    """A generation: ``es.ask(key, state, params)``; with ``first`` (population-based, a
    bool or a bool array; ignored otherwise) the state's initial population, unchanged.

    Returns:
      ``(population, state)``: a solution pytree with a leading population axis.
    """
    es = algorithm.es

    def sample(st):
        population, new = es.ask(key, st, algorithm.params)
        return population, like(new, st)

    def initial(st):
        return es.get_population(st), st

    if not algorithm.population_based:
        return sample(state)
    return cond(first, initial, sample, state)


def finite(population: Population, fitness) -> Array:
    """``(P,)`` bool: a finite fitness and a candidate without non-finite entries."""
    return jnp.isfinite(jnp.asarray(fitness)) & _tree.all_finite(population)


def generation(algorithm: Algorithm, state, population: Population, fitness) -> Generation:
    """What :func:`tell` tells evosax for this fitness (higher is better)."""
    ok = finite(population, fitness)
    minimized = -jnp.asarray(fitness)
    if algorithm.population_based:
        filled = jnp.where(ok, minimized, jnp.inf)
    else:
        filled = jnp.where(ok, minimized, jnp.max(jnp.where(ok, minimized, -jnp.inf)))
    if concrete(jnp.all(ok)):
        return Generation(population, filled, ok)
    if algorithm.population_based:
        rows = state.population  # the parent members
    else:
        mean, n = state.mean, ok.shape[0]
        rows = (jnp.repeat(mean, n // mean.shape[0], axis=0) if mean.ndim == 2
                else jnp.broadcast_to(mean, (n, mean.shape[0])))  # fmt: skip
    replaced = _tree.population_where(ok, population, jax.vmap(algorithm.unravel)(rows))
    return Generation(replaced, filled, ok)


def tell(key: PRNGKey, algorithm: Algorithm, state, population: Population, fitness, *,
         first=False):  # fmt: skip
    """Updates the state with an evaluated generation (``es.tell(key, ...)``).

    Args:
      key: passed to evosax.
      algorithm: from :func:`build`.
      state: the state the generation was asked from.
      population: the generation (as :func:`ask` returned it).
      fitness: ``(P,)`` higher-is-better fitness, ``-inf`` or NaN for invalid slots.
      first: population-based (a bool or a bool array; ignored otherwise): this is the
        initial population; evosax's state is initialized from it
        (``es.init(key, population, -fitness)``).

    Returns:
      The new state (the old one when no slot has a finite fitness), with the old dtypes.
    """
    es, params = algorithm.es, algorithm.params
    told = generation(algorithm, state, population, fitness)

    def update(st):
        return like(es.tell(key, told.population, told.fitness, st, params)[0], st)

    def start(st):
        return like(es.init(key, told.population, told.fitness, params), st)

    def told_state(st):
        if not algorithm.population_based:
            return update(st)
        return cond(first, start, update, st)

    # lax.cond, not a select of the new or the old state: nothing is computed to be dropped
    return cond(jnp.any(told.finite), told_state, lambda st: st, state)


def center(algorithm: Algorithm, state) -> Params:
    """The current mean as a solution pytree (several means: their average;
    population-based: the best member)."""
    if algorithm.population_based:
        return algorithm.unravel(state.population[jnp.argmin(state.fitness)])
    mean = state.mean
    return algorithm.unravel(jnp.mean(mean, axis=0) if mean.ndim == 2 else mean)
