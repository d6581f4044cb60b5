"""Evaluating a whole population on shared examples in one vmapped call."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ..types import Batch, Metric, Params, Population


def batch_size(batch: Batch) -> int:
    """The number of examples in a batch (the shared leading axis of its leaves)."""
    sizes = {int(jnp.shape(x)[0]) for x in jax.tree.leaves(batch) if jnp.ndim(x) > 0}
    if len(sizes) != 1:
        raise ValueError(
            f"evaluation batch leaves must share one leading (example) axis; got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _normalize(metric: Metric, out, n: int):
    shape = tuple(out.shape)
    if len(shape) == 0:
        raise ValueError(
            f"metric {metric.name!r} returned a scalar; a metric must return one score per "
            f"example (shape ({n},)) or per-example statistics (shape ({n}, k))"
        )
    if shape[0] != n:
        raise ValueError(
            f"metric {metric.name!r} returned scores for {shape[0]} examples (shape {shape}) "
            f"but the evaluation batch has {n}; a metric must return one score per example, "
            f"shape ({n},), or per-example statistics, shape ({n}, k)"
        )
    if len(shape) > 2:
        raise ValueError(
            f"metric {metric.name!r} returned shape {shape} for a batch of {n} examples; "
            f"expected ({n},) or ({n}, k)"
        )


def check_metrics(metrics: Sequence[Metric], params: Params, batch: Batch) -> None:
    """Traces every metric once on abstract values and raises a clear error on a bad shape."""
    n = batch_size(batch)
    for m in metrics:
        if not isinstance(m, tuple) or not hasattr(m, "stats"):
            raise TypeError(f"expected an ev3evo.Metric, got {m!r}")
        try:
            out = jax.eval_shape(m.stats, params, batch)
        except (TypeError, ValueError, IndexError, KeyError) as e:
            raise ValueError(
                f"metric {m.name!r} failed on the evaluation batch: {type(e).__name__}: {e}"
            ) from e
        if not hasattr(out, "shape"):
            raise ValueError(f"metric {m.name!r} must return an array, got {type(out).__name__}")
        _normalize(m, out, n)
        if len(out.shape) == 2 and m.decomposable and out.shape[1] != 1:
            raise ValueError(
                f"metric {m.name!r} is marked decomposable but returns {out.shape[1]} statistics "
                "per example; set decomposable=False and give an aggregate"
            )


def evaluate_population(
    metrics: Sequence[Metric], population: Population, batch: Batch
) -> tuple[jax.Array, ...]:
    """Per-example statistics of every member, for every metric.

    Args:
      metrics: the metrics.
      population: parameters with a leading population axis ``A``.
      batch: the shared evaluation examples (``N`` of them).

    Returns:
      One ``(A, N, k)`` float32 array per metric.
    """

    def one(params):
        outs = []
        for m in metrics:
            s = jnp.asarray(m.stats(params, batch), jnp.float32)
            outs.append(s[:, None] if s.ndim == 1 else s)
        return tuple(outs)

    return jax.vmap(one)(population)
