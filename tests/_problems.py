"""Small problems shared by several test files (no JAX import at module level, so a child
process can configure JAX before it loads them)."""

from __future__ import annotations

import numpy as np


def linear_two_class():
    """48 examples of 3 features, a linear 2-class rule, and a 3-weight model for it.

    Returns ``(batch, apply)``; parameters are ``{"w": (3,), "b": (2,)}``.
    """
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) > 0).astype(np.int32)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}

    def apply(p, x):
        z = x @ p["w"]
        return jnp.stack([z, -z], axis=-1) + p["b"]

    return batch, apply
