"""Output-layer moves of a distillation student: its softmax temperature, its class biases.

Both act on the student's logits through its calibration head (:mod:`ev3evo.distillation.head`,
``params["head"]`` of the engine model: ``scale · logits + bias``), so they work on any
student, whatever its layers are called. They are mutations of the parameters
(:func:`ev3evo.mutation`); the engine wraps them with :func:`ev3evo.on_params`, so that the
student's other state is carried unchanged.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.distillation import head
    from ev3evo.distillation.sources import temperature
    p = {"model": {"w": jnp.ones((3, 2))}, "head": head.identity(2)}
    src = temperature(4)
    pop, _ = src.ask(jax.random.key(0), src.init(jax.random.key(1), p), p, None,
                     jnp.ones(4, bool))
    assert pop["head"]["scale"].shape == (4,) and pop["model"]["w"].shape == (4, 3, 2)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..types import Source


def _with_head(params, fn):
    """``params`` with the calibration head mapped by ``fn(head) -> head``."""
    return {**params, "head": fn(params["head"])}


def temperature(size: int, sigma: float = 0.2, name: str = "temperature") -> Source:
    """``size`` candidates whose logits are rescaled by ``exp(sigma · z)``, ``z ~ N(0, 1)``.

    The head's scale and bias are multiplied by one random factor, i.e. the student's softmax
    temperature changes and its argmax does not: accuracy stays, calibration (ECE) and the fit
    to the teacher move. Temperature scaling is the standard post-hoc calibration (Guo et al.,
    2017); as a mutation, EV3 finds the temperature that its gate can certify on the
    validation split while it trains, which gradient KD cannot do for a non-differentiable
    metric.

    Example::

        import jax, jax.numpy as jnp
        from ev3evo.distillation import head
        from ev3evo.distillation.sources import temperature
        p = {"model": {"w": jnp.ones((3, 2))}, "head": head.identity(2)}
        src = temperature(4)
        pop, _ = src.ask(jax.random.key(0), src.init(jax.random.key(1), p), p, None,
                         jnp.ones(4, bool))
        assert jnp.all(pop["head"]["scale"] > 0) and jnp.all(pop["model"]["w"] == 1.0)
    """
    from ..explore.mutation import mutation

    def scale(key, params):
        s = jnp.exp(sigma * jax.random.normal(key, ()))
        return _with_head(params, lambda h: jax.tree.map(lambda x: x * s, h))

    return mutation(scale, size, name)


def head_bias(size: int, sigma: float = 0.05, name: str = "head_bias") -> Source:
    """``size`` candidates with gaussian noise on the head's class biases only: shifted
    per-class decision thresholds, a low-dimensional move for per-class metrics (macro-F1)."""
    from ..explore.mutation import mutation

    def shift(key, params):
        def f(h):
            b = h["bias"]
            return {**h, "bias": b + sigma * jax.random.normal(key, b.shape, b.dtype)}

        return _with_head(params, f)

    return mutation(shift, size, name)
