"""``minimize``: the black-box front door, EV3's explore → assess → adapt on a vector problem.

Example::

    import numpy as np, ev3evo
    res = ev3evo.minimize(lambda x: float(np.sum((x - 1.0) ** 2)), np.zeros(3), budget=600)
    assert res.fun < 1e-6 and res.nfev <= 600
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..types import Source
from . import generations
from .checks import check_bounds, check_budget, check_sigma0, check_x0
from .noise import NoisyIncumbent
from .objective import evaluator, is_jax_function
from .portfolio import build_portfolio, resolve_sources
from .result import FAILURES, MinimizeResult, message


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
    noise: bool = False,
    throw: bool = False,
) -> MinimizeResult:
    """Minimizes ``fun`` over ``R^D`` (or a box) with at most ``budget`` evaluations.

    A portfolio of members proposes candidates around the best point so far, one generation at
    a time (:mod:`ev3evo.blackbox`); every call of ``fun`` is an evaluation, counted, and no
    call goes beyond the budget. ``fun`` is never traced or probed: it is a host function
    unless declared a JAX one (``jax_fun=True``) or made by ``jax.jit``.

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
      sources: names from :data:`~ev3evo.blackbox.SOURCE_NAMES` and/or
        :class:`~ev3evo.Source` objects (asked around the incumbent every generation).
        ``None``: :data:`~ev3evo.blackbox.DEFAULT_SOURCES`. ``"lq_cma"`` (pycma IPOP
        screened by a surrogate), ``"cma"`` (pycma, IPOP) and ``"cma_bipop"`` (pycma, BIPOP)
        exclude each other; ``"model"`` (the quadratic surrogate) needs at least one other
        source.
      sigma0: initial step size (default: 0.3 × the box width with bounds, else
        ``max(1, 0.3 · max|x0|)``).
      vectorized: a host ``fun`` accepts a whole generation as a 2-D array.
      jax_fun: ``True``: ``fun`` is a JAX function, evaluated ``jit(vmap(fun))`` on the device;
        ``False``: a host function; ``None``: a JAX function when it is an object made by
        ``jax.jit`` (recognized by its type, without calling it) and ``vectorized`` is false,
        else a host function.
      ftarget: stop as ``"converged"`` as soon as a value ``<= ftarget`` is found (with
        ``noise``, an incumbent's mean).
      noise: ``fun`` is noisy (:mod:`~ev3evo.blackbox.noise`): the incumbent changes only when
        a challenger wins a paired test on re-evaluations (counted in the budget, reported as
        ``source_evals["reevaluate"]``, at most a tenth of them), and ``fun``/``x`` of the
        result are the incumbent's mean value and point.
      throw: raise ``RuntimeError`` instead of returning a result whose status is
        ``"all_nan"`` or ``"stalled"``.

    Returns:
      A :class:`~ev3evo.MinimizeResult`.

    Example::

        import jax, jax.numpy as jnp, numpy as np, ev3evo
        res = ev3evo.minimize(jax.jit(lambda x: jnp.sum((x - 1.0) ** 2)), np.zeros(2),
                              budget=300, seed=1)
        assert res.fun < 1e-6 and res.nfev == 300
    """
    x0 = check_x0(x0)
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {fun!r}")
    budget = check_budget(budget)
    box = check_bounds(bounds, x0.size)
    sigma0 = check_sigma0(sigma0, x0, box)
    spec = resolve_sources(sources)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless jax_enable_x64
    if box is not None:
        x0 = np.clip(x0, *box)
    if jax_fun is None:  # a vectorized fun is a host function by definition
        jax_fun = not vectorized and is_jax_function(fun)
    evaluate = evaluator(fun, x0.size, jax_fun=bool(jax_fun), vectorized=vectorized, dtype=dtype)
    f0 = float(evaluate(x0[None])[0])  # the first evaluation: x0
    portfolio = build_portfolio(spec, x0, f0, sigma0=sigma0, seed=seed, budget=budget,
                                dtype=dtype, bounded=box is not None)  # fmt: skip
    progress = generations.start(x0, f0, len(portfolio.names))
    judge = NoisyIncumbent(x0, np.array([f0])) if noise else None
    progress, status = generations.run(portfolio, evaluate, progress, budget=budget, box=box,
                                       ftarget=ftarget, judge=judge)  # fmt: skip
    return _finish(progress, portfolio.names, status, budget=budget, ftarget=ftarget, throw=throw,
                   noise=noise)  # fmt: skip


def _finish(progress, names, status: str, *, budget: int, ftarget, throw: bool,
            noise: bool = False) -> MinimizeResult:  # fmt: skip
    """The result of a run (or the ``RuntimeError`` of a failed one, with ``throw``)."""
    if not progress.seen_finite:
        status = "all_nan"
    text = message(status, ftarget=ftarget, nfev=progress.nfev, budget=budget,
                   stall=generations.STALL)  # fmt: skip
    if throw and status in FAILURES:
        raise RuntimeError(f"minimize failed: {text}")
    evals = dict(zip(names, progress.evals))
    if noise:  # every evaluation that was not a candidate's first (x0 aside)
        evals["reevaluate"] = int(progress.nfev - 1 - sum(progress.evals))
    return MinimizeResult(
        x=np.asarray(progress.best_x, dtype=np.float64),
        fun=float(progress.best_f),
        nfev=int(progress.nfev),
        nit=progress.nit,
        status=status,
        message=text,
        history=np.asarray(progress.history, dtype=np.float64).reshape(-1, 2),
        source_evals=evals,
        source_wins=dict(zip(names, progress.wins)),
    )
