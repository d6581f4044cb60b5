"""ev3evo.assess.stats against scipy.stats and textbook implementations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from ev3evo.assess import stats as st

# One compiled program per shape instead of dozens of eagerly dispatched (and compiled) ops.
paired_normal = jax.jit(st.paired_normal, static_argnums=2)


def test_mean_and_se_match_scipy_sem():
    x = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    mean, se = st.mean_and_se(jnp.asarray(x), axis=-1)
    np.testing.assert_allclose(mean, x.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(se, sps.sem(x, axis=-1), rtol=1e-4)
    _, se0 = st.mean_and_se(jnp.asarray(x), axis=0)
    np.testing.assert_allclose(se0, sps.sem(x, axis=0), rtol=1e-4)
    # A single observation has no spread: se 0, not NaN.
    m1, s1 = st.mean_and_se(jnp.ones((4, 1)))
    assert np.all(np.asarray(s1) == 0) and np.all(np.asarray(m1) == 1)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.975, 0.99, 0.001])
def test_normal_quantile_matches_norm_ppf(q):
    assert float(st.normal_quantile(q)) == pytest.approx(sps.norm.ppf(q), rel=1e-5, abs=1e-6)


def _paired_data(n, shifts, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)  # shared per-example difficulty: what pairing removes
    u = np.stack([base + s + 0.5 * rng.normal(size=n) for s in shifts]).astype(np.float32)
    ref = (base + 0.5 * rng.normal(size=n)).astype(np.float32)
    return u, ref


def test_paired_normal_exact_against_norm_sf_and_bounds():
    alpha = 0.05
    u, ref = _paired_data(300, [-0.1, 0.0, 0.05, 0.1, 0.3])
    cmp_ = paired_normal(jnp.asarray(u), jnp.asarray(ref), alpha)
    d = u.astype(np.float64) - ref
    mean, se = d.mean(-1), sps.sem(d, axis=-1)
    z = sps.norm.ppf(1 - alpha)
    np.testing.assert_allclose(cmp_.diff, mean, atol=1e-5)
    np.testing.assert_allclose(cmp_.lower, mean - z * se, atol=1e-4)
    np.testing.assert_allclose(cmp_.upper, mean + z * se, atol=1e-4)
    np.testing.assert_allclose(cmp_.pvalue, sps.norm.sf(mean / se), atol=1e-5, rtol=1e-4)


def test_paired_normal_close_to_one_sided_paired_t_test_for_large_n():
    u, ref = _paired_data(4000, [-0.02, 0.0, 0.01, 0.03], seed=1)
    cmp_ = paired_normal(jnp.asarray(u), jnp.asarray(ref), 0.05)
    for i in range(u.shape[0]):
        t = sps.ttest_rel(u[i], ref, alternative="greater")
        assert float(cmp_.pvalue[i]) == pytest.approx(t.pvalue, abs=2e-3), i


def test_paired_normal_degenerate_differences():
    ref = jnp.asarray(np.random.default_rng(2).normal(size=20), jnp.float32)
    u = jnp.stack([ref, ref + 0.5, ref - 0.5])  # zero variance of the difference
    cmp_ = paired_normal(u, ref, 0.05)
    np.testing.assert_allclose(cmp_.diff, [0.0, 0.5, -0.5], atol=1e-6)
    np.testing.assert_allclose(cmp_.lower, cmp_.diff)
    np.testing.assert_allclose(cmp_.upper, cmp_.diff)
    np.testing.assert_array_equal(cmp_.pvalue, [1.0, 0.0, 1.0])


def holm_textbook(p, alpha, valid):
    """Holm (1979) step-down, written directly: reject p_(1..k) while p_(i) <= alpha/(m-i+1)."""
    idx = [i for i in range(len(p)) if valid[i]]
    m = len(idx)
    reject = np.zeros(len(p), bool)
    for rank, i in enumerate(sorted(idx, key=lambda j: p[j])):
        if p[i] <= alpha / (m - rank):
            reject[i] = True
        else:
            break
    return reject


def test_holm_docstring_example():
    np.testing.assert_array_equal(
        st.holm(jnp.array([0.01, 0.04, 0.03, 0.005]), 0.05), [True, False, False, True]
    )


def test_holm_matches_textbook_on_random_families():
    rng = np.random.default_rng(3)
    holm = jax.jit(st.holm, static_argnums=1)
    for trial in range(60):
        p = rng.uniform(0, 0.06, size=12) ** rng.uniform(0.5, 2.0)
        valid = rng.uniform(size=12) < 0.8 if trial % 3 else np.ones(12, bool)
        got = np.asarray(holm(jnp.asarray(p, jnp.float32), 0.05, jnp.asarray(valid)))
        want = holm_textbook(p.astype(np.float32), 0.05, valid)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}: p={p}, valid={valid}")
    assert not np.asarray(holm(jnp.zeros(12), 0.05, jnp.zeros(12, bool))).any()


def test_bootstrap_counts_rows_sum_to_n():
    counts = np.asarray(st.bootstrap_counts(jax.random.key(0), 37, 250))
    assert counts.shape == (250, 37)
    np.testing.assert_array_equal(counts.sum(1), 37)
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))
    # Each example is drawn with probability 1/n per draw: mean count 1.
    assert abs(counts.mean(0).mean() - 1.0) < 1e-6 and abs(counts.mean() - 1) < 1e-6


def test_bootstrap_values_match_direct_resampling():
    rng = np.random.default_rng(4)
    stats = rng.uniform(size=(3, 20, 2)).astype(np.float32)
    counts = np.asarray(st.bootstrap_counts(jax.random.key(1), 20, 5))
    ratio = lambda m: m[..., 0] / m[..., 1]
    got = np.asarray(st.bootstrap_values(jnp.asarray(stats), jnp.asarray(counts), ratio))
    for r in range(5):
        idx = np.repeat(np.arange(20), counts[r].astype(int))  # the resample itself
        want = stats[:, idx].mean(1)
        np.testing.assert_allclose(got[:, r], want[:, 0] / want[:, 1], rtol=1e-5)


def test_paired_bootstrap_identical_arms_give_zero_difference():
    stats = jnp.asarray(np.random.default_rng(5).uniform(size=(1, 50, 1)), jnp.float32)
    arms = jnp.concatenate([stats, stats])
    @jax.jit
    def compare(arms):
        counts = st.bootstrap_counts(jax.random.key(2), 50, 200)
        values = st.bootstrap_values(arms, counts, lambda m: m[..., 0])
        return st.paired_bootstrap(values, values[1], jnp.zeros(2), 0.05)

    cmp_ = compare(arms)
    np.testing.assert_array_equal(cmp_.lower, 0.0)
    np.testing.assert_array_equal(cmp_.upper, 0.0)
    np.testing.assert_array_equal(cmp_.pvalue, 1.0)  # never evidence of an improvement


def test_paired_bootstrap_agrees_with_normal_theory_and_covers():
    """For a mean (a decomposable metric) the bootstrap bound tracks the normal bound, and a
    true difference of zero is declared positive at about rate alpha."""
    n, reps, trials, alpha = 100, 200, 300, 0.1

    def one(key):
        k_data, k_boot = jax.random.split(key)
        base = jax.random.normal(k_data, (2, n))
        u = jnp.stack([base[0] + 0.5 * base[1], base[0]])  # paired arms, true diff 0
        counts = st.bootstrap_counts(k_boot, n, reps)
        values = st.bootstrap_values(u[..., None], counts, lambda m: m[..., 0])
        boot = st.paired_bootstrap(values, values[1], u.mean(1) - u[1].mean(), alpha)
        normal = st.paired_normal(u, u[1], alpha)
        return boot.lower[0], normal.lower[0], boot.upper[0], normal.upper[0], boot.pvalue[0]

    b_lo, n_lo, b_hi, n_hi, p = map(
        np.asarray, jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), trials))
    )
    print(f"bootstrap vs normal: false-positive rate {np.mean(b_lo > 0):.3f} (alpha {alpha})")
    se = 0.5 / np.sqrt(n)
    assert np.median(np.abs(b_lo - n_lo)) < 0.15 * se
    assert np.median(np.abs(b_hi - n_hi)) < 0.15 * se
    false_positive = np.mean(b_lo > 0)
    # Binomial(300, 0.1): mean 30, sd 5.2; allow 3 sd of Monte-Carlo slack.
    assert false_positive <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials), false_positive
    assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)
