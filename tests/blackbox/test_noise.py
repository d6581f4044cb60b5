"""minimize(noise=True): re-evaluations counted in the budget, a paired test before the
incumbent changes, and a returned point that is not a lucky draw."""

from __future__ import annotations

import numpy as np
import pytest

from ev3evo import minimize
from ev3evo.blackbox.noise import NoisyIncumbent


class NoisySphere:
    """``|x - 1|^2 (1 + 0.5 N(0, 1))`` plus additive noise, counting its calls."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def true(self, x):
        return float(np.sum((np.asarray(x) - 1.0) ** 2))

    def __call__(self, x):
        self.calls += 1
        t = self.true(x)
        return t * (1 + 0.5 * self.rng.standard_normal()) + 0.01 * self.rng.standard_normal()


def test_re_evaluations_are_counted_and_reported():
    f = NoisySphere(0)
    res = minimize(f, np.zeros(4), budget=1500, seed=1, noise=True)
    assert f.calls == res.nfev == 1500
    assert set(res.source_evals) == {"lq_cma", "model", "gaussian", "cauchy", "reevaluate"}
    assert 0 < res.source_evals["reevaluate"] <= 0.1 * res.nfev
    assert sum(res.source_evals.values()) == res.nfev - 1


def test_the_noise_aware_point_is_better_than_the_luckiest_draw():
    true_with, true_without = [], []
    for seed in range(1, 4):
        res = minimize(NoisySphere(seed), np.zeros(4), budget=1500, seed=seed, noise=True)
        true_with.append(NoisySphere(0).true(res.x))
        plain = minimize(NoisySphere(seed), np.zeros(4), budget=1500, seed=seed)
        true_without.append(NoisySphere(0).true(plain.x))
        assert plain.fun < 0.5 * true_without[-1]  # a single lucky value was reported
    assert np.median(true_with) < np.median(true_without), (true_with, true_without)


def test_the_paired_test_keeps_the_incumbent_against_a_lucky_draw():
    rng = np.random.default_rng(5)

    def f(x):
        return np.sum(x**2, axis=1) + 0.1 * rng.standard_normal(len(x))

    judge = NoisyIncumbent(np.zeros(2), np.array([0.0]), pairs=4, alpha=0.05, share=0.5)
    won, spent = judge.challenge(np.ones(2), -5.0, f, remaining=100, nfev=20)  # truly worse
    assert not won and spent == 7 and np.array_equal(judge.x, np.zeros(2))
    assert judge.tests == 1 and judge.values.size == 5  # the incumbent's fresh values kept
    won, spent = judge.challenge(np.ones(2), 10.0, f, remaining=100, nfev=40)  # above the mean
    assert (won, spent) == (False, 0)
    won, spent = judge.challenge(np.ones(2), -5.0, f, remaining=6, nfev=40)  # budget too small
    assert (won, spent) == (False, 0)
    won, spent = judge.challenge(np.ones(2), -5.0, f, remaining=100, nfev=10)  # share spent
    assert (won, spent) == (False, 0) and judge.spent == 7


def test_noise_mode_respects_budget_and_bad_input():
    f = NoisySphere(2)
    res = minimize(f, np.zeros(3), budget=37, seed=1, noise=True)
    assert f.calls == res.nfev <= 37
    with pytest.raises(ValueError, match="budget"):
        minimize(f, np.zeros(3), budget=0, noise=True)
