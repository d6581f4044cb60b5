"""Flax nnx models for distillation, their pure functional form, and safe checkpoints.

The engine works on plain parameter pytrees, so every model has a *functional* twin:
``functional(model)`` returns ``Functional(graphdef, params, rest, apply)`` where ``params`` is
the plain dict ``nnx.to_pure_dict`` gives and ``apply(params, x) -> logits`` is pure (it calls
``nnx.merge`` inside, which costs nothing under ``jit``/``vmap``). An MLP is fully described by
a small JSON-able *architecture* dict::

    {"kind": "mlp", "in_features": 64, "hidden": [16], "num_classes": 10, "activation": "relu"}

which :func:`build` turns back into a module; :mod:`ev3evo.distillation.growth` edits that dict and
the params together. Checkpoints are one msgpack file (flax.serialization) holding the params
and the JSON config: no pickle.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MLP(64, [16], 10, rngs=nnx.Rngs(0))
    >>> f = functional(model)
    >>> jax.jit(f.apply)(f.params, jnp.zeros((5, 64))).shape
    (5, 10)
    >>> count_params(f.params)
    1210
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from ..assess.population import dense_population_logits, with_population_rule
from ..io.atomic import atomic_write

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Functional",
    "arch_of",
    "build",
    "count_params",
    "functional",
    "load",
    "save",
    "template",
    "to_module",
]

ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
}

_FORMAT = "ev3evo-model"
_VERSION = 1


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class MLP(nnx.Module):
    """A multilayer perceptron: flatten, ``len(hidden)`` Linear+activation layers, a Linear head.

    Args:
        in_features: number of input features (inputs of any shape ``(N, ...)`` are flattened).
        hidden: widths of the hidden layers (may be empty: a linear model).
        num_classes: number of output logits.
        rngs: ``nnx.Rngs`` for initialization.
        activation: one of :data:`ACTIVATIONS` (default ``"relu"``).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> MLP(4, [8, 8], 3, rngs=nnx.Rngs(0))(jnp.ones((2, 4))).shape
        (2, 3)
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        *,
        rngs: nnx.Rngs,
        activation: str = "relu",
    ):
        in_features = _check_int(in_features, "in_features")
        num_classes = _check_int(num_classes, "num_classes")
        if isinstance(hidden, (int, np.integer)):
            hidden = [hidden]
        hidden = [_check_int(h, "every hidden width") for h in hidden]
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        self.in_features = in_features
        self.hidden = tuple(hidden)
        self.num_classes = num_classes
        self.activation = activation
        widths = [in_features, *hidden, num_classes]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


class Functional(NamedTuple):
    """The pure form of a module: ``apply(params, x) -> logits`` over a plain dict ``params``.

    ``graphdef`` and ``rest`` (non-parameter state) are what ``nnx.merge`` needs to rebuild the
    module; ``arch`` is the architecture dict when the module is an :class:`MLP`.
    """

    graphdef: Any
    params: dict
    rest: Any
    apply: Callable[[dict, jax.Array], jax.Array]
    arch: dict | None = None


def arch_of(model: nnx.Module) -> dict:
    """The JSON-able architecture dict of an :class:`MLP` (what :func:`build` takes)."""
    if not isinstance(model, MLP):
        raise TypeError(f"arch_of expects an ev3evo MLP, got {type(model).__name__}")
    return {
        "kind": "mlp",
        "in_features": model.in_features,
        "hidden": list(model.hidden),
        "num_classes": model.num_classes,
        "activation": model.activation,
    }


def build(arch: dict, *, rngs: nnx.Rngs | None = None, seed: int = 0) -> MLP:
    """Build the module an architecture dict describes (fresh random weights).

    Example:
        >>> build({"in_features": 4, "hidden": [3], "num_classes": 2}).hidden
        (3,)
    """
    if not isinstance(arch, dict):
        raise TypeError(f"arch must be a dict, got {type(arch).__name__}")
    kind = arch.get("kind", "mlp")
    if kind != "mlp":
        raise ValueError(f"unknown model kind {kind!r}; only 'mlp' is supported")
    missing = [k for k in ("in_features", "hidden", "num_classes") if k not in arch]
    if missing:
        raise ValueError(f"architecture dict is missing {', '.join(missing)}: {arch}")
    return MLP(
        arch["in_features"],
        arch["hidden"],
        arch["num_classes"],
        rngs=rngs if rngs is not None else nnx.Rngs(seed),
        activation=arch.get("activation", "relu"),
    )


def template(arch: dict) -> Functional:
    """The :class:`Functional` of ``arch`` *without* initializing weights (cheap).

    ``params`` holds ``jax.ShapeDtypeStruct`` leaves (shapes only): use it to get ``apply`` for
    an architecture whose parameters you already have, e.g. after growth. Building a real
    module runs the random initializers eagerly, which compiles one small program per shape
    (seconds on a busy CPU); ``nnx.eval_shape`` skips that.

    Example:
        >>> f = template({"in_features": 4, "hidden": [3], "num_classes": 2})
        >>> f.params["layers"][0]["kernel"].shape
        (4, 3)
    """
    return functional(nnx.eval_shape(lambda: build(arch)))


