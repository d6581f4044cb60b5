"""ev3evo.minimize: budget, bounds, NaN, the JAX path, bad input, and solving small problems.

All default-portfolio runs share one configuration (D = 2, sigma0 = 1, budget < 600: one rung
of the restart ladder), so the portfolio is compiled once for the whole file.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo
from ev3evo.minimize import minimize

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
    assert res.source_evals["cma"] > 0 and res.source_wins["cma"] > 0


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

    res = minimize(f, np.array([2.0, -1.5]), budget=400, seed=1, sigma0=SIGMA0)
    assert res.fun < 1e-6 and res.nfev == 400
    assert np.allclose(res.x, 0.5, atol=1e-2)


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
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x * 2, x0, budget=10)  # a JAX function returning a vector
    with pytest.raises(ValueError, match="sigma0"):
        minimize(sphere, x0, budget=10, sigma0=-1.0)
    with pytest.raises(TypeError, match="callable"):
        minimize("sphere", x0, budget=10)
    with pytest.raises(ValueError, match=r"map \(1, 2\) to \(1,\)"):
        minimize(lambda x: np.ones((2, 2)), x0, budget=10, vectorized=True)


def test_quadratic_model_is_exact_on_quadratics_and_waits_for_points():
    from ev3evo.minimize_sources import QuadraticModel

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


def test_pool_counts_match_allocation_rules():
    """The host-side pool split is allocation.counts_from_credit (min 0, prior 0.1)."""
    from ev3evo.adapt import allocation
    from ev3evo.minimize import _pool_counts

    rng = np.random.default_rng(3)
    for _ in range(200):
        caps = rng.integers(1, 6, size=int(rng.integers(1, 4))).astype(np.int32)
        credit = (rng.random(caps.size) * rng.integers(0, 2, caps.size)).astype(np.float32)
        n = int(rng.integers(1, caps.sum() + 1))
        expected = allocation.counts_from_credit(jnp.asarray(credit), jnp.asarray(caps), n, 0, 0.1)
        np.testing.assert_array_equal(_pool_counts(credit, caps, n), np.asarray(expected))
    assert not _pool_counts(np.zeros(2, np.float32), np.array([3, 3], np.int32), 0).any()


def test_default_portfolio_compiles_nothing(caplog):
    """The default members (pycma, model, pool) run on the host: no XLA compilation at all."""
    import jax

    f = Counter(rosenbrock, vectorized=True)
    with caplog.at_level("WARNING"), jax.log_compiles():
        res = minimize(f, np.array([-1.0, 1.5]), budget=300, seed=3, sigma0=SIGMA0,
                       vectorized=True)  # fmt: skip
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiles, compiles
    assert res.nfev == 300 and set(res.source_evals) == {"cma", "gaussian", "cauchy", "model"}


def test_host_cma_restarts_ipop_and_bipop_and_ranks_nan_worst():
    from ev3evo.minimize_sources import HostCMA

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
    from ev3evo.minimize_sources import HostCMA, LocalSearch

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
    with pytest.raises(ValueError, match="one of 'cma'"):
        minimize(sphere, np.zeros(2), budget=10, sources=["cma", "cma_bipop"])
