"""``minimize``: the black-box front door, EV3's explore → assess → adapt on a vector problem.

Design. A black-box objective ``f: R^D -> R`` has no per-example scores, and for a
deterministic ``f`` re-evaluating the current or stable model every step would only waste
budget, so ``minimize`` does not go through :class:`ev3evo.EV3`'s statistical gate. It drives
the library's own components directly, in a host loop, one *generation* at a time:

* **explore**: a portfolio of :class:`~ev3evo.Source` objects combined with :func:`ev3evo.mix`,
  all asked around the incumbent (the best point so far), plus a quadratic surrogate. The
  default portfolio is ``("cma", "model", "gaussian", "cauchy")``:

  - ``cma``: evosax ``CMA_ES`` through :func:`ev3evo.evosax_source` with BIPOP restarts
    (:func:`ev3evo.bipop`; Hansen 2009): large-population runs solve multimodal functions with
    global structure, small-population, small-step runs solve unimodal and weakly structured
    ones. It is not re-centred on the incumbent (CMA-ES needs its own mean), and restarts return
    to ``x0`` with ``sigma0`` as pycma's restarts do. Its population size is
    ``4 + floor(3 ln D)`` on the first rung of the restart ladder.
  - ``model``: :class:`ev3evo.minimize_sources.QuadraticModel`, a full (or diagonal) quadratic
    fitted to the best evaluated points, whose minimizer is one extra candidate per generation
    (lq-CMA-ES's regression, Hansen 2019, used as a proposer). It runs on the host because it
    learns from every evaluation. While it wins it is asked every generation, otherwise every
    fifth; when its candidate becomes the incumbent, CMA-ES's mean is moved there (CMA-ES keeps
    its step size and covariance). It solves convex quadratics at any conditioning in a few
    generations, which is where plain CMA-ES spends most of a small budget.
  - ``gaussian`` and ``cauchy``: mutations of the incumbent with a 1/5th-success-rule step size
    (:func:`ev3evo.minimize_sources.local_search`): cheap local refinement and long jumps.

* **assess**: only the candidates a generation really needs are evaluated: the CMA rows of the
  active rung (the ladder pads the rest with NaN) and the *active* local slots. Every call of
  ``fun`` is counted, and a generation is truncated so that ``nfev`` never exceeds ``budget``.
  NaN values are ranked worst (``-inf`` fitness), never best.

* **adapt**: the best candidate of a generation becomes the incumbent when it improves on it;
  every source is told its candidates' fitness (``-f``, higher is better) and whether one of
  them was selected. The local sources share a pool of slots through
  :mod:`ev3evo.adapt.allocation`: the pool's size follows how often the pool produced the
  incumbent recently (it starts with none, then one probe slot every fourth generation when it
  does not win, up to ``pool`` slots when it wins at least 20 % of generations, so the early
  budget goes to CMA-ES and the model), and the slots are split between
  ``gaussian`` and ``cauchy`` by their credit. CMA-ES always gets its full population, because
  a distribution-based ES told a partial generation would mis-rank it.

A plain Python ``fun`` is evaluated on the host (one candidate at a time, or a whole
generation with ``vectorized=True``); a JAX ``fun`` (``jax_fun=True``, or detected by tracing it
once with an abstract value) is evaluated ``jit(vmap(fun))`` on the device. The sources' ``tell``
and ``ask`` are fused into one step, jitted once per (dimension, dtype, configuration) and
cached across calls (the first generation "tells" nothing); it is compiled without LLVM's
optimization passes, which roughly halved its compilation here (D = 5, four rungs: 15 s to 8 s)
and did not measurably slow the runs of this dispatch-bound step. Other first-call costs are
kept small: CMA-ES's default hyperparameters for every rung come from one compiled program
(``evosax_source(..., compile_params=True)``; evosax's eager ``jnp`` computes them op by op,
one compilation per op and rung), the generation keys from another, and the pool's slot split
and credit run in numpy on the host (no device call, and no compilation per pool size). Here
(BBOB, D = 5, 1000·D evaluations) that brought the first call from ~16 s to ~10 s, most of the
rest being the step's compilation; later calls with the same configuration reuse it.

Example::

    import numpy as np, ev3evo
    res = ev3evo.minimize(lambda x: float(np.sum((x - 1.0) ** 2)), np.zeros(3), budget=600)
    assert res.fun < 1e-6 and res.nfev <= 600

References: Ding et al., "EV3: Ever Evolving Evaluator", arXiv 2310.18893 (2023); Hansen,
"Benchmarking a BI-population CMA-ES on the BBOB-2009 function testbed", GECCO 2009.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .explore.evosax import evosax_source
from .explore.mix import mix
from .explore.restart import bipop, ipop
from .minimize_sources import QuadraticModel, local_search
from .types import Feedback, Source

#: Source names accepted by ``sources=`` (besides :class:`~ev3evo.Source` objects).
SOURCE_NAMES = ("cma", "cma_ipop", "model", "gaussian", "cauchy", "de")
_POOL = ("gaussian", "cauchy")  # sources that share the allocated local pool
DEFAULT_SOURCES = ("cma", "model", "gaussian", "cauchy")
_MODEL = "model"  # the host-side quadratic surrogate (not a Source: it sees every evaluation)


class MinimizeResult(NamedTuple):
    """What :func:`minimize` returns.

    Attributes:
      x: the best point found, ``(D,)`` float64.
      fun: its value (``inf`` when every evaluation was NaN).
      nfev: evaluations of ``fun`` spent (never more than ``budget``).
      nit: generations run.
      status: ``"converged"`` (``ftarget`` reached), ``"budget_exhausted"``, ``"stalled"``
        (the sources stopped proposing evaluable candidates) or ``"all_nan"``.
      message: a sentence describing the status.
      history: ``(k, 2)`` array of ``(evaluations, best value)`` at each improvement.
      source_evals: evaluations spent on each source's candidates, by source name.
      source_wins: how many times each source produced a new incumbent, by source name.
    """

    x: np.ndarray
    fun: float
    nfev: int
    nit: int
    status: str
    message: str
    history: np.ndarray
    source_evals: dict
    source_wins: dict


# ------------------------------------------------------------------------------ validation


def _check_x0(x0) -> np.ndarray:
    try:
        x = np.asarray(x0, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"x0 must be a 1-D array of floats, got {type(x0).__name__}") from None
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 has non-finite entries")
    return x


def _check_bounds(bounds, d: int):
    if bounds is None:
        return None
    try:
        lo, hi = bounds
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (d,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (d,)).copy()
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be (lower, upper), each a float or a length-{d} vector; got {bounds!r}"
        ) from None
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds have lower > upper at index {i}: {lo[i]} > {hi[i]}")
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("bounds contain NaN")
    return lo, hi


def _scalar(value, where: str) -> float:
    arr = np.asarray(value)
    if arr.shape != () and arr.size != 1:
        raise ValueError(f"fun must return a scalar; it returned shape {arr.shape} {where}")
    try:
        return float(arr.reshape(()))
    except (TypeError, ValueError):
        raise TypeError(f"fun must return a real number; it returned {value!r} {where}") from None


def _is_jax_fun(fun: Callable, x0: np.ndarray, dtype) -> bool:
    """True when ``fun`` traces with an abstract ``(D,)`` input to a scalar (never evaluates)."""
    try:
        out = jax.eval_shape(fun, jax.ShapeDtypeStruct(x0.shape, dtype))
    except Exception:  # any failure to trace means a host function
        return False
    shape = getattr(out, "shape", None)
    if shape is None:
        return False
    if shape != ():
        raise ValueError(f"fun must return a scalar; for a ({x0.size},) input it returns {shape}")
    return True


# ------------------------------------------------------------------------------ portfolio


class _Portfolio(NamedTuple):
    mixed: Any
    init: Callable
    ask: Callable
    tell: Callable
    tell_ask: Callable  # tell then ask, fused: one dispatch per generation
    pool_ids: np.ndarray  # indices (into parts) of the pool sources
    pool_caps: np.ndarray
    cma_parts: np.ndarray  # indices of always-active sources


_CACHE: dict = {}
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _levels(budget: int, lam: int) -> int:
    # Enough ladder rungs that a top-rung run still gets ~50 generations of the budget.
    return int(np.clip(1 + math.floor(math.log2(max(budget / (lam * 50), 1.0))), 1, 6))


def _build(names: tuple, user: tuple, d: int, dtype, sigma0: float, budget: int) -> _Portfolio:
    lam = 4 + int(3 * math.log(d))
    pool = max(2, lam // 2)
    levels = _levels(budget, lam)
    cache_key = (names, user, d, jnp.dtype(dtype).name, float(sigma0), levels)
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    parts: list[Source] = []
    for n in names:
        if n == "cma" or n == "cma_ipop":
            schedule = (bipop if n == "cma" else ipop)(levels=levels, min_num_gens=20)
            parts.append(evosax_source("CMA_ES", lam, init_std=sigma0, recenter=False,
                                       restart=schedule, name=n, compile_params=True))  # fmt: skip
        elif n in _POOL:
            parts.append(local_search(pool, 0.3 * sigma0, n, name=n))
        elif n == "de":
            parts.append(evosax_source("DifferentialEvolution", max(8, 2 * lam),
                                       init_std=sigma0, recenter=False, name="de",
                                       compile_params=True))  # fmt: skip
    parts.extend(user)
    mixed = mix(*parts)
    # Host sources (nevergrad) cannot be jitted; JAX ones are compiled once and cached. The
    # step is a few small matrix operations per rung of the restart ladder, bound by dispatch,
    # not arithmetic: LLVM's optimization passes roughly double its compilation for no speed.
    fast_jit = functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
    wrap = (lambda f: f) if mixed.source.host else fast_jit
    ids = np.array([i for i, p in enumerate(names) if p in _POOL], dtype=int)
    pool_caps = np.array([mixed.parts[i].size for i in ids], dtype=np.int32)
    others = np.array([i for i in range(len(mixed.parts)) if i not in set(ids)], dtype=int)
    # init runs eagerly: evosax_source builds its algorithm objects (concrete default params)
    # on first use, and building them under jit would leak tracers into its cache.
    cma_ids = tuple(i for i, n in enumerate(names) if n in ("cma", "cma_ipop"))

    def tell_ask(k_tell, k_ask, state, population, feedback, params, active, move):
        wrap_key = jax.random.wrap_key_data
        state = mixed.source.tell(wrap_key(k_tell), state, population, feedback)
        if cma_ids:  # the model's point became the incumbent: CMA-ES continues from there
            state = list(state)
            for i in cma_ids:
                st = state[i]
                rungs = tuple(r.replace(mean=jnp.where(move, params, r.mean).astype(r.mean.dtype))
                              for r in st.es)  # fmt: skip
                state[i] = st._replace(es=rungs)
            state = tuple(state)
        return mixed.source.ask(wrap_key(k_ask), state, params, None, active)

    def ask(k_ask, state, params, active):
        return mixed.source.ask(jax.random.wrap_key_data(k_ask), state, params, None, active)

    out = _Portfolio(mixed, mixed.source.init, wrap(ask), wrap(mixed.source.tell),
                     wrap(tell_ask), ids, pool_caps, others)  # fmt: skip
    _CACHE[cache_key] = out
    return out


def _resolve_sources(sources) -> tuple[tuple, tuple, bool]:
    """``(names of mixed sources, user sources, whether the quadratic model runs)``."""
    if sources is None:
        return tuple(n for n in DEFAULT_SOURCES if n != _MODEL), (), _MODEL in DEFAULT_SOURCES
    if isinstance(sources, (str, Source)):
        sources = [sources]
    names, user = [], []
    for s in sources:
        if isinstance(s, Source):
            user.append(s)
        elif isinstance(s, str):
            if s not in SOURCE_NAMES:
                raise ValueError(f"unknown source {s!r}; known: {', '.join(SOURCE_NAMES)} "
                                 "(or pass an ev3evo.Source)")  # fmt: skip
            names.append(s)
        else:
            raise TypeError(f"sources must be names or ev3evo.Source objects, got {s!r}")
    if not names and not user:
        raise ValueError("sources is empty")
    use_model = _MODEL in names
    names = [n for n in names if n != _MODEL]
    if not names and not user:
        raise ValueError("the 'model' source needs at least one other source to learn from")
    return tuple(names), tuple(user), use_model


def _pool_counts(credit: np.ndarray, caps: np.ndarray, n: int) -> np.ndarray:
    """Slots of each pool source for ``n`` pool slots: ``allocation.counts_from_credit`` (no
    minimum, prior 0.1) in numpy. The pool has two sources: a device call per generation (and
    a compilation per distinct ``n``) would cost more than the arithmetic."""
    if n <= 0 or credit.size == 0:
        return np.zeros(caps.shape, np.int32)
    n = int(min(n, caps.sum()))
    capsf = caps.astype(np.float32)
    weight = credit.astype(np.float32) + np.float32(0.1)
    alloc = np.zeros_like(capsf)
    for _ in range(caps.size):  # water-filling, as in allocation.counts_from_credit
        room = capsf - alloc
        open_ = room > 0
        remaining = np.float32(n - alloc.sum())
        w = np.where(open_, weight, np.float32(0.0))
        w = w if w.sum() > 0 else open_.astype(np.float32)
        add = np.minimum(room, remaining * w / np.maximum(w.sum(), np.float32(1e-12)))
        alloc = alloc + (add if remaining > 1e-6 else np.float32(0.0))
    base = np.floor(alloc)
    rest = n - base.sum()
    order = np.argsort(-(alloc - base), kind="stable")
    bonus = np.zeros_like(base)
    bonus[order] = (np.arange(caps.size) < rest).astype(base.dtype)
    return np.minimum((base + bonus).astype(np.int32), caps.astype(np.int32))


@functools.partial(jax.jit, static_argnums=1)
def _keys(seed_key, n_keys: int):
    """The init key and ``n_keys`` generation keys (raw key data) of a run, in one program
    (eager splits would compile one program each on the first call)."""
    key, k_init = jax.random.split(jax.random.wrap_key_data(seed_key))
    return jax.random.key_data(k_init), jax.random.key_data(jax.random.split(key, n_keys))


# ------------------------------------------------------------------------------ front door


def minimize(
    fun: Callable,
    x0,
    budget: int = 1000,
    seed: int = 0,
    bounds=None,
    sources: Sequence[str | Source] | None = None,
    sigma0: float | None = None,
    *,
    vectorized: bool = False,
    jax_fun: bool | None = None,
    ftarget: float | None = None,
    throw: bool = False,
) -> MinimizeResult:
    """Minimizes ``fun`` over ``R^D`` (or a box) with at most ``budget`` evaluations.

    Args:
      fun: ``f(x) -> float`` for a ``(D,)`` vector: a Python callable on numpy arrays, or a JAX
        function. With ``vectorized=True`` a host ``fun`` takes ``(n, D)`` and returns ``(n,)``.
      x0: the start point, a 1-D float vector (the first point evaluated, and where CMA-ES
        starts and restarts).
      budget: the maximal number of evaluations (calls for a host ``fun``, rows for a
        vectorized or JAX one).
      seed: the random seed (the run is reproducible for a given seed).
      bounds: ``(lower, upper)`` floats or ``(D,)`` vectors; candidates are clipped into the box
        before evaluation and the sources are told the clipped points.
      sources: names from :data:`SOURCE_NAMES` and/or :class:`~ev3evo.Source` objects (asked
        around the incumbent every generation). ``None``: :data:`DEFAULT_SOURCES`. ``"model"``
        (the quadratic surrogate) needs at least one other source.
      sigma0: initial step size (default: 0.3 × the box width with bounds, else
        ``max(1, 0.3 · max|x0|)``).
      vectorized: a host ``fun`` accepts a whole generation as a 2-D array.
      jax_fun: ``True``: ``fun`` is a JAX function (evaluated ``jit(vmap(fun))``); ``False``:
        a host function; ``None``: detected by tracing ``fun`` once with an abstract value
        (no evaluation is made or counted), except with ``vectorized=True`` (host).
      ftarget: stop as ``"converged"`` as soon as a value ``<= ftarget`` is found.
      throw: raise ``RuntimeError`` instead of returning a result whose status is
        ``"all_nan"`` or ``"stalled"``.

    Returns:
      A :class:`MinimizeResult`.
    """
    x0 = _check_x0(x0)
    d = x0.size
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {fun!r}")
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise TypeError(f"budget must be a positive integer, got {budget!r}")
    if budget <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget}")
    budget = int(budget)
    box = _check_bounds(bounds, d)
    if sigma0 is None:
        sigma0 = 0.3 * float(np.max(box[1] - box[0])) if box is not None else max(
            1.0, 0.3 * float(np.max(np.abs(x0)))
        )
        if not (math.isfinite(sigma0) and sigma0 > 0):
            sigma0 = 1.0
    elif not (isinstance(sigma0, numbers.Real) and math.isfinite(sigma0) and sigma0 > 0):
        raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
    names, user, use_model = _resolve_sources(sources)
    dtype = jnp.zeros(()).dtype  # float64 under jax_enable_x64, else float32
    if box is not None:
        x0 = np.clip(x0, *box)
    if jax_fun is None:  # a vectorized fun is a host function by definition
        jax_fun = False if vectorized else _is_jax_fun(fun, x0, dtype)
    batched = jax.jit(jax.vmap(fun)) if jax_fun else None

    def evaluate(x: np.ndarray) -> np.ndarray:
        if jax_fun:
            values = np.asarray(batched(jnp.asarray(x, dtype)), dtype=np.float64)
            if values.shape != (x.shape[0],):
                raise ValueError(f"fun must return a scalar; it returned shape {values.shape[1:]}")
            return values
        if vectorized:
            values = np.asarray(fun(np.array(x, dtype=np.float64)), dtype=np.float64)
            if values.shape not in ((x.shape[0],), (x.shape[0], 1)):
                raise ValueError(
                    f"a vectorized fun must map ({x.shape[0]}, {d}) to ({x.shape[0]},); "
                    f"it returned shape {values.shape}"
                )
            return values.reshape(-1)
        return np.array([_scalar(fun(np.array(row)), "for a (D,) input") for row in x])

    port = _build(names, user, d, dtype, float(sigma0), budget)
    mixed = port.mixed
    size = mixed.source.size
    source_ids = np.asarray(mixed.source_ids)
    part_names = mixed.names
    n_keys = 2 * min(budget + 2, 100_000)
    k_init, keys = _keys(jax.random.key_data(jax.random.key(seed)), n_keys)

    best_f = _scalar(evaluate(x0[None])[0], "at x0") if not jax_fun else float(evaluate(x0[None])[0])
    best_x = x0.copy()
    if math.isnan(best_f):
        best_f = math.inf
    nfev = 1
    history = [(1, best_f)] if math.isfinite(best_f) else []
    all_names = part_names + ((_MODEL,) if use_model else ())
    evals = dict.fromkeys(all_names, 0)
    wins = dict.fromkeys(all_names, 0)
    seen_finite = math.isfinite(best_f)
    model = QuadraticModel(d, capacity=min(budget, 20_000)) if use_model else None
    if model is not None:
        model.add(x0[None], np.array([best_f]))
    model_rate = 0.5  # EMA of the model's wins over the generations it was asked
    model_idle = 0  # generations since the model was last asked
    move_cma = False  # the model won the last generation: move CMA-ES's mean to its point

    state = port.init(jax.random.wrap_key_data(k_init), jnp.asarray(best_x, dtype))
    # Credit of each pool source (allocation.update's: decay 0.8, reward 1 for a win).
    pool_credit = np.zeros(len(port.pool_ids), np.float32) if len(port.pool_ids) else None
    # EMA of generations in which the pool produced the incumbent. It starts at 0: the pool
    # gets one probe slot every fourth generation until it earns more (CMA-ES keeps the early
    # budget, where local mutations of the incumbent mostly duplicate its work).
    pool_rate = 0.0
    pool_max = int(port.pool_caps.sum()) // max(len(port.pool_ids), 1)
    is_pool = np.isin(np.arange(len(mixed.parts)), port.pool_ids)
    pool_slots = is_pool[source_ids]
    nit = idle = 0
    pending = None  # (key, population, feedback) still to be told
    if not user:
        # A first "tell" of nothing (every fitness -inf is a no-op for the built-in sources)
        # lets every generation go through the one compiled tell-then-ask step.
        pending = (None, np.zeros((size, d), dtype),
                   Feedback(np.full(size, -np.inf, dtype), np.zeros(size, bool),
                            x0.astype(dtype), np.False_))  # fmt: skip
    keys = np.asarray(keys)
    status = "budget_exhausted"
    converged = ftarget is not None and best_f <= ftarget
    while nfev < budget and not converged:
        # Raw key data (numpy) for this generation: no device round trip per split.
        k_ask, k_tell = keys[(2 * nit) % n_keys], keys[(2 * nit + 1) % n_keys]
        # How many slots the local pool gets this generation, and for which source.
        active = np.ones(size, bool)
        n_pool = 0
        if pool_credit is not None:
            n_pool = round(pool_max * min(1.0, pool_rate / 0.2))
            n_pool = max(n_pool, 1 if nit % 4 == 3 else 0)
            active[pool_slots] = False
            if n_pool:  # (no device call at all in the generations without pool slots)
                counts = _pool_counts(pool_credit, port.pool_caps, n_pool)
                for c, i in zip(counts, port.pool_ids):
                    lo = mixed.offsets[i]
                    active[lo : mixed.offsets[i + 1]] = np.arange(mixed.parts[i].size) < c
        x_inc = best_x.astype(dtype)
        if pending is None:
            pop, state = port.ask(k_ask, state, x_inc, active)
        else:  # the previous generation's tell, fused with this generation's ask
            k_tell_prev, told, feedback = pending
            if k_tell_prev is None:
                k_tell_prev = k_tell
            pop, state = port.tell_ask(k_tell_prev, k_ask, state, told, feedback, x_inc, active,
                                       np.bool_(move_cma))  # fmt: skip
        pop = np.asarray(pop, dtype=np.float64)
        if box is not None:
            pop = np.clip(pop, *box)
        todo = np.flatnonzero(active & np.all(np.isfinite(pop), axis=1))
        # The model's Newton candidate: every generation while it wins, else now and then.
        extra = None
        if model is not None and (model_rate >= 0.1 or model_idle >= 4) and model.ready():
            extra = model.propose(best_x)
            if extra is not None:
                if box is not None:
                    extra = np.clip(extra, *box)
                if not np.all(np.isfinite(extra)):
                    extra = None
        n_room = budget - nfev
        if extra is not None and n_room > 0:
            todo = todo[: n_room - 1]  # the model's candidate is evaluated first
        else:
            extra = None
            todo = todo[:n_room]  # never exceed the budget
        fitness = np.full(size, -np.inf)
        model_f = -math.inf
        if todo.size or extra is not None:
            batch = pop[todo] if extra is None else np.concatenate([extra[None], pop[todo]])
            values = evaluate(batch)
            nfev += batch.shape[0]
            finite = ~np.isnan(values)
            seen_finite |= bool(finite.any())
            if model is not None:
                model.add(batch, values)
            if extra is not None:
                model_f = -values[0] if finite[0] else -math.inf
                values, finite = values[1:], finite[1:]
                evals[_MODEL] += 1
            fitness[todo] = np.where(finite, -values, -np.inf)  # NaN ranks worst
            for i in source_ids[todo]:
                evals[part_names[i]] += 1
            idle = 0
        else:
            idle += 1
        nit += 1
        winner = int(np.argmax(fitness))
        improved = fitness[winner] > -best_f
        selected = np.zeros(size, bool)
        model_won = extra is not None and model_f > max(-best_f, fitness[winner])
        if model_won:
            best_f, best_x = -float(model_f), extra.copy()
            history.append((nfev, best_f))
            wins[_MODEL] += 1
            converged = ftarget is not None and best_f <= ftarget
            improved = False
        elif improved:
            selected[winner] = True
            best_f, best_x = -float(fitness[winner]), pop[winner].copy()
            history.append((nfev, best_f))
            wins[part_names[source_ids[winner]]] += 1
            converged = ftarget is not None and best_f <= ftarget
        move_cma = bool(model_won)
        if extra is not None:
            model_rate = 0.7 * model_rate + 0.3 * float(model_won)
            model_idle = 0
        else:
            model_idle += 1
        if pool_credit is not None:
            in_pool = improved and bool(is_pool[source_ids[winner]])
            pool_rate = 0.9 * pool_rate + 0.1 * float(in_pool)
            if n_pool:  # credit moves only in generations where the pool had slots
                hit = np.zeros(pool_credit.shape, np.float32)
                if in_pool:
                    hit[int(np.flatnonzero(port.pool_ids == source_ids[winner])[0])] = 1.0
                pool_credit = np.float32(0.8) * pool_credit + np.float32(0.2) * hit
        feedback = Feedback(fitness.astype(dtype), selected, best_x.astype(dtype), np.False_)
        pending = (k_tell, pop.astype(dtype), feedback)
        if idle >= 50:
            status = "stalled"
            break
    if converged:
        status = "converged"
    if not seen_finite:
        status = "all_nan"
    messages = {
        "converged": f"reached ftarget={ftarget} after {nfev} evaluations",
        "budget_exhausted": f"spent the budget of {budget} evaluations",
        "stalled": "the sources proposed no evaluable candidate for 50 generations",
        "all_nan": f"every one of the {nfev} evaluations of fun returned NaN",
    }
    if throw and status in ("all_nan", "stalled"):
        raise RuntimeError(f"minimize failed: {messages[status]}")
    return MinimizeResult(
        x=np.asarray(best_x, dtype=np.float64),
        fun=float(best_f),
        nfev=int(nfev),
        nit=nit,
        status=status,
        message=messages[status],
        history=np.asarray(history, dtype=np.float64).reshape(-1, 2),
        source_evals=evals,
        source_wins=wins,
    )
