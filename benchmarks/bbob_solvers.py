"""The solvers of the BBOB benchmark, each given the same problem, start, step size and budget.

Every solver gets a :class:`bbob_problems.Budgeted` COCO problem ``f``, the start point
``x0`` (COCO's ``initial_solution``, the origin), the initial step size ``SIGMA0`` = 2 (a fifth
of the search domain ``[-5, 5]^D``, as COCO's examples use) and a seed; it is stopped by the
exception ``f`` raises at the end of the budget or at COCO's final target.

* ``ev3evo``: :func:`ev3evo.minimize`, default portfolio; ``ev3evo-noise``: with
  ``noise=True`` (re-evaluations and a paired test before the returned point changes);
* ``pycma-ipop``, ``pycma-bipop``: ``cma.fmin2`` with 9 restarts (IPOP, BIPOP);
* ``lq-cma``: ``cma.fmin_lq_surr2`` (lq-CMA-ES, IPOP restarts);
* ``pycma-noise``: ``cma.fmin2`` (IPOP) with a ``cma.NoiseHandler`` (adaptive re-evaluation);
* ``evosax-cma``: evosax's ``CMA_ES`` through :mod:`ev3evo.explore.evosax.driver`, with IPOP
  restarts on evosax's own stop criteria (:mod:`ev3evo.explore.evosax.schedule`), every run
  starting at ``x0``;
* ``ng-ngopt``, ``ng-cma``: nevergrad's ``NGOpt`` and plain CMA-ES
  (``ParametrizedCMA(scale=1)``).

Example (with ``benchmarks/`` on ``sys.path``)::

    import bbob_solvers
    assert "lq-cma" in bbob_solvers.SOLVERS and bbob_solvers.SIGMA0 == 2.0
"""

from __future__ import annotations

import gc
import math

import numpy as np

SIGMA0 = 2.0
#: pycma's restarts for every pycma solver (the budget stops them first).
RESTARTS = 9


def _pycma_options(f, seed: int) -> dict:
    return {"maxfevals": f.budget, "seed": seed + 1, "verbose": -9, "verb_log": 0,
            "verb_disp": 0}  # fmt: skip


def solve_ev3evo(f, x0: np.ndarray, seed: int) -> None:
    from ev3evo import minimize

    res = minimize(f, x0, budget=f.budget, seed=seed, sigma0=SIGMA0)
    if res.nfev > f.budget:
        raise RuntimeError(f"ev3evo.minimize spent {res.nfev} > budget {f.budget}")


def solve_ev3evo_noise(f, x0: np.ndarray, seed: int) -> None:
    from ev3evo import minimize

    minimize(f, x0, budget=f.budget, seed=seed, sigma0=SIGMA0, noise=True)


def solve_pycma(f, x0, seed, bipop=False) -> None:
    import cma

    cma.fmin2(f, x0, SIGMA0, _pycma_options(f, seed), restarts=RESTARTS, incpopsize=2,
              bipop=bipop)  # fmt: skip


def solve_pycma_bipop(f, x0, seed) -> None:
    solve_pycma(f, x0, seed, bipop=True)


def solve_pycma_noise(f, x0, seed) -> None:
    import cma

    cma.fmin2(f, x0, SIGMA0, _pycma_options(f, seed), restarts=RESTARTS, incpopsize=2,
              noise_handler=cma.NoiseHandler(len(x0)))  # fmt: skip


def solve_lq_cma(f, x0, seed) -> None:
    import cma

    cma.fmin_lq_surr2(f, x0, SIGMA0, _pycma_options(f, seed), restarts=RESTARTS, incpopsize=2)


_EVOSAX: dict = {}


def _evosax_algorithm(dim: int, lam: int):
    """One driver Algorithm per (dim, population): evosax's jitted steps key on the object."""
    import jax

    from ev3evo.explore.evosax import driver

    if (dim, lam) not in _EVOSAX:
        algo = driver.algorithm("CMA_ES", lam, np.zeros(dim), init_std=SIGMA0)
        # An Algorithm is a static pytree node: jit keys its cache on it.
        _EVOSAX[(dim, lam)] = (algo, jax.jit(driver.ask), jax.jit(driver.tell))
    return _EVOSAX[(dim, lam)]


