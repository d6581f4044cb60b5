"""``minimize``: the black-box front door, EV3's explore → assess → adapt on a vector problem.

Design. A black-box objective ``f: R^D -> R`` has no per-example scores, and for a
deterministic ``f`` re-evaluating the current or stable model every step would only waste
budget, so ``minimize`` does not go through :class:`ev3evo.EV3`'s statistical gate. It runs a
portfolio in a host loop, one *generation* at a time:

* **explore**: every member proposes candidates, most of them around the incumbent (the best
  point so far). The default portfolio is ``("cma", "model", "gaussian", "cauchy")``, all on the
  host (:mod:`ev3evo.minimize_sources`), so that the default ``minimize`` compiles nothing:

  - ``cma``: pycma's CMA-ES with IPOP restarts (:class:`~ev3evo.minimize_sources.HostCMA`;
    Auger & Hansen 2005): a run ends when pycma's own termination criteria fire, and the next
    one starts again from ``x0`` with ``sigma0`` and twice the population. The first run uses
    ``2 (4 + floor(3 ln D))``, twice pycma's default: with the model solving the near-quadratic
    problems, the larger population finds the global basin of multimodal ones more often and
    needs ~40 % fewer generations (so less host time) for the same budget (BBOB, D = 2 and 5,
    1000·D: 8,300 instead of 14,100 generations over the 48 quick runs).
    ``"cma_bipop"`` is BIPOP instead (Hansen 2009), ``"cma_evosax"`` evosax's ``CMA_ES`` with
    BIPOP restarts through :func:`ev3evo.evosax_source` (compiled, on the device).
  - ``model``: :class:`~ev3evo.minimize_sources.QuadraticModel`, a full (or diagonal)
    quadratic fitted to the best evaluated points, whose minimizer is one extra candidate per
    generation (lq-CMA-ES's regression, Hansen 2019, used as a proposer). When its candidate
    becomes the incumbent, CMA-ES's mean is moved there (CMA-ES keeps its step size and
    covariance). It solves convex quadratics at any conditioning in a few generations, which is
    where plain CMA-ES spends most of a small budget.
  - ``gaussian`` and ``cauchy``: mutations of the incumbent with a 1/5th-success-rule step size
    (:class:`~ev3evo.minimize_sources.LocalSearch`): cheap local refinement and long jumps.
  - any :class:`~ev3evo.Source` (and ``"cma_evosax"``, ``"de"``): mixed with
    :func:`ev3evo.mix` into one compiled tell-then-ask step, asked around the incumbent.

* **assess**: the model's candidate, CMA-ES's generation, the pool's active slots and the
  sources' candidates are evaluated in one batch, clipped into ``bounds``. Every call of
  ``fun`` is counted, and a generation is truncated so that ``nfev`` never exceeds ``budget``.
  NaN values are ranked worst, never best.

* **adapt**: the best candidate of a generation becomes the incumbent when it improves on it;
  every member is told its candidates' values and whether one of them won (pycma only whole
  generations: a truncated one ends the run anyway). The local members share a pool of slots
  as :mod:`ev3evo.adapt.allocation` would split them: the pool's size follows how often it
  produced the incumbent recently (none at first, one probe slot every eighth generation while
  it does not win, which with CMA-ES's doubled population is the share of evaluations one slot
  every fourth generation had before; up to ``max(2, λ0 / 2)`` slots per member, ``λ0`` pycma's
  default population, when it wins at least 20 % of generations), and the slots go to
  ``gaussian`` and ``cauchy`` by their credit. CMA-ES always
  gets its full population, because a distribution-based ES told a partial generation would
  mis-rank it.

A plain Python ``fun`` is evaluated on the host (one candidate at a time, or a whole
generation with ``vectorized=True``); a JAX ``fun`` (``jax_fun=True``, or detected by tracing it
once with an abstract value) is evaluated ``jit(vmap(fun))`` on the device.

Why the host. An earlier version ran the whole portfolio (evosax's ``CMA_ES`` on a ladder of
restart populations, the local pool) as one compiled step. On BBOB (D = 2 and 5, 1000·D
evaluations, 2 CPU cores) it reached more targets than pycma, but cost ~21 s of XLA
compilation per dimension and ~1.2 ms per generation, where a pycma generation costs ~0.7 ms:
119 s in all against pycma's 54 s. Small dense problems are dispatch- and compile-bound on
XLA:CPU; numpy on the host is not. With the host portfolio the same benchmark
(``benchmarks/bbob.py --quick --solvers ev3evo,pycma-ipop``) compiles nothing and took 27.4 s
and 28.4 s in two runs, against pycma's 29.1 s and 27.9 s in the same runs. The compiled path
remains for what needs it: JAX sources, and a JAX ``fun`` (evaluated on the device).

Example::

    import numpy as np, ev3evo
    res = ev3evo.minimize(lambda x: float(np.sum((x - 1.0) ** 2)), np.zeros(3), budget=600)
    assert res.fun < 1e-6 and res.nfev <= 600

References: Ding et al., "EV3: Ever Evolving Evaluator", arXiv 2310.18893 (2023); Auger &
Hansen, "A restart CMA evolution strategy with increasing population size", CEC 2005; Hansen,
"Benchmarking a BI-population CMA-ES on the BBOB-2009 function testbed", GECCO 2009; Hansen,
"A global surrogate assisted CMA-ES", GECCO 2019.
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

from .explore.evosax import bipop, evosax_source
from .explore.evosax.distribution import recentered
from .explore.mix import mix
from .minimize_sources import HostCMA, LocalSearch, QuadraticModel
from .types import Feedback, Source

#: Source names accepted by ``sources=`` (besides :class:`~ev3evo.Source` objects).
SOURCE_NAMES = ("cma", "cma_bipop", "cma_evosax", "model", "gaussian", "cauchy", "de")
_POOL = ("gaussian", "cauchy")  # sources that share the allocated local pool
_HOST_CMA = {"cma": "ipop", "cma_bipop": "bipop"}  # pycma on the host (HostCMA), by regime
DEFAULT_SOURCES = ("cma", "model", "gaussian", "cauchy")
_MODEL = "model"  # the host-side quadratic surrogate (not a Source: it sees every evaluation)
_POOL_PROBE = 8  # a losing pool still gets one slot every 8th generation


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


class _Device(NamedTuple):
    """The JAX members (user sources, ``cma_evosax``, ``de``) mixed into one compiled step."""

    mixed: Any
    init: Callable
    ask: Callable
    tell_ask: Callable  # tell then ask, fused: one dispatch per generation


_CACHE: dict = {}
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_DEVICE_NAMES = ("cma_evosax", "de")


def _levels(budget: int, lam: int) -> int:
    # Enough ladder rungs that a top-rung run still gets ~50 generations of the budget.
    return int(np.clip(1 + math.floor(math.log2(max(budget / (lam * 50), 1.0))), 1, 6))


def _build(names: tuple, user: tuple, d: int, dtype, sigma0: float, budget: int) -> _Device:
    lam = 4 + int(3 * math.log(d))
    levels = _levels(budget, lam) if "cma_evosax" in names else 1
    cache_key = (names, user, d, jnp.dtype(dtype).name, float(sigma0), levels)
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    parts: list[Source] = []
    for n in names:
        if n == "cma_evosax":
            parts.append(evosax_source("CMA_ES", lam, init_std=sigma0, recenter=False,
                                       restart=bipop(levels=levels, min_num_gens=20), name=n,
                                       compile_params=True))  # fmt: skip
        elif n == "de":
            parts.append(evosax_source("DifferentialEvolution", max(8, 2 * lam),
                                       init_std=sigma0, recenter=False, name="de",
                                       compile_params=True))  # fmt: skip
    mixed = mix(*parts, *user)
    # Host sources (nevergrad) cannot be jitted; JAX ones are compiled once and cached. The
    # step is a few small matrix operations per rung of the restart ladder, bound by dispatch,
    # not arithmetic: LLVM's optimization passes roughly double its compilation for no speed.
    wrap = (lambda f: f) if mixed.source.host else functools.partial(
        jax.jit, compiler_options=_FAST_COMPILE)  # fmt: skip
    cma_ids = tuple(i for i, n in enumerate(names) if n == "cma_evosax")

    def keys(seed_key, gen):  # the generation's keys, folded in on the device
        return jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(seed_key), gen))

    def tell_ask(seed_key, gen, state, population, feedback, params, move):
        k_tell, k_ask = keys(seed_key, gen)
        state = mixed.source.tell(k_tell, state, population, feedback)
        if cma_ids:  # the model's point became the incumbent: CMA-ES continues from there
            state = list(state)
            for i in cma_ids:
                st = state[i]
                rungs = tuple(recentered(r, jnp.where(move, params, r.es.mean)) for r in st.rungs)
                state[i] = st._replace(rungs=rungs)
            state = tuple(state)
        return mixed.source.ask(k_ask, state, params, None, jnp.ones(mixed.source.size, bool))

    def ask(seed_key, gen, state, params):
        active = jnp.ones(mixed.source.size, bool)
        return mixed.source.ask(keys(seed_key, gen)[1], state, params, None, active)

    # init runs eagerly (each evosax source compiles its own init once per shape).
    out = _Device(mixed, mixed.source.init, wrap(ask), wrap(tell_ask))
    _CACHE[cache_key] = out
    return out


def _resolve_sources(sources) -> tuple[tuple, tuple, bool, str | None]:
    """``(names of mixed JAX sources, user sources, whether the quadratic model runs, the
    host CMA's name or None)``."""
    if sources is None:
        sources = DEFAULT_SOURCES
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
    host = [n for n in names if n in _HOST_CMA]
    if len(host) > 1:
        raise ValueError(f"choose one of 'cma' (IPOP) and 'cma_bipop', got {host}")
    names = [n for n in names if n != _MODEL and n not in _HOST_CMA]
    if not names and not user and not host:
        raise ValueError("the 'model' source needs at least one other source to learn from")
    return tuple(names), tuple(user), use_model, (host[0] if host else None)


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
        around the incumbent every generation). ``None``: :data:`DEFAULT_SOURCES`. ``"cma"``
        (pycma, IPOP) and ``"cma_bipop"`` (pycma, BIPOP) exclude each other; ``"model"`` (the
        quadratic surrogate) needs at least one other source.
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
    names, user, use_model, host_name = _resolve_sources(sources)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless jax_enable_x64
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

    best_f = _scalar(evaluate(x0[None])[0], "at x0") if not jax_fun else float(evaluate(x0[None])[0])
    best_x = x0.copy()
    if math.isnan(best_f):
        best_f = math.inf
    nfev = 1
    history = [(1, best_f)] if math.isfinite(best_f) else []
    seen_finite = math.isfinite(best_f)
    converged = ftarget is not None and best_f <= ftarget

    # The portfolio: pycma's CMA-ES, the local pool and the quadratic model on the host, and
    # the JAX members (user sources, evosax ones) in one compiled step.
    lam = 4 + int(3 * math.log(d))  # pycma's default population size
    cma = None
    if host_name:  # IPOP starts at twice the default population (see the module doc)
        regime = _HOST_CMA[host_name]
        cma = HostCMA(x0, sigma0, seed, regime, popsize=2 * lam if regime == "ipop" else lam)
    pool_names = tuple(dict.fromkeys(n for n in names if n in _POOL))
    pool = [LocalSearch(0.3 * sigma0, n, seed) for n in pool_names]
    dev_names = tuple(dict.fromkeys(n for n in names if n in _DEVICE_NAMES))
    dev = _build(dev_names, user, d, dtype, float(sigma0), budget) if dev_names or user else None
    dev_parts = dev.mixed.names if dev is not None else ()
    all_names = ((host_name,) if cma else ()) + pool_names + dev_parts
    all_names += (_MODEL,) if use_model else ()
    evals = dict.fromkeys(all_names, 0)
    wins = dict.fromkeys(all_names, 0)
    model = QuadraticModel(d, capacity=min(budget, 20_000)) if use_model else None
    if model is not None:
        model.add(x0[None], np.array([best_f]))
    # The pool's slots follow how often it produced the incumbent (EMA ``pool_rate``); it
    # starts at 0: one probe slot every _POOL_PROBE-th generation until the pool earns more
    # (CMA-ES keeps the early budget, where mutations of the incumbent duplicate its work).
    # Alone (no CMA-ES, no JAX member), the pool always gets all its slots.
    pool_caps = np.full(len(pool), max(2, lam // 2), np.int32)
    pool_credit = np.zeros(len(pool), np.float32)  # allocation.update's (decay 0.8, reward 1)
    pool_rate = 0.0
    pool_alone = cma is None and dev is None
    move = False  # the model won: evosax's CMA-ES continues from its point at the next tell
    if dev is not None:
        dev_size = dev.mixed.source.size
        dev_ids = np.asarray(dev.mixed.source_ids)
        seed_key = np.asarray(jax.random.key_data(jax.random.key(seed)))
        state = dev.init(jax.random.fold_in(jax.random.key(seed), 2**31 - 1),
                         jnp.asarray(best_x, dtype))  # fmt: skip
        pending = None  # (generation, population, feedback) still to be told
        if not user:
            # A first "tell" of nothing (every fitness -inf is a no-op for the built-in
            # sources) lets every generation go through the one compiled tell-then-ask step.
            pending = (0, np.zeros((dev_size, d), dtype),
                       Feedback(np.full(dev_size, -np.inf, dtype), np.zeros(dev_size, bool),
                                x0.astype(dtype), np.False_))  # fmt: skip
    nit = idle = 0
    status = "budget_exhausted"
    while nfev < budget and not converged:
        # 1. explore: every member's candidates, as blocks (name, points) in evaluation order.
        blocks = []
        extra = None  # the model's Newton candidate, every generation
        if model is not None and model.ready():
            extra = model.propose(best_x)
            if extra is not None:
                blocks.append((_MODEL, extra[None]))
        if cma is not None:
            x_cma = cma.ask()
            blocks.append((host_name, x_cma))
        counts = np.zeros(len(pool), np.int32)
        if pool:
            if pool_alone:
                n_pool = int(pool_caps.sum())
            else:
                n_pool = round(int(pool_caps[0]) * min(1.0, pool_rate / 0.2))
                n_pool = max(n_pool, 1 if nit % _POOL_PROBE == _POOL_PROBE - 1 else 0)
            if n_pool:
                counts = _pool_counts(pool_credit, pool_caps, n_pool)
                for name, src, c in zip(pool_names, pool, counts):
                    if c:
                        blocks.append((name, src.ask(int(c), best_x)))
        if dev is not None:
            x_inc = best_x.astype(dtype)
            if pending is None:
                pop, state = dev.ask(seed_key, np.int32(nit), state, x_inc)
            else:  # the previous generation's tell, fused with this generation's ask
                gen, told, feedback = pending
                pop, state = dev.tell_ask(seed_key, np.int32(gen), state, told, feedback, x_inc,
                                          np.bool_(move))  # fmt: skip
            pop = np.asarray(pop, dtype=np.float64)
            blocks.append(("", pop))
        # 2. assess: clip into the box, skip non-finite points, never exceed the budget.
        if not blocks:  # (only a pool whose slots are all withheld this generation)
            nit, idle = nit + 1, idle + 1
            continue
        x_all = np.concatenate([x for _, x in blocks]) if len(blocks) > 1 else blocks[0][1]
        if box is not None:
            x_all = np.clip(x_all, *box)
        n_all = len(x_all)
        finite = np.isfinite(x_all).all(axis=1)
        everything = n_all <= budget - nfev and finite.all()
        todo = slice(None) if everything else np.flatnonzero(finite)[: budget - nfev]
        values = np.full(n_all, np.nan)
        done = np.ones(n_all, bool) if everything else np.isin(np.arange(n_all), todo)
        n_done = n_all if everything else len(todo)
        if n_done:
            values[todo] = evaluate(x_all[todo])
            nfev += n_done
            seen_finite = seen_finite or not np.isnan(values).all()
            if model is not None:
                model.add(x_all[todo], values[todo])
            idle = 0
        else:
            idle += 1
        nit += 1
        # 3. adapt: the incumbent, then what every member is told.
        ranked = np.where(np.isnan(values), np.inf, values)  # NaN ranks worst, never best
        win = int(np.argmin(ranked))
        improved = ranked[win] < best_f
        if improved:
            best_f, best_x = float(ranked[win]), x_all[win].copy()
            history.append((nfev, best_f))
            converged = ftarget is not None and best_f <= ftarget
        won_by = None
        start = 0
        for name, x in blocks:
            stop = start + len(x)
            n = len(x) if everything else int(done[start:stop].sum())
            if name:
                evals[name] += n
                if improved and start <= win < stop:
                    won_by = name
            else:  # the JAX members: counted and credited per part
                ids = dev_ids if everything else dev_ids[done[start:stop]]
                for i in ids:
                    evals[dev_parts[i]] += 1
                if improved and start <= win < stop:
                    won_by = dev_parts[dev_ids[win - start]]
            start = stop
        if won_by is not None:
            wins[won_by] += 1
        start = 0
        for name, x in blocks:
            stop = start + len(x)
            if name == host_name and (everything or done[start:stop].all()):
                runs = cma.runs  # (pycma must be told its whole generation)
                cma.tell(x_all[start:stop], values[start:stop], exact=box is None)
                if won_by == _MODEL and cma.runs == runs:  # continue from the model's point
                    cma.move_mean(best_x)
            elif not name:
                fitness = np.where(np.isnan(values[start:stop]), -np.inf, -values[start:stop])
                selected = np.arange(start, stop) == win
                selected &= won_by in dev_parts
                feedback = Feedback(fitness.astype(dtype), selected, best_x.astype(dtype),
                                    np.False_)  # fmt: skip
                pending = (nit, x_all[start:stop].astype(dtype), feedback)
            start = stop
        move = won_by == _MODEL
        if pool:
            in_pool = won_by in pool_names
            pool_rate = 0.9 * pool_rate + 0.1 * float(in_pool)
            for name, src, c in zip(pool_names, pool, counts):
                src.tell(tried=bool(c), won=won_by == name)
            if counts.any():  # credit moves only in generations where the pool had slots
                hit = np.array([won_by == n for n in pool_names], np.float32)
                pool_credit = np.float32(0.8) * pool_credit + np.float32(0.2) * hit
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
