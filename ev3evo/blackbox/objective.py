"""How :func:`ev3evo.minimize` calls ``fun``: on the host, or vmapped on the device.

``fun`` is only ever called to evaluate it, and every call is an evaluation counted in the
budget: nothing probes it, traces it or calls it with abstract values to find out what it is.

* A **host** function (the default) is called with float64 numpy arrays: one ``(D,)`` row at a
  time, or, with ``vectorized=True``, once per generation with the ``(n, D)`` batch.
* A **JAX** function is evaluated ``jit(vmap(fun))`` on the device, in JAX's float dtype
  (float32 unless ``jax_enable_x64``); JAX traces it, as it traces every function it compiles.
  A function is a JAX function when the caller says so (``jax_fun=True``), or when it is
  recognized by its type, without calling it: an object made by ``jax.jit``
  (:func:`is_jax_function`). Any other callable, a plain function that happens to use
  ``jax.numpy`` included, is a host function unless declared.

Example::

    import jax, jax.numpy as jnp, numpy as np
    from ev3evo.blackbox.objective import evaluator, is_jax_function
    f = jax.jit(lambda x: jnp.sum(x**2))
    assert is_jax_function(f) and not is_jax_function(lambda x: float(np.sum(x**2)))
    evaluate = evaluator(lambda x: float(np.sum(x**2)), 2, jax_fun=False)
    assert evaluate(np.ones((3, 2))).tolist() == [2.0, 2.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .checks import scalar

# The type of what ``jax.jit`` returns (a C++ ``PjitFunction``); it has no public name, so it
# is taken from a jitted function, which costs no tracing and no compilation.
_JIT_TYPES = (type(jax.jit(lambda x: x)),)


def is_jax_function(fun) -> bool:
    """True when ``fun`` is an object made by ``jax.jit`` (checked by its type; never called)."""
    return isinstance(fun, _JIT_TYPES)


def evaluator(fun: Callable, d: int, *, jax_fun: bool, vectorized: bool = False,
              dtype=None) -> Callable[[np.ndarray], np.ndarray]:  # fmt: skip
    """``(n, D) -> (n,)`` float64 values of ``fun``, one call per row or one per batch.

    Args:
      fun: the objective.
      d: the dimension (for error messages).
      jax_fun: evaluate ``jit(vmap(fun))`` in ``dtype`` on the device; else on the host.
      vectorized: a host ``fun`` takes the whole ``(n, D)`` batch and returns ``(n,)``.
      dtype: the JAX float dtype of a JAX ``fun`` (default: JAX's canonical float).

    Raises:
      ValueError, TypeError: ``fun`` did not return one real number per row (raised at the
        call that returned it).
    """
    if jax_fun:
        batched = jax.jit(jax.vmap(fun))
        dtype = dtype or jax.dtypes.canonicalize_dtype(jnp.float64)

        def evaluate_jax(x: np.ndarray) -> np.ndarray:
            values = np.asarray(batched(jnp.asarray(x, dtype)), dtype=np.float64)
            if values.shape != (x.shape[0],):
                raise ValueError(f"fun must return a scalar; it returned shape {values.shape[1:]}")
            return values

        return evaluate_jax
    if vectorized:

        def evaluate_batch(x: np.ndarray) -> np.ndarray:
            values = np.asarray(fun(np.array(x, dtype=np.float64)), dtype=np.float64)
            if values.shape not in ((x.shape[0],), (x.shape[0], 1)):
                raise ValueError(
                    f"a vectorized fun must map ({x.shape[0]}, {d}) to ({x.shape[0]},); "
                    f"it returned shape {values.shape}"
                )
            return values.reshape(-1)

        return evaluate_batch

    def evaluate_rows(x: np.ndarray) -> np.ndarray:
        return np.array([scalar(fun(np.array(row)), "for a (D,) input") for row in x])

    return evaluate_rows
