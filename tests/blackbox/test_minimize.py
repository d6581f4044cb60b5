"""ev3evo.minimize: budget, bounds, NaN, the JAX path, bad input, and solving small problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo
from ev3evo import minimize
from ev3evo.blackbox.host_cma import HostCMA
from ev3evo.blackbox.local import LocalPool, LocalSearch
from ev3evo.blackbox.member import Outcome
from ev3evo.blackbox.model import QuadraticModel

SIGMA0 = 1.0


class Counter:
    """A host objective that counts its calls and the rows it evaluates."""

    def __init__(self, fn, vectorized=False):
        self.fn, self.vectorized = fn, vectorized
        self.calls = self.rows = 0
        self.points: list[np.ndarray] = []

    def __call__(self, x):
        assert isinstance(x, np.ndarray)
        self.calls += 1
        xs = x if self.vectorized else x[None]
        assert xs.ndim == 2
        self.rows += xs.shape[0]
        self.points.extend(xs.copy())
        values = np.array([self.fn(r) for r in xs])
        return values if self.vectorized else float(values[0])


def sphere(x):
    return float(np.sum((x - 0.5) ** 2))


def rosenbrock(x):
    return float(100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2)


@pytest.fixture(scope="module")
def sphere_run():
    f = Counter(sphere)
    return f, minimize(f, np.array([2.0, -1.5]), budget=577, seed=0, sigma0=SIGMA0)


def test_budget_never_exceeded_host(sphere_run):
    f, res = sphere_run
    assert f.calls == res.nfev == 577  # every call counted, none beyond the budget
    assert res.status == "budget_exhausted"
    assert res.fun < 1e-8 and np.allclose(res.x, 0.5, atol=1e-3)
    assert res.fun == min(sphere(p) for p in f.points)  # the reported best is the best seen
    n, best = res.history[:, 0], res.history[:, 1]
    assert np.all(np.diff(n) > 0) and np.all(np.diff(best) < 0) and n[-1] <= 577
    assert sum(res.source_evals.values()) == res.nfev - 1  # x0 is evaluated first
    assert res.source_evals["lq_cma"] > 0 and res.source_wins["lq_cma"] > 0


@pytest.mark.parametrize("budget", [1, 7, 133])
def test_budget_never_exceeded_vectorized(budget):
    f = Counter(sphere, vectorized=True)
    res = minimize(f, np.array([2.0, -1.5]), budget=budget, sigma0=SIGMA0, vectorized=True)
    assert f.rows == res.nfev <= budget and res.nfev == budget
    assert f.calls <= budget


def test_bounds_respected():
    lo, hi = np.array([1.0, -2.0]), np.array([3.0, 0.0])  # the optimum (0.5, 0.5) is outside
    f = Counter(sphere)
    res = minimize(f, np.array([2.0, -1.5]), budget=300, bounds=(lo, hi), sigma0=SIGMA0)
    pts = np.array(f.points)
    assert np.all(pts >= lo) and np.all(pts <= hi)
    assert np.all(res.x >= lo) and np.all(res.x <= hi)
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-3)  # the nearest corner


def test_nan_is_worst_never_best():
    def f(x):
        return float("nan") if x[0] < 0.8 else sphere(x)  # NaN around the true optimum

    res = minimize(f, np.array([2.0, -1.5]), budget=300, sigma0=SIGMA0)
    assert np.isfinite(res.fun) and res.x[0] >= 0.8
    # The best feasible point is (0.8, 0.5) with f = 0.09, on the edge of the NaN region.
    assert 0.09 - 1e-9 <= res.fun < 0.1
    assert not np.any(np.isnan(res.history))


def test_all_nan():
    res = minimize(lambda x: float("nan"), np.zeros(2), budget=20, sigma0=SIGMA0)
    assert res.status == "all_nan" and res.fun == np.inf and "NaN" in res.message
    with pytest.raises(RuntimeError, match="NaN"):
        minimize(lambda x: float("nan"), np.zeros(2), budget=20, sigma0=SIGMA0, throw=True)


def test_jax_fun_path():
    def f(x):
        return jnp.sum((x - 0.5) ** 2)

    res = minimize(f, np.array([2.0, -1.5]), budget=400, seed=1, sigma0=SIGMA0, jax_fun=True)
    assert res.fun < 1e-6 and res.nfev == 400
    assert np.allclose(res.x, 0.5, atol=1e-2)


def _compiled_shapes(caplog, name):
    """The argument shapes of every compilation of ``name`` logged in ``caplog``."""
    return [r.getMessage().split("global shapes and types ")[1].split(")")[0]
            for r in caplog.records
            if f"Compiling jit({name})" in r.getMessage()]  # fmt: skip


def test_a_jitted_function_is_recognized_and_evaluated_batched(caplog):
    @jax.jit
    def jitted_sphere(x):
        return jnp.sum((x - 0.5) ** 2)

    assert ev3evo.blackbox.is_jax_function(jitted_sphere)
    assert not ev3evo.blackbox.is_jax_function(sphere)
    with caplog.at_level("WARNING"), jax.log_compiles():
        res = minimize(jitted_sphere, np.array([2.0, -1.5]), budget=120, seed=1, sigma0=SIGMA0)
    assert res.nfev == 120 and res.fun < 1e-3
    shapes = _compiled_shapes(caplog, "jitted_sphere")
    # evaluated jit(vmap(fun)): whole generations ((n, 2) arrays), never one row at a time
    assert shapes and all("float32[" in s and "," in s.split("[")[1] for s in shapes), shapes
    # vectorized=True: a host function, called with the (n, D) batch (not vmapped)
    res = minimize(jax.jit(lambda x: jnp.sum((x - 0.5) ** 2, axis=1)), np.zeros(2), budget=30,
                   vectorized=True)  # fmt: skip
    assert res.nfev == 30


class SlotsObjective:
    """A callable with ``__slots__`` (it cannot be weakly referenced)."""

    __slots__ = ("calls",)

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return float(np.sum((x - 0.5) ** 2))


def test_a_callable_with_slots_is_a_host_function():
    f = SlotsObjective()
    res = minimize(f, np.array([2.0, -1.5]), budget=200, seed=0, sigma0=SIGMA0)
    assert f.calls == res.nfev == 200 and res.fun < 1e-6


def test_a_host_function_is_called_only_to_evaluate_it():
    """Side effects run once per counted evaluation, never with a tracer, never beyond budget."""
    log = []

    def f(x):
        log.append(x)
        return float(np.sum((x - 0.5) ** 2))

    res = minimize(f, np.array([2.0, -1.5]), budget=150, seed=0, sigma0=SIGMA0)
    assert len(log) == res.nfev == 150
    assert all(type(x) is np.ndarray and x.dtype == np.float64 and x.shape == (2,) for x in log)
    assert not any(isinstance(x, jax.core.Tracer) for x in log)
    np.testing.assert_array_equal(log[0], [2.0, -1.5])  # the first call evaluates x0
    vlog = []

    def fv(x):
        vlog.append(x)
        return np.sum((x - 0.5) ** 2, axis=1)

    res = minimize(fv, np.array([2.0, -1.5]), budget=97, sigma0=SIGMA0, vectorized=True)
    assert sum(len(x) for x in vlog) == res.nfev == 97
    assert all(type(x) is np.ndarray and x.ndim == 2 for x in vlog)


def test_solves_rosenbrock_and_stops_at_ftarget():
    res = minimize(rosenbrock, np.array([-1.0, 1.5]), budget=599, seed=2, sigma0=SIGMA0)
    assert res.fun < 1e-2, res  # from f(x0) = 56.25
    again = minimize(rosenbrock, np.array([-1.0, 1.5]), budget=599, seed=2, sigma0=SIGMA0)
    assert again.fun == res.fun and again.nfev == res.nfev  # reproducible for a seed
    hit = minimize(sphere, np.array([2.0, -1.5]), budget=599, sigma0=SIGMA0, ftarget=1e-3)
    assert hit.status == "converged" and hit.fun <= 1e-3 and hit.nfev < 599


def test_user_sources_and_names():
    res = minimize(sphere, np.array([2.0, -1.5]), budget=200, sources=["gaussian"], sigma0=0.5)
    assert res.fun < 1e-3 and set(res.source_evals) == {"gaussian"}
    src = ev3evo.gaussian(4, 0.05)
    res = minimize(sphere, np.array([0.6, 0.4]), budget=50, sources=[src], sigma0=0.5)
    assert res.fun < sphere(np.array([0.6, 0.4])) and res.nfev == 50


def test_bad_input():
    x0 = np.zeros(2)
    with pytest.raises(ValueError, match="1-D"):
        minimize(sphere, np.zeros((2, 2)), budget=10)
    with pytest.raises(ValueError, match="1-D"):
        minimize(sphere, np.zeros(0), budget=10)
    with pytest.raises(ValueError, match="budget"):
        minimize(sphere, x0, budget=0)
    with pytest.raises(TypeError, match="budget"):
        minimize(sphere, x0, budget=2.5)
    with pytest.raises(ValueError, match=r"lower > upper at index 1"):
        minimize(sphere, x0, budget=10, bounds=([0, 1], [1, 0]))
    with pytest.raises(ValueError, match="unknown source 'bogus'"):
        minimize(sphere, x0, budget=10, sources=["cma", "bogus"])
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: np.ones(3), x0, budget=10, jax_fun=False)
    with pytest.raises(ValueError, match=r"scalar; it returned shape \(2,\) for a \(D,\)"):
        minimize(lambda x: x * 2, x0, budget=10)  # a host function returning a vector
    with pytest.raises(ValueError, match=r"scalar; it returned shape \(2,\)"):
        minimize(jax.jit(lambda x: x * 2), x0, budget=10)  # a JAX function returning a vector
    with pytest.raises(ValueError, match="sigma0"):
        minimize(sphere, x0, budget=10, sigma0=-1.0)
    with pytest.raises(TypeError, match="callable"):
        minimize("sphere", x0, budget=10)
    with pytest.raises(ValueError, match=r"map \(1, 2\) to \(1,\)"):
        minimize(lambda x: np.ones((2, 2)), x0, budget=10, vectorized=True)


def test_quadratic_model_is_exact_on_quadratics_and_waits_for_points():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    h = q @ np.diag(10.0 ** np.arange(0, 8, 2)) @ q.T  # rotated, condition 1e6
    x_opt = rng.uniform(-3, 3, 4)

    def f(x):
        d = np.atleast_2d(x) - x_opt
        return np.einsum("ni,ij,nj->n", d, h, d) + 7.0

    model = QuadraticModel(4, capacity=64)
    x = rng.normal(size=(8, 4))
    model.add(x, f(x))
    assert not model.ready() and model.propose(x[0]) is None  # 8 < 2 (2D + 1) points
    x = np.concatenate([x, rng.normal(size=(30, 4))])
    model = QuadraticModel(4, capacity=64)
    model.add(x, f(x))
    np.testing.assert_allclose(model.propose(x[0]), x_opt, rtol=1e-6)  # the full model
    # non-finite values are skipped; over capacity the best half is kept
    model.add(np.full((3, 4), np.nan), np.ones(3))
    model.add(rng.normal(size=(40, 4)), np.full(40, np.inf))
    assert model.n == 38
    model.add(rng.normal(size=(40, 4)) + 50.0, f(rng.normal(size=(40, 4)) + 50.0))
    assert model.n <= 64 and np.min(model.f[: model.n]) == np.min(f(x))


def test_model_source_solves_an_ill_conditioned_quadratic():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    h = q @ np.diag([1.0, 1e6]) @ q.T

    def ellipsoid(x):
        d = x - 0.5
        return float(d @ h @ d)

    res = minimize(ellipsoid, np.array([2.0, -1.5]), budget=150, seed=0, sigma0=SIGMA0)
    assert res.fun < 1e-10 and res.source_wins["model"] > 0
    assert sum(res.source_evals.values()) == res.nfev - 1
    plain = minimize(ellipsoid, np.array([2.0, -1.5]), budget=150, seed=0, sigma0=SIGMA0,
                     sources=["cma", "gaussian", "cauchy"])  # fmt: skip
    assert "model" not in plain.source_evals and plain.fun > res.fun


def test_model_needs_another_source():
    with pytest.raises(ValueError, match="'model' source needs"):
        minimize(sphere, np.zeros(2), budget=10, sources=["model"])


def test_model_respects_bounds_and_budget():
    lo, hi = np.array([1.0, -2.0]), np.array([3.0, 0.0])
    f = Counter(sphere, vectorized=True)
    res = minimize(f, np.array([2.0, -1.5]), budget=97, bounds=(lo, hi), sigma0=SIGMA0,
                   vectorized=True)  # fmt: skip
    pts = np.array(f.points)
    assert f.rows == res.nfev == 97 and np.all(pts >= lo) and np.all(pts <= hi)
    assert res.source_evals["model"] > 0


def _generation(pool_rows, rest_rows, winner, best_f):
    """The outcome of a generation: the pool's rows first, then the rest's (all evaluated)."""
    n = pool_rows + rest_rows
    x = np.zeros((n, 2))
    return Outcome(x, np.zeros(n), np.ones(n, bool), slice(0, pool_rows), 0 if winner else -1,
                   winner, x[0], best_f)  # fmt: skip


def test_pool_slots_follow_its_efficiency_and_split_by_allocation():
    """No slots at first but a probe every 8th generation; up to capacity once the pool lowers
    the best value faster per evaluation than the rest (twice as fast for as many evaluations
    as the rest); the split between searches is allocation.counts_from_credit of their
    credit."""
    from ev3evo.adapt.allocation import counts_from_credit

    def simulate(pool_gain, rest_gain, generations=40):
        pool = LocalPool(("gaussian", "cauchy"), 0.5, seed=0, capacity=5, alone=False)
        assert [pool.slots(g) for g in range(9)] == [0] * 7 + [1, 0]
        best, slots = 100.0, []
        for g in range(generations):  # the pool wins whenever it has slots
            proposal = pool.ask(np.zeros(2), g)
            n = 0 if proposal is None else len(proposal.x)
            slots.append(n)
            best -= pool_gain if n else rest_gain
            pool.tell(_generation(n, 4, "gaussian" if n else "cma", best))
        return pool, slots

    pool, slots = simulate(pool_gain=1.0, rest_gain=0.01)  # the pool is far more efficient
    assert slots[:8] == [0] * 7 + [1] and slots[-1] == 5  # the probe earned the pool its slots
    assert pool.efficiency() > 2.0
    assert pool.credit[0] > 0.9 and pool.credit[1] == 0.0
    for n in range(1, 11):
        expected = counts_from_credit(pool.credit, pool.capacities, n, 0, 0.1)
        np.testing.assert_array_equal(pool.split(n), expected)
    assert pool.split(5).tolist() == [5, 0] and pool.split(7).tolist() == [5, 2]  # capacity 5
    # many small wins per evaluation do not earn slots against a faster rest of the portfolio
    pool, slots = simulate(pool_gain=0.001, rest_gain=1.0)
    assert max(slots) == 1 and pool.efficiency() < 1.0
    alone = LocalPool(("gaussian", "cauchy"), 0.5, seed=0, capacity=3, alone=True)
    assert alone.slots(0) == 6 and alone.ask(np.zeros(2), 0).part.tolist() == [0, 0, 0, 1, 1, 1]


def test_default_portfolio_compiles_nothing(caplog):
    """The default members (pycma, model, pool) run on the host: no XLA compilation at all."""
    import jax

    f = Counter(rosenbrock, vectorized=True)
    with caplog.at_level("WARNING"), jax.log_compiles():
        res = minimize(f, np.array([-1.0, 1.5]), budget=300, seed=3, sigma0=SIGMA0,
                       vectorized=True)  # fmt: skip
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiles, compiles
    assert res.nfev == 300
    assert set(res.source_evals) == {"lq_cma", "gaussian", "cauchy", "model"}


def test_host_cma_restarts_ipop_and_bipop_and_ranks_nan_worst():
    def flat(x):  # flat fitness (NaN told as worse) stops pycma's runs within a few generations
        return np.where(x[:, 0] > 0, np.nan, 1.0)

    ipop = HostCMA(np.zeros(3), 1.0, seed=4, regime="ipop", popsize=5)
    sizes = [ipop.size]
    while ipop.runs < 4:
        x = ipop.ask()
        ipop.tell(x, flat(x))
        if ipop.size != sizes[-1]:
            sizes.append(ipop.size)
    assert sizes == [5, 10, 20, 40]
    bipop = HostCMA(np.zeros(3), 1.0, seed=4, regime="bipop", popsize=5)
    regimes = []
    for _ in range(20):
        x = bipop.ask()
        bipop.tell(x, flat(x))
        regimes.append(bipop.current)
    assert "small" in regimes and "large" in regimes  # the regime that spent less runs next
    with pytest.raises(ValueError, match="regime"):
        HostCMA(np.zeros(2), 1.0, regime="nope")


def test_host_members_are_deterministic_for_a_seed():
    # pycma samples from numpy's global generator, which it seeds when a run starts
    first = HostCMA(np.ones(4), 0.5, seed=7).ask()
    np.testing.assert_array_equal(first, HostCMA(np.ones(4), 0.5, seed=7).ask())
    g, same = LocalSearch(0.5, "gaussian", seed=7), LocalSearch(0.5, seed=7)
    np.testing.assert_array_equal(g.ask(3, np.zeros(2)), same.ask(3, np.zeros(2)))
    g.tell(tried=True, won=True)
    assert g.sigma == pytest.approx(0.5 * np.exp(1 / 3))
    g.tell(tried=False, won=False)  # no slot: no change
    assert g.sigma == pytest.approx(0.5 * np.exp(1 / 3))
    with pytest.raises(ValueError, match="kind"):
        LocalSearch(0.5, "uniform")


def test_device_members_cma_evosax():
    """The compiled path (evosax's CMA-ES on the device) still honours the contract."""
    f = Counter(sphere, vectorized=True)
    res = minimize(f, np.array([2.0, -1.5]), budget=250, seed=0, sigma0=SIGMA0, vectorized=True,
                   sources=["cma_evosax", "model"])  # fmt: skip
    assert f.rows == res.nfev == 250 and res.fun < 1e-6
    assert res.source_evals["cma_evosax"] > 0 and sum(res.source_evals.values()) == 249
    with pytest.raises(ValueError, match="one of 'lq_cma', 'cma'"):
        minimize(sphere, np.zeros(2), budget=10, sources=["cma", "cma_bipop"])
    with pytest.raises(ValueError, match="one of 'lq_cma', 'cma'"):
        minimize(sphere, np.zeros(2), budget=10, sources=["lq_cma", "cma"])


def test_compiled_steps_are_kept_by_configuration_only():
    """The built-in JAX members' step is reused across calls, from a bounded cache; a step
    with user sources is built per call and never kept."""
    from ev3evo.blackbox.device import _built_in_step

    assert _built_in_step.cache_info().maxsize == 8
    run = lambda: minimize(sphere, np.array([2.0, -1.5]), budget=60, seed=0, sigma0=SIGMA0,
                           sources=["de"])  # fmt: skip
    first = run()
    before = _built_in_step.cache_info()
    again = run()
    after = _built_in_step.cache_info()
    assert after.hits == before.hits + 1 and after.currsize == before.currsize
    assert np.array_equal(first.x, again.x) and first.fun == again.fun  # same seed, same run
    minimize(sphere, np.zeros(2), budget=20, sources=[ev3evo.gaussian(4, 0.1)], sigma0=0.5)
    assert _built_in_step.cache_info().currsize == after.currsize


def test_a_cocoex_problem_is_handed_straight_to_minimize():
    """COCO's problems cannot be traced (tracing one crashes the interpreter): they are host
    functions, each evaluation counted by COCO itself."""
    cocoex = pytest.importorskip("cocoex")
    suite = cocoex.Suite("bbob", "", "dimensions:2,5 instance_indices:1")
    for problem in suite:
        try:
            res = minimize(problem, problem.initial_solution, budget=40, seed=1)
            assert problem.evaluations == res.nfev == 40, problem.id
            assert res.fun == problem.best_observed_fvalue1, problem.id
        finally:
            problem.free()
