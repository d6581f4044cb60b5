"""Statistics on device: means, standard errors, paired differences, confidence bounds, Holm.

Every arm (candidate, current model, stable model) is scored on the *same* examples, so the
comparisons are paired: for arms ``a`` and ``b`` with per-example utilities ``u_a, u_b`` the
difference ``d_n = u_a[n] - u_b[n]`` removes the between-example variance that dominates
unpaired comparisons. For a decomposable metric the mean difference is asymptotically normal:

    mean(d) ± z_{1-α} · sd(d) / sqrt(N)                                    (CLT, one-sided)

For a metric that is a nonlinear function of means (macro-F1, calibration error) the same
bound comes from the bootstrap: resample the examples (the same resample for every arm, which
keeps the pairing), recompute each arm's value, take the ``α`` quantile of the differences
(percentile method, Efron & Tibshirani 1993, ch. 13).

Multiplicity: a step tests every candidate against the stable model; Holm's step-down
procedure (Holm 1979) keeps the family-wise error rate at ``α`` across all of them.

Example::

    import jax.numpy as jnp
    from ev3evo.assess.stats import paired_normal
    better = jnp.array([[1.0, 1.0, 1.0, 0.0] * 50])               # one arm, 200 examples
    stable = jnp.array([1.0, 0.0, 1.0, 0.0] * 50)
    c = paired_normal(better, stable, alpha=0.05)
    assert float(c.diff[0]) == 0.25 and float(c.lower[0]) > 0 and float(c.pvalue[0]) < 0.05
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri

from ..types import Array, Metric, PRNGKey


class Comparison(NamedTuple):
    """A paired comparison of arms against a reference arm.

    Attributes:
      diff: point estimate of ``value(arm) - value(reference)``.
      lower: one-sided lower confidence bound on the difference at level ``1 - alpha``.
      upper: one-sided upper confidence bound on the difference at level ``1 - alpha``.
      pvalue: one-sided p-value of ``H0: diff <= 0`` against ``H1: diff > 0``.
    """

    diff: Array
    lower: Array
    upper: Array
    pvalue: Array


def mean_and_se(x: Array, axis: int = -1) -> tuple[Array, Array]:
    """Mean and standard error of the mean (``ddof=1``) along ``axis``.

    Example::

        import jax.numpy as jnp
        from ev3evo.assess.stats import mean_and_se
        m, se = mean_and_se(jnp.array([1.0, 2.0, 3.0, 4.0]))  # 2.5, 0.6455
    """
    n = x.shape[axis]
    mean = jnp.mean(x, axis=axis)
    var = jnp.var(x, axis=axis, ddof=1) if n > 1 else jnp.zeros_like(mean)
    return mean, jnp.sqrt(var / n)


def normal_quantile(q) -> Array:
    """Standard normal quantile ``Φ⁻¹(q)``."""
    return ndtri(jnp.asarray(q, jnp.float32))


def paired_normal(u: Array, u_ref: Array, alpha: float) -> Comparison:
    """Paired comparison of arms ``u`` ``(A, N)`` against ``u_ref`` ``(N,)`` (normal theory).

    Zero variance (identical arms, or a constant difference) gives a degenerate but exact
    answer: the bounds equal the difference, and the p-value is 0 or 1.
    """
    d = u - u_ref[None, :]
    mean, se = mean_and_se(d, axis=-1)
    z = normal_quantile(1.0 - alpha)
    lower = mean - z * se
    upper = mean + z * se
    safe_se = jnp.where(se > 0, se, 1.0)
    p = jnp.where(se > 0, 1.0 - ndtr(mean / safe_se), jnp.where(mean > 0, 0.0, 1.0))
    return Comparison(mean, lower, upper, p)


def bootstrap_counts(key: PRNGKey, n: int, replicates: int) -> Array:
    """``(replicates, n)`` multinomial resampling counts (each row sums to ``n``)."""
    idx = jax.random.randint(key, (replicates, n), 0, n)
    rows = jnp.broadcast_to(jnp.arange(replicates)[:, None], idx.shape)
    return jnp.zeros((replicates, n), jnp.float32).at[rows, idx].add(1.0)


def bootstrap_values(stats: Array, counts: Array, aggregate) -> Array:
    """Metric values of every arm under every resample.

    Args:
      stats: ``(A, N, k)`` per-example statistics of ``A`` arms.
      counts: ``(R, N)`` resampling counts shared by all arms (keeps the pairing).
      aggregate: ``(..., k) -> (...)``.

    Returns:
      ``(A, R)`` values.
    """
    n = stats.shape[1]
    means = jnp.einsum("rn,ank->ark", counts, stats) / n
    return aggregate(means)


def paired_bootstrap(values: Array, ref_values: Array, point: Array, alpha: float) -> Comparison:
    """Percentile-bootstrap comparison from resampled values.

    Args:
      values: ``(A, R)`` arm values under each resample.
      ref_values: ``(R,)`` the reference arm's values under the same resamples.
      point: ``(A,)`` the point estimates of the differences on the full sample.
      alpha: one-sided level.
    """
    d = values - ref_values[None, :]
    lower = jnp.quantile(d, alpha, axis=-1)
    upper = jnp.quantile(d, 1.0 - alpha, axis=-1)
    r = d.shape[-1]
    # Bootstrap p-value of H0: diff <= 0, with the +1 correction that keeps it valid.
    p = (jnp.sum(d <= 0, axis=-1) + 1.0) / (r + 1.0)
    return Comparison(point, lower, upper, p)


def holm(pvalues: Array, alpha: float, valid: Array | None = None) -> Array:
    """Holm's step-down procedure: which hypotheses to reject at family-wise level ``alpha``.

    Hypotheses where ``valid`` is false are not tested (never rejected) and do not count
    towards the family size.

    Args:
      pvalues: ``(m,)`` p-values.
      alpha: family-wise error rate.
      valid: optional ``(m,)`` bool mask of the hypotheses actually tested.

    Returns:
      ``(m,)`` bool, true where the hypothesis is rejected.

    Example::

        import jax.numpy as jnp
        from ev3evo.assess.stats import holm
        holm(jnp.array([0.01, 0.04, 0.03, 0.005]), 0.05)  # [True, False, False, True]
    """
    pvalues = jnp.asarray(pvalues, jnp.float32)
    if valid is None:
        valid = jnp.ones(pvalues.shape, bool)
    m = jnp.sum(valid)
    p = jnp.where(valid, pvalues, jnp.inf)
    order = jnp.argsort(p)
    sorted_p = p[order]
    rank = jnp.arange(p.shape[0])
    thresholds = alpha / jnp.maximum(m - rank, 1)
    passes = (sorted_p <= thresholds) & (rank < m)
    # Step-down: reject the first k hypotheses where every one of the first k passes.
    accepted_prefix = jnp.cumprod(passes.astype(jnp.int32)).astype(bool)
    return jnp.zeros(p.shape, bool).at[order].set(accepted_prefix)


def compare(
    key: PRNGKey, metric: Metric, stats: Array, ref: int, alpha: float, replicates: int
) -> Comparison:
    """Paired comparison of every arm's utility against arm ``ref``.

    Args:
      stats: ``(A, N, k)`` per-example statistics of this metric.
    """
    sign = 1.0 if metric.maximize else -1.0
    if metric.decomposable:
        u = sign * stats[..., 0]
        return paired_normal(u, u[ref], alpha)
    counts = bootstrap_counts(key, stats.shape[1], replicates)
    boot = sign * bootstrap_values(stats, counts, metric.aggregate)  # (A, R)
    point = sign * metric.aggregate(jnp.mean(stats, axis=1))
    return paired_bootstrap(boot, boot[ref], point - point[ref], alpha)
