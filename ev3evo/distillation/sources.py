"""Output-layer moves of a distillation student: its softmax temperature, its class biases.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.distillation.sources import temperature
    p = {"layers": {0: {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}}
    src = temperature(4)
    pop, _ = src.ask(jax.random.key(0), src.init(jax.random.key(1), p), p, None,
                     jnp.ones(4, bool))
    assert pop["layers"][0]["kernel"].shape == (4, 3, 2)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..types import Source

# --------------------------------------------------------------------------- output-layer mutations


def _with_head(params, fn):
    """``params`` with the student's output layer (the last of ``params["layers"]``) mapped by
    ``fn(layer) -> layer``; :mod:`ev3evo.distillation.models` students (flax nnx pure dicts)."""
    layers = params["layers"]
    last = max(layers)
    return {**params, "layers": {**layers, last: fn(layers[last])}}


def temperature(size: int, sigma: float = 0.2, name: str = "temperature") -> Source:
    """``size`` candidates whose logits are rescaled by ``exp(sigma · z)``, ``z ~ N(0, 1)``.

    The output layer's kernel and bias are multiplied by one random factor, i.e. the student's
    softmax temperature changes and its argmax does not: accuracy stays, calibration (ECE) and
    the fit to the teacher move. Temperature scaling is the standard post-hoc calibration
    (Guo et al., 2017); as a mutation, EV3 finds the temperature that its gate can certify on
    the validation split while it trains, which gradient KD cannot do for a non-differentiable
    metric.

    Example::

        import jax, jax.numpy as jnp
        from ev3evo.distillation.sources import temperature
        p = {"layers": {0: {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}}
        src = temperature(4)
        pop, _ = src.ask(jax.random.key(0), src.init(jax.random.key(1), p), p, None,
                         jnp.ones(4, bool))
        ratio = pop["layers"][0]["kernel"] / p["layers"][0]["kernel"]
        assert jnp.allclose(ratio, ratio[:, :1, :1])   # one factor per candidate
    """
    from ..explore.mutation import mutation

    def scale(key, params):
        s = jnp.exp(sigma * jax.random.normal(key, ()))
        return _with_head(params, lambda layer: jax.tree.map(lambda x: x * s, layer))

    return mutation(scale, size, name)


def head_bias(size: int, sigma: float = 0.05, name: str = "head_bias") -> Source:
    """``size`` candidates with gaussian noise on the output bias only: shifted per-class
    decision thresholds, a low-dimensional move for per-class metrics (macro-F1)."""
    from ..explore.mutation import mutation

    def shift(key, params):
        def f(layer):
            b = layer["bias"]
            return {**layer, "bias": b + sigma * jax.random.normal(key, b.shape, b.dtype)}

        return _with_head(params, f)

    return mutation(shift, size, name)
