"""The surrogate-screened CMA-ES (the "lq_cma" member) and its linear-quadratic surrogate."""

from __future__ import annotations

import numpy as np
import pytest

from ev3evo import minimize
from ev3evo.blackbox.generations import run, start
from ev3evo.blackbox.host_cma import CMAMember, HostCMA
from ev3evo.blackbox.portfolio import Portfolio
from ev3evo.blackbox.screened import ScreenedCMA
from ev3evo.blackbox.surrogate import LQSurrogate, kendall_tau


def rotated_ellipsoid(d, condition, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    h = q @ np.diag(condition ** (np.arange(d) / (d - 1))) @ q.T
    x_opt = rng.uniform(-2, 2, d)

    def f(x):
        z = np.atleast_2d(x) - x_opt
        return np.einsum("ni,ij,nj->n", z, h, z)

    return f, x_opt


def test_the_surrogate_grows_from_linear_to_full_and_is_exact_on_quadratics():
    f, x_opt = rotated_ellipsoid(4, 1e6)
    rng = np.random.default_rng(1)
    m = LQSurrogate(4, lam=8)
    kinds = []
    for _ in range(12):
        x = x_opt + rng.normal(size=(2, 4))
        m.add(x, f(x))
        kinds.append(m.kind)
    # linear, then separable once 0.75 n >= 1.1 (2D + 1), full once 0.75 n >= 1.1 p_full = 16.5
    assert kinds[0] == "linear" and "diagonal" in kinds and kinds[-1] == "full"
    assert kinds.index("diagonal") == 6 and kinds.index("full") == 10  # n = 14 and n = 22
    np.testing.assert_allclose(m.optimum(), x_opt, rtol=1e-6, atol=1e-8)
    x = x_opt + rng.normal(size=(5, 4))
    np.testing.assert_allclose(m.predict(x), f(x), rtol=1e-6, atol=1e-6)
    assert m.kendall(15) == pytest.approx(1.0)


def test_the_archive_keeps_the_newest_points_and_skips_non_finite_ones():
    m = LQSurrogate(2, lam=4)
    assert m.size == 12  # max(2 p_full, λ, 1.1 p_full / 0.75) with p_full = 6
    x = np.arange(40.0).reshape(20, 2)
    m.add(x, np.arange(20.0))
    m.add(np.ones((2, 2)), np.array([np.nan, np.inf]))
    assert m.n == 12 and m.added == 20
    np.testing.assert_array_equal(m.f[: m.n], np.arange(8.0, 20.0))
    m.reset()
    assert m.n == 0 and not m.ready()


def test_refits_wait_for_enough_new_points():
    f, _ = rotated_ellipsoid(3, 10.0)
    rng = np.random.default_rng(2)
    m = LQSurrogate(3, lam=6, refit=5)
    x = rng.normal(size=(30, 3))
    m.add(x, f(x))
    assert m.fit() and m._fitted == 30
    m.add(x[:4] + 0.1, f(x[:4] + 0.1))
    assert m.fit() and m._fitted == 30  # 4 < 5 new points: the fit is kept
    m.add(x[:1] - 0.1, f(x[:1] - 0.1))
    assert m.fit() and m._fitted == 35


def test_kendall_tau_matches_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=17), rng.normal(size=17)
    assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)


def _evaluations_to(member, f, x0, target, budget):
    progress, _ = run(Portfolio((member,), member.names), f, start(x0, float(f(x0)[0]), 1),
                      budget=budget, box=None, ftarget=target)  # fmt: skip
    return progress.nfev if progress.best_f <= target else np.inf


def test_screening_saves_most_evaluations_on_an_ill_conditioned_quadratic():
    f, _ = rotated_ellipsoid(5, 1e6, seed=4)
    x0 = np.zeros(5)
    screened = ScreenedCMA("lq_cma", HostCMA(x0, 1.0, seed=5), exact=True)
    plain = CMAMember("cma", HostCMA(x0, 1.0, seed=5), exact=True)
    n_screened = _evaluations_to(screened, f, x0, 1e-8, 4000)
    n_plain = _evaluations_to(plain, f, x0, 1e-8, 4000)
    assert n_screened < 600 and n_plain > 3 * n_screened, (n_screened, n_plain)
    assert screened.taus and min(screened.taus) >= 0.85  # every trusted generation passed


def test_an_unmodellable_function_is_evaluated_whole_generation_by_generation():
    rng = np.random.default_rng(6)

    def noise(x):  # values unrelated to x: the model never ranks
        return rng.uniform(size=len(x))

    member = ScreenedCMA("lq_cma", HostCMA(np.zeros(3), 1.0, seed=7), exact=True)
    progress, _ = run(Portfolio((member,), member.names), noise, start(np.zeros(3), 1.0, 1),
                      budget=600, box=None, ftarget=None)  # fmt: skip
    assert progress.nfev == 600 and member.failures >= 3
    # off trust, a loop generation is a whole CMA-ES generation
    assert progress.nit < 600 / member.cma.size + 40


def test_minimize_default_portfolio_solves_a_rotated_ellipsoid_early():
    f, _ = rotated_ellipsoid(8, 1e6, seed=8)
    res = minimize(lambda x: float(f(x)[0]), np.zeros(8), budget=8000, seed=1, ftarget=1e-8)
    assert res.status == "converged" and res.nfev < 2000, res.nfev
    assert res.source_wins["lq_cma"] > 0
