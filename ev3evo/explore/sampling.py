"""Minibatches for rollouts: random windows of one shared shuffle of the train batch.

A rollout step needs a random minibatch for every candidate. Gathering ``batch_size`` random
rows per candidate and step (``x[randint(...)]``) is a gather that XLA:CPU runs element by
element: it was about a third of a vmapped rollout's time (``benchmarks/throughput.py``,
explore, 64-32-10 MLP, minibatches of 128). A permutation per candidate is worse (a sort,
vmapped). Instead each :meth:`ask` shuffles the train batch **once**, shared by every
candidate, and appends its first ``batch_size - 1`` rows so that windows wrap around; a step
then takes ``batch_size`` consecutive rows at a uniformly random offset (a ``dynamic_slice``,
a plain copy). Each minibatch is a uniformly random subset drawn *without* replacement, and
every example is equally likely to be in it; minibatches of different candidates in one step
share rows only when their offsets are closer than ``batch_size``.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.explore import sampling
    batch = {"x": jnp.arange(10.0)[:, None], "y": jnp.arange(10)}
    windows = sampling.prepare(jax.random.key(0), batch, 4)
    mb = sampling.draw(jax.random.key(1), windows, 4)
    assert mb["x"].shape == (4, 1) and len(set(mb["y"].tolist())) == 4
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..types import Batch


def num_examples(batch: Batch) -> int:
    return int(jax.tree.leaves(batch)[0].shape[0])


def prepare(key: jax.Array, batch: Batch, batch_size: int | None) -> Batch:
    """The batch shuffled once, with its first ``batch_size - 1`` rows appended.

    Returns ``batch`` unchanged when ``batch_size`` is ``None`` or covers the whole batch
    (every step then uses all of it).
    """
    n = num_examples(batch)
    if batch_size is None or batch_size >= n:
        return batch
    perm = jax.random.permutation(key, n)
    order = jnp.concatenate([perm, perm[: batch_size - 1]])
    return jax.tree.map(lambda x: jnp.take(x, order, axis=0), batch)


def draw(key: jax.Array, prepared: Batch, batch_size: int | None) -> Batch:
    """``batch_size`` consecutive rows of a :func:`prepare` d batch at a random offset."""
    rows = num_examples(prepared)
    if batch_size is None or batch_size >= rows:
        return prepared
    n = rows - (batch_size - 1)  # the examples before the wrap-around rows
    offset = jax.random.randint(key, (), 0, n)
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, offset, batch_size), prepared)
