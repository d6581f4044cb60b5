"""Evaluating a whole population on shared examples in one vmapped call.

Example::

    import jax.numpy as jnp, ev3evo
    from ev3evo.assess.evaluate import evaluate_population
    acc = ev3evo.metrics.accuracy(lambda p, x: x @ p["w"])
    population = {"w": jnp.stack([jnp.eye(2), -jnp.eye(2)])}   # a right and a wrong model
    (stats,) = evaluate_population([acc], population, {"x": jnp.eye(2), "y": jnp.arange(2)})
    assert stats[:, :, 0].mean(axis=1).tolist() == [1.0, 0.0]
"""

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


# Members evaluated together in one vectorized chunk: about this many (member, example) pairs.
# A whole population at once materializes (P, N, width) activations that fall out of cache for
# large P·N, and XLA:CPU's achieved FLOP/s then drops by 2-4x; chunks of ~8192 member-examples
# keep them cache-sized (benchmarks/throughput.py, assess: P=512, B=4096 went from 13-23% of
# the matmul peak to 40-90%). Small populations are one chunk, i.e. a plain vmap.
# An accelerator wants the opposite: chunks run one after another, each far too small to fill
# the chip (H200, P=512, B=4096: 3.1 ms in 256 chunks); there the budget only bounds memory
# (2^22 member-examples of a 1024-wide layer are 16 GiB of float32 activations).
CHUNK_MEMBER_EXAMPLES = 8192
CHUNK_MEMBER_EXAMPLES_ACCELERATOR = 1 << 22


def auto_chunk_size(
    population_size: int, num_examples: int, backend: str | None = None
) -> int | None:
    """The members per chunk :func:`evaluate_population` uses; ``None`` means all at once.

    ``backend`` defaults to ``jax.default_backend()``: cache-sized chunks on CPU, memory-sized
    ones on an accelerator.
    """
    cpu = (backend or jax.default_backend()) == "cpu"
    budget = CHUNK_MEMBER_EXAMPLES if cpu else CHUNK_MEMBER_EXAMPLES_ACCELERATOR
    chunk = max(1, budget // max(1, num_examples))
    return None if chunk >= population_size else chunk


def evaluate_population(
    metrics: Sequence[Metric], population: Population, batch: Batch, chunk_size="auto",
    live=None,
) -> tuple[jax.Array, ...]:
    """Per-example statistics of every member, for every metric.

    Args:
      metrics: the metrics.
      population: parameters with a leading population axis ``A``.
      batch: the shared evaluation examples (``N`` of them).
      chunk_size: members evaluated together (``jax.lax.map`` over chunks, ``vmap`` inside
        each); ``"auto"`` picks cache-sized chunks (:func:`auto_chunk_size`), ``None``
        evaluates the whole population in one ``vmap`` (what a population sharded over
        devices needs).
      live: optional ``(A,)`` bool, the members whose statistics are needed; with chunks, a
        chunk without a live member is skipped (its statistics are zeros), so that unused and
        invalid slots cost no evaluation.

    Returns:
      One ``(A, N, k)`` float32 array per metric.

    Example::

        import jax, jax.numpy as jnp, ev3evo
        from ev3evo.assess.evaluate import evaluate_population
        acc = ev3evo.metrics.accuracy(lambda p, x: x @ p["w"])
        pop = {"w": jnp.zeros((5, 3, 2))}
        batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros(4, jnp.int32)}
        (stats,) = evaluate_population([acc], pop, batch, chunk_size=2)
        assert stats.shape == (5, 4, 1)
    """

    def one(params):
        outs = []
        for m in metrics:
            s = jnp.asarray(m.stats(params, batch), jnp.float32)
            outs.append(s[:, None] if s.ndim == 1 else s)
        return tuple(outs)

    size = jax.tree.leaves(population)[0].shape[0]
    if chunk_size == "auto":
        chunk_size = auto_chunk_size(size, batch_size(batch))
    elif chunk_size is not None:
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, 'auto' or None; got {chunk_size}")
    if chunk_size is None or chunk_size >= size:
        return jax.vmap(one)(population)
    if live is None:
        return jax.lax.map(one, population, batch_size=chunk_size)
    return _skipping_map(one, population, jnp.asarray(live, bool), chunk_size)


def _skipping_map(one, population, live, chunk_size: int):
    """``lax.map`` over chunks of members, each chunk without a live member skipped."""
    size = live.shape[0]
    pad = (-size) % chunk_size
    padded = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]),
                          population) if pad else population
    live = jnp.concatenate([live, jnp.zeros(pad, bool)])
    chunks = jax.tree.map(lambda x: x.reshape(-1, chunk_size, *x.shape[1:]), padded)
    shapes = jax.eval_shape(jax.vmap(one), jax.tree.map(lambda x: x[0], chunks))

    def chunk(args):
        members, alive = args
        return jax.lax.cond(jnp.any(alive), jax.vmap(one),
                            lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                            members)

    out = jax.lax.map(chunk, (chunks, live.reshape(-1, chunk_size)))
    return tuple(x.reshape(-1, *x.shape[2:])[:size] for x in out)