def solve_evosax(f, x0, seed) -> None:
    """evosax CMA-ES through ev3evo's driver, IPOP restarts on evosax's stop criteria."""
    import jax
    import jax.numpy as jnp

    from ev3evo.explore.evosax import driver
    from ev3evo.explore.evosax import schedule as sch

    dim = x0.size
    lam = 4 + int(3 * math.log(dim))
    schedule = sch.ipop(levels=1, min_num_gens=10)  # levels: the population grows below
    should = jax.jit(lambda p, fit, st, par, rs: sch.should_restart(schedule, p, fit, st, par, rs))
    key = jax.random.key(seed)
    restarts = 0
    while True:
        algo, ask, tell = _evosax_algorithm(dim, lam * 2**restarts)
        key, k_init = jax.random.split(key)
        state = driver.init(k_init, algo, jnp.asarray(x0, jnp.float32))
        rstate = sch.init_state()
        while True:
            key, k_ask, k_tell = jax.random.split(key, 3)
            pop, state = ask(k_ask, algo, state)
            values = f.batch(np.asarray(pop, np.float64))
            fitness = jnp.asarray(-values, jnp.float32)  # the driver's fitness: higher is better
            state = tell(k_tell, algo, state, pop, fitness)
            if bool(should(pop, -fitness, state, algo.params, rstate)):
                restarts += 1
                break


def _nevergrad(f, x0, seed, make, generation: bool) -> None:
    """Ask/tell one candidate at a time, or (``generation``, CMA) a whole generation at once:
    pycma inside nevergrad updates only once a full generation is told, so both propose the
    same points."""
    import nevergrad as ng

    param = ng.p.Array(init=x0).set_mutation(sigma=SIGMA0)
    param.random_state = np.random.RandomState(seed)
    opt = make(ng, param, f.budget)
    lam = int(getattr(opt, "_popsize", 1)) if generation else 1
    try:
        while True:
            candidates = [opt.ask() for _ in range(lam)]
            for c in candidates:
                opt.tell(c, f(c.value))
    finally:
        # Optimizers wrapping scipy or pycma run in a non-daemon thread that keeps the
        # interpreter alive at exit unless the optimizer is collected.
        del opt
        gc.collect()


def solve_ngopt(f, x0, seed) -> None:
    _nevergrad(f, x0, seed, lambda ng, p, b: ng.optimizers.NGOpt(parametrization=p, budget=b),
               generation=False)  # fmt: skip


def solve_ngcma(f, x0, seed) -> None:
    _nevergrad(f, x0, seed,
               lambda ng, p, b: ng.families.ParametrizedCMA(scale=1.0)(parametrization=p,
                                                                        budget=b),
               generation=True)  # fmt: skip


#: The modules each solver imports (imported before its runs are timed).
IMPORTS = {"ev3evo": ("ev3evo",), "ev3evo-noise": ("ev3evo",), "evosax-cma": ("ev3evo", "evosax"),
           "ng-ngopt": ("nevergrad",), "ng-cma": ("nevergrad",)}  # fmt: skip


def prepare(solver: str) -> None:
    """Imports what ``solver`` needs (pycma for all), so that no run's time includes it."""
    import importlib

    for module in ("cma", *IMPORTS.get(solver, ())):
        importlib.import_module(module)


#: Solver name -> ``solve(f, x0, seed)``.
SOLVERS = {
    "ev3evo": solve_ev3evo,
    "pycma-ipop": solve_pycma,
    "pycma-bipop": solve_pycma_bipop,
    "lq-cma": solve_lq_cma,
    "evosax-cma": solve_evosax,
    "ng-ngopt": solve_ngopt,
    "ng-cma": solve_ngcma,
    "ev3evo-noise": solve_ev3evo_noise,
    "pycma-noise": solve_pycma_noise,
}
#: The solvers of each suite's default run.
DEFAULT = {
    "bbob": ("ev3evo", "pycma-ipop", "pycma-bipop", "lq-cma", "evosax-cma", "ng-ngopt",
             "ng-cma"),
    "bbob-noisy": ("ev3evo-noise", "ev3evo", "pycma-noise", "pycma-ipop"),
}  # fmt: skip