def functional(model: nnx.Module) -> Functional:
    """Split a module into a pure ``apply(params, x)`` and a plain-dict ``params`` pytree.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> f = functional(MLP(3, [4], 2, rngs=nnx.Rngs(0)))
        >>> pop = jax.tree.map(lambda a: jnp.stack([a, a]), f.params)
        >>> jax.vmap(f.apply, in_axes=(0, None))(pop, jnp.ones((7, 3))).shape
        (2, 7, 2)
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"functional expects a flax nnx Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    pure = nnx.to_pure_dict(params)

    def apply(p: dict, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, p, rest)(x)

    arch = arch_of(model) if isinstance(model, MLP) else None
    if type(model) is MLP:  # a subclass may compute something else: no rule for it
        activation = ACTIVATIONS[model.activation]

        def population(p: dict, x: jax.Array) -> jax.Array:
            layers = p["layers"]
            pairs = [(layers[i]["kernel"], layers[i]["bias"]) for i in range(len(layers))]
            return dense_population_logits(pairs, x, activation)

        # evaluated feature-major when vmapped over a population (ev3evo.assess.population)
        apply = with_population_rule(apply, population)
    return Functional(graphdef, pure, rest, apply, arch)


def to_module(fn: Functional, params: dict | None = None) -> nnx.Module:
    """Rebuild a (stateful) nnx module from a :class:`Functional` and a params dict.

    Example:
        >>> from flax import nnx
        >>> f = functional(MLP(3, [4], 2, rngs=nnx.Rngs(0)))
        >>> isinstance(to_module(f, f.params), MLP)
        True
    """
    params = fn.params if params is None else params
    expected = jax.tree.map(lambda a: tuple(a.shape), fn.params)
    got = jax.tree.map(jnp.shape, params)
    if jax.tree.structure(expected) != jax.tree.structure(got) or expected != got:
        raise ValueError(
            "params do not match the module's parameters: expected shapes "
            f"{expected}, got {got} (after growth, rebuild with build(new_arch))"
        )
    return nnx.merge(fn.graphdef, jax.tree.map(jnp.asarray, params), fn.rest, copy=True)


def count_params(params) -> int:
    """Total number of scalar parameters in a pytree (a params dict, a module, a Functional)."""
    if isinstance(params, Functional):
        params = params.params
    elif isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return int(sum(math.prod(np.shape(a)) for a in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------- checkpoints


def _module_and_params(obj) -> tuple[dict, dict]:
    """(arch, params) from a module, a Functional, or a (Functional | arch, params) pair."""
    if isinstance(obj, MLP):
        f = functional(obj)
        return f.arch, f.params
    if isinstance(obj, Functional):
        if obj.arch is None:
            raise TypeError("save needs an ev3evo MLP (its Functional has no architecture)")
        return obj.arch, obj.params
    if isinstance(obj, tuple) and len(obj) == 2:
        head, params = obj
        if isinstance(head, Functional):
            if head.arch is None:
                raise TypeError("save needs an ev3evo MLP (its Functional has no architecture)")
            return head.arch, params
        if isinstance(head, dict):
            return head, params
    raise TypeError(
        "save expects an MLP, a Functional, or a pair (Functional or arch dict, params); "
        f"got {type(obj).__name__}"
    )


def save(path: str | os.PathLike, model, config: dict | None = None) -> str:
    """Write a model checkpoint atomically: one msgpack file with params and a JSON config.

    Args:
        path: file to write (conventionally ``*.msgpack``); its folder is created.
        model: an :class:`MLP`, its :class:`Functional`, or a pair ``(Functional or arch dict,
            params)`` (e.g. a grown student: ``(new_arch, new_params)``).
        config: extra JSON-able information (e.g. the dataset's name); the architecture keys
            (``kind, in_features, hidden, num_classes, activation``) are filled in from the
            model and must agree with it when given.

    Returns:
        The path written. The file is written to a temporary name, fsynced, then renamed, so a
        crash never leaves a half-written checkpoint.

    Example:
        >>> import os, tempfile
        >>> from flax import nnx
        >>> p = save(os.path.join(tempfile.mkdtemp(), "m.msgpack"), MLP(3, [4], 2, rngs=nnx.Rngs(0)))
        >>> load(p)[1]["hidden"]
        [4]
    """
    arch, params = _module_and_params(model)
    full = dict(config or {})
    for k, v in arch.items():
        if k in full and full[k] != v:
            raise ValueError(f"config[{k!r}] = {full[k]!r} disagrees with the model's {v!r}")
        full[k] = v
    # Validate that the params fit the architecture before writing anything.
    to_module(template(full), params)
    try:
        config_json = json.dumps(full, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"config must be JSON-serializable: {e}") from None
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "config": config_json,
        "params": jax.tree.map(np.asarray, params),
    }
    data = serialization.msgpack_serialize(payload)
    return atomic_write(path, data)


def load(path: str | os.PathLike) -> tuple[MLP, dict]:
    """Read a checkpoint written by :func:`save`: ``(module, config)``.

    Raises:
        ValueError: missing or unreadable file, not an ev3evo checkpoint, or params that do not
            match the architecture in its config.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as e:
        raise ValueError(f"{path}: not a readable msgpack checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an ev3evo model checkpoint")
    if payload.get("version") != _VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    try:
        config = json.loads(payload["config"])
        module = to_module(template(config), payload["params"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt checkpoint ({e})") from None
    return module, config
