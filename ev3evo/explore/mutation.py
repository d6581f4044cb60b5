"""Mutation operators and the adapter that turns any ``(key, params) -> params`` into a source.

Example (a custom operator, plugged in the way the built-ins below are written)::

    import jax, jax.numpy as jnp
    import ev3evo

    def flip_sign(key, params):  # any (key, params) -> params function
        return jax.tree.map(lambda x: jnp.where(jax.random.bernoulli(key, 0.01, x.shape), -x, x),
                            params)

    source = ev3evo.mutation(flip_sign, size=8, name="flip")
    params = {"w": jnp.ones(3)}
    state = source.init(jax.random.key(0), params)
    population, state = source.ask(jax.random.key(1), state, params, None, jnp.ones(8, bool))
    assert population["w"].shape == (8, 3)

The operator is vmapped over ``size`` independent keys by the library.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._checks import check_positive_int
from ..types import Feedback, MutationFn, Params, PRNGKey, Source


def mutation(fn: MutationFn, size: int, name: str | None = None) -> Source:
    """A stateless source: ``size`` candidates ``fn(key_i, params)`` with independent keys.

    Args:
      fn: a pure function ``(key, params) -> params`` (it is vmapped over keys).
      size: number of candidates per step.
      name: the source's name (defaults to the function's name).

    Returns:
      A :class:`~ev3evo.Source` whose state is empty.
    """
    check_positive_int(size, "size")
    if not callable(fn):
        raise TypeError(f"mutation operator must be callable (key, params) -> params, got {fn!r}")
    name = name or getattr(fn, "__name__", "mutation")

    def init(key, params):
        del key, params
        return ()

    def ask(key, state, params, batch, active):
        del batch, active
        keys = jax.random.split(key, size)
        return jax.vmap(fn, in_axes=(0, None))(keys, params), state

    def tell(key, state, population, feedback: Feedback):
        del key, population, feedback
        return state

    return Source(init, ask, tell, size, name)


def _flat_noise(key: PRNGKey, params: Params, noise):
    """``params + unravel(noise(key, d))``: one random draw for the whole pytree.

    Drawing once for the ravelled vector (rather than once per leaf) keeps the compiled
    program small: each random draw is a separate threefry kernel for XLA to compile.
    """
    flat, unravel = ravel_pytree(params)
    return unravel(flat + noise(key, flat.shape).astype(flat.dtype))


def gaussian_mutation(sigma: float = 0.01):
    """``params + sigma * N(0, I)`` on every parameter."""

    def gaussian(key, params):
        return _flat_noise(key, params, lambda k, shape: sigma * jax.random.normal(k, shape))

    return gaussian


def cauchy_mutation(scale: float = 0.01):
    """``params + scale * Cauchy(0, 1)``: heavy tails give occasional long jumps."""

    def cauchy(key, params):
        return _flat_noise(key, params, lambda k, shape: scale * jax.random.cauchy(k, shape))

    return cauchy


def sparse_mutation(sigma: float = 0.05, rate: float = 0.05):
    """Gaussian noise on a random fraction ``rate`` of the entries, the rest unchanged."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"sparse_mutation rate must be in (0, 1], got {rate}")

    def noise(k, shape):
        k_mask, k_noise = jax.random.split(k)
        mask = jax.random.bernoulli(k_mask, rate, shape)
        return jnp.where(mask, sigma * jax.random.normal(k_noise, shape), 0.0)

    def sparse(key, params):
        return _flat_noise(key, params, noise)

    return sparse


def per_layer_mutation(sigma: float = 0.02):
    """Gaussian noise on one parameter array (layer) chosen uniformly, the others unchanged."""

    def per_layer(key, params):
        leaves = jax.tree.leaves(params)
        flat, unravel = ravel_pytree(params)
        # Which layer each entry of the ravelled vector belongs to (static).
        layer_of = np.repeat(np.arange(len(leaves)), [int(np.size(x)) for x in leaves])
        key_layer, key_noise = jax.random.split(key)
        chosen = jax.random.randint(key_layer, (), 0, len(leaves))
        noise = sigma * jax.random.normal(key_noise, flat.shape, flat.dtype)
        return unravel(flat + jnp.where(jnp.asarray(layer_of) == chosen, noise, 0.0))

    return per_layer


def gaussian(size: int, sigma: float = 0.01) -> Source:
    """Source of ``size`` gaussian mutations (see :func:`gaussian_mutation`)."""
    return mutation(gaussian_mutation(sigma), size, "gaussian")


def cauchy(size: int, scale: float = 0.01) -> Source:
    """Source of ``size`` cauchy mutations (see :func:`cauchy_mutation`)."""
    return mutation(cauchy_mutation(scale), size, "cauchy")


def sparse(size: int, sigma: float = 0.05, rate: float = 0.05) -> Source:
    """Source of ``size`` sparse mutations (see :func:`sparse_mutation`)."""
    return mutation(sparse_mutation(sigma, rate), size, "sparse")


def per_layer(size: int, sigma: float = 0.02) -> Source:
    """Source of ``size`` one-layer mutations (see :func:`per_layer_mutation`)."""
    return mutation(per_layer_mutation(sigma), size, "per_layer")
