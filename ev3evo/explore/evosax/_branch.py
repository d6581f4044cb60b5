"""Control flow that branches in Python when its predicate is concrete.

Called eagerly, ``lax.cond`` / ``lax.switch`` with fresh closures compile on every call and a
``jnp.where`` per leaf dispatches one small program per leaf; inside a jitted step the
predicate is a tracer and these are the plain ``lax`` primitives. The evosax sources are called
both ways (eagerly by host loops and tests, compiled inside the EV3 step).

Example::

    import jax.numpy as jnp
    from ev3evo.explore.evosax._branch import cond
    assert cond(jnp.array(True), lambda x: x + 1, lambda x: x - 1, 1) == 2   # eager: Python
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x):
    """``x`` as a Python value when it is concrete (eager calls), else ``None`` (under jit)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x).item()


def tree_where(cond, x, y):
    """``x`` where ``cond`` else ``y``, leaf by leaf (``cond`` a scalar bool)."""
    c = concrete(cond)
    if c is not None:
        return x if c else y
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), x, y)


def cond(pred, true_fn, false_fn, operand):
    """``lax.cond(pred, true_fn, false_fn, operand)``."""
    c = concrete(pred)
    if c is not None:
        return true_fn(operand) if c else false_fn(operand)
    return jax.lax.cond(pred, true_fn, false_fn, operand)


def switch(index, branches, operand):
    """``lax.switch(index, branches, operand)``."""
    i = concrete(index)
    if i is not None:
        return branches[int(i)](operand)
    return jax.lax.switch(index, branches, operand)


def like(new, old):
    """``new`` cast leaf by leaf to the dtypes of ``old`` (the branches of a cond must agree,
    and a state's dtypes must not drift between steps)."""
    return jax.tree.map(lambda n, o: jnp.asarray(n, dtype=o.dtype), new, old)
