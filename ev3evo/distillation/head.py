"""The calibration head of a student: a temperature and per-class biases on its logits.

EV3's output-layer moves (:mod:`ev3evo.distillation.sources`) act on a student's *logits*,
whatever the student is: the engine's model is the student followed by a head

.. math:: z \\mapsto s \\cdot z + \\beta

with a scalar ``scale`` ``s`` (the inverse softmax temperature) and a ``bias`` ``β`` per
class, starting at the identity (``s = 1``, ``β = 0``). Every source may move it; gradient
rollouts train it with the rest.

At the end the head is **folded** into the student when its output layer is an ``nnx.Linear``
whose output is the logits: ``W' = s·W``, ``b' = s·b + β`` gives the same logits, so the
certified student is a module of the user's own class. Which ``Linear`` that is is found
numerically, not by name (:func:`output_layer`): every ``Linear`` with one output per class is
folded with a random head and kept only if the module then computes ``s·z + β`` on the check
examples. A student without such a layer (its logits pass through something after the last
``Linear``, or that layer has no bias) is returned inside :class:`Calibrated`, which applies
the head after the student.

Example::

    import jax.numpy as jnp
    from flax import nnx
    from ev3evo.distillation import head
    model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    h = {"scale": jnp.float32(2.0), "bias": jnp.arange(4.0)}
    x = jnp.ones((5, 3))
    path = head.output_layer(model, 4, lambda m: m(x))
    folded = head.fold(model, h, path)
    assert path == () and jnp.allclose(folded(x), head.apply(h, model(x)), atol=1e-5)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import nnx_state

__all__ = ["Calibrated", "apply", "fold", "identity", "output_layer"]


def identity(num_classes: int) -> dict:
    """The head that changes nothing: ``{"scale": 1, "bias": 0}``."""
    return {"scale": jnp.ones((), jnp.float32), "bias": jnp.zeros((num_classes,), jnp.float32)}


def apply(head: dict, logits: jax.Array) -> jax.Array:
    """``scale · logits + bias``."""
    return head["scale"] * logits + head["bias"]


class Calibrated(nnx.Module):
    """A student whose logits go through a calibration head: ``scale · model(x) + bias``.

    What :func:`ev3evo.distill` returns when the head cannot be folded into the student's own
    output layer (see the module docstring); ``model`` is the student itself.

    Args:
        model: the student (any nnx Module returning logits).
        scale: the scalar scale of the logits.
        bias: one bias per class.
    """

    def __init__(self, model: nnx.Module, scale, bias):
        self.model = model
        self.scale = nnx.Param(jnp.asarray(scale, jnp.float32))
        self.bias = nnx.Param(jnp.asarray(bias, jnp.float32))

    def __call__(self, x, *args, **kwargs):
        return self.scale[...] * self.model(x, *args, **kwargs) + self.bias[...]


def _at(tree: dict, path: tuple):
    for part in path:
        tree = tree[part]
    return tree


def _set(tree: dict, path: tuple, value) -> dict:
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def fold(module: nnx.Module, head: dict, path: tuple) -> nnx.Module:
    """A copy of ``module`` whose ``nnx.Linear`` at ``path`` (from :func:`output_layer`) has the
    head folded in: ``kernel · scale``, ``bias · scale + head bias``."""
    parts = nnx_state.split(module)
    layer = _at(parts.params, path)
    s = jnp.asarray(head["scale"])
    folded = {**layer, "kernel": layer["kernel"] * s, "bias": layer["bias"] * s + head["bias"]}
    params = _set(parts.params, path, folded)
    return nnx_state.merge(parts.graphdef, params, parts.rest, parts.keys)


def _candidates(module: nnx.Module, num_classes: int) -> list[tuple]:
    found = [tuple(path) for path, m in nnx.iter_modules(module)
             if isinstance(m, nnx.Linear) and m.out_features == num_classes
             and m.bias is not None]
    return found[::-1]


def output_layer(module: nnx.Module, num_classes: int,
                 run: Callable[[nnx.Module], jax.Array], seed: int = 0) -> tuple | None:
    """The path of the ``nnx.Linear`` whose output is ``module``'s logits, or ``None``.

    Args:
        module: the student.
        num_classes: the number of logits.
        run: ``module -> logits`` on the check examples (the student's job: a forward pass).
        seed: seeds the random head the candidates are checked with.
    """
    base = np.asarray(run(module))
    rng = np.random.default_rng(seed)
    probe = {"scale": jnp.float32(1.0 + rng.uniform(0.25, 0.75)),
             "bias": jnp.asarray(rng.normal(size=num_classes), jnp.float32)}
    want = np.asarray(apply(probe, base))
    tol = 1e-4 * (1.0 + float(np.max(np.abs(want))))
    for path in _candidates(module, num_classes):
        got = np.asarray(run(fold(module, probe, path)))
        if got.shape == want.shape and float(np.max(np.abs(got - want))) <= tol:
            return path
    return None
