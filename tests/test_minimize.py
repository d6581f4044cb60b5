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
