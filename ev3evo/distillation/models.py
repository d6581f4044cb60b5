"""The built-in flax nnx students and teachers (an MLP and a CNN), their pure form, their specs.

The engine works on plain parameter pytrees, so every model has a *functional* twin:
``functional(model)`` returns ``Functional(graphdef, params, rest, apply)`` where ``params`` is
the plain dict ``nnx.to_pure_dict`` gives and ``apply(params, x) -> logits`` is pure (it calls
``nnx.merge`` inside, which costs nothing under ``jit``/``vmap``). A built-in model is fully
described by a small JSON-able *architecture* dict::

    {"kind": "mlp", "in_features": 64, "hidden": [16], "num_classes": 10, "activation": "relu"}
    {"kind": "cnn", "in_shape": [8, 8, 1], "channels": [8, 16], "pool": [true, true],
     "blocks": [0, 0], "kernel_size": 3, "num_classes": 10}

which :func:`build` turns back into a module; :mod:`ev3evo.distillation.growth` edits that dict
and the params together. On the command line an architecture is a *spec*: ``mlp:8`` (hidden
widths; ``mlp:`` is a linear model) or ``cnn:8,16`` (the channels of the conv stages), read by
:func:`parse_spec` and completed for the data by :func:`arch_for`. Checkpoints of any nnx model
are in :mod:`ev3evo.distillation.checkpoints` (:func:`save`, :func:`load`, re-exported here).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> model = MLP(64, [16], 10, rngs=nnx.Rngs(0))
    >>> f = functional(model)
    >>> jax.jit(f.apply)(f.params, jnp.zeros((5, 64))).shape
    (5, 10)
    >>> count_params(f.params)
    1210
    >>> arch_for("cnn:4", (8, 8, 1), 10)["pool"]
    [True]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..assess.population import dense_population_logits, with_population_rule

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "KINDS",
    "MLP",
    "Functional",
    "Residual",
    "arch_for",
    "arch_of",
    "build",
    "count_params",
    "describe",
    "functional",
    "load",
    "parse_spec",
    "save",
    "template",
    "to_module",
    "widths",
]

ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
}

#: the built-in architectures, by the name their specs and dicts use
KINDS = ("mlp", "cnn")


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


class Residual(nnx.Module):
    """A residual block at constant width: ``relu(x + conv2(relu(conv1(x))))``.

    With ``conv2`` zero it is the identity on non-negative inputs (what a relu stage gives),
    which is how :func:`ev3evo.distillation.growth_conv.residual` deepens a CNN.

    Args:
        channels: the width of the block (input, inner and output channels).
        kernel_size: the side of its square (or cubic) kernels.
        ndim: the number of spatial dimensions (1: sequences, 2: images).
        rngs: ``nnx.Rngs`` for initialization.
    """

    def __init__(self, channels: int, kernel_size: int, ndim: int, *, rngs: nnx.Rngs):
        shape = (kernel_size,) * ndim
        self.conv1 = nnx.Conv(channels, channels, shape, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, shape, padding="SAME", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x + self.conv2(jax.nn.relu(self.conv1(x))))


def _stage_sizes(spatial, pool) -> list[int]:
    size = list(spatial)
    for i, p in enumerate(pool):
        if p:
            if min(size) < 2:
                raise ValueError(f"stage {i} cannot pool a spatial size of {size}")
            size = [d // 2 for d in size]
    return size


class CNN(nnx.Module):
    """A convolutional classifier: conv stages (conv, relu, residual blocks, 2× max pool), a
    dense head on the flattened features.

    Examples of shape ``in_shape`` are ``(L,)`` or ``(L, C)`` (sequences: 1-D convolutions;
    ``(L,)`` has one channel) or ``(H, W, C)`` (images: 2-D convolutions); flat inputs
    ``(N, prod(in_shape))`` are reshaped. Every convolution is ``SAME``-padded.

    Args:
        in_shape: the shape of one example.
        channels: the width of each stage.
        num_classes: number of output logits.
        rngs: ``nnx.Rngs`` for initialization.
        kernel_size: the side of the kernels (odd, so that an identity kernel exists).
        pool: per stage, whether it ends with a 2× max pool; default: every stage while each
            spatial size is at least 2.
        blocks: per stage, the number of :class:`Residual` blocks after its convolution
            (default none).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> CNN((8, 8, 1), [4, 8], 10, rngs=nnx.Rngs(0))(jnp.ones((2, 8, 8, 1))).shape
        (2, 10)
    """

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], num_classes: int, *,
                 rngs: nnx.Rngs, kernel_size: int = 3, pool: Sequence[bool] | None = None,
                 blocks: Sequence[int] | None = None):
        in_shape = tuple(_check_int(d, "every input dimension") for d in in_shape)
        if not 1 <= len(in_shape) <= 4:
            raise ValueError(f"in_shape must be (L,), (L, C), (H, W, C) or (D, H, W, C); got "
                             f"{in_shape}")
        channels = tuple(_check_int(c, "every channel width") for c in channels)
        kernel_size = _check_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        spatial, c_in = (in_shape, 1) if len(in_shape) == 1 else (in_shape[:-1], in_shape[-1])
        if pool is None:
            pool, size = [], list(spatial)
            for _ in channels:
                pool.append(min(size) >= 2)
                size = [d // 2 for d in size] if pool[-1] else size
        blocks = (0,) * len(channels) if blocks is None else tuple(int(b) for b in blocks)
        if len(pool) != len(channels) or len(blocks) != len(channels):
            raise ValueError(f"pool {list(pool)} and blocks {list(blocks)} need one entry per "
                             f"stage of channels {list(channels)}")
        self.in_shape, self.channels, self.num_classes = in_shape, channels, int(num_classes)
        self.kernel_size, self.pool, self.blocks = kernel_size, tuple(map(bool, pool)), blocks
        ndim, shape = len(spatial), (kernel_size,) * len(spatial)
        convs, residual, width = [], [], c_in
        for c, b in zip(channels, blocks):
            convs.append(nnx.Conv(width, c, shape, padding="SAME", rngs=rngs))
            residual.append(nnx.List([Residual(c, kernel_size, ndim, rngs=rngs)
                                      for _ in range(b)]))
            width = c
        self.convs, self.residual = nnx.List(convs), nnx.List(residual)
        flat = math.prod(_stage_sizes(spatial, self.pool)) * width
        self.head = nnx.Linear(flat, _check_int(num_classes, "num_classes"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], *self.in_shape)
        if len(self.in_shape) == 1:
            x = x[..., None]
        window = (2,) * (x.ndim - 2)
        for conv, blocks, pool in zip(self.convs, self.residual, self.pool):
            x = jax.nn.relu(conv(x))
            for block in blocks:
                x = block(x)
            if pool:
                x = nnx.max_pool(x, window_shape=window, strides=window)
        return self.head(x.reshape(x.shape[0], -1))


class Functional(NamedTuple):
    """The pure form of a module: ``apply(params, x) -> logits`` over a plain dict ``params``.

    ``graphdef`` and ``rest`` (non-parameter state) are what ``nnx.merge`` needs to rebuild the
    module; ``arch`` is the architecture dict when the module is an :class:`MLP` or a
    :class:`CNN`.
    """

    graphdef: Any
    params: dict
    rest: Any
    apply: Callable[[dict, jax.Array], jax.Array]
    arch: dict | None = None


def arch_of(model: nnx.Module) -> dict:
    """The JSON-able architecture dict of an :class:`MLP` or :class:`CNN` (what :func:`build`
    takes)."""
    if isinstance(model, MLP):
        return {"kind": "mlp", "in_features": model.in_features, "hidden": list(model.hidden),
                "num_classes": model.num_classes, "activation": model.activation}
    if isinstance(model, CNN):
        return {"kind": "cnn", "in_shape": list(model.in_shape),
                "channels": list(model.channels), "pool": list(model.pool),
                "blocks": list(model.blocks), "kernel_size": model.kernel_size,
                "num_classes": model.num_classes}
    raise TypeError(f"arch_of expects an ev3evo MLP or CNN, got {type(model).__name__}")


_REQUIRED = {"mlp": ("in_features", "hidden", "num_classes"),
             "cnn": ("in_shape", "channels", "num_classes")}


def build(arch: dict, *, rngs: nnx.Rngs | None = None, seed: int = 0) -> MLP | CNN:
    """Build the module an architecture dict describes (fresh random weights).

    Example:
        >>> build({"in_features": 4, "hidden": [3], "num_classes": 2}).hidden
        (3,)
    """
    if not isinstance(arch, dict):
        raise TypeError(f"arch must be a dict, got {type(arch).__name__}")
    kind = arch.get("kind", "mlp")
    if kind not in _REQUIRED:
        raise ValueError(f"unknown model kind {kind!r}; built in: {', '.join(KINDS)}")
    missing = [k for k in _REQUIRED[kind] if k not in arch]
    if missing:
        raise ValueError(f"architecture dict is missing {', '.join(missing)}: {arch}")
    rngs = rngs if rngs is not None else nnx.Rngs(seed)
    if kind == "cnn":
        return CNN(arch["in_shape"], arch["channels"], arch["num_classes"], rngs=rngs,
                   kernel_size=arch.get("kernel_size", 3), pool=arch.get("pool"),
                   blocks=arch.get("blocks"))
    return MLP(arch["in_features"], arch["hidden"], arch["num_classes"], rngs=rngs,
               activation=arch.get("activation", "relu"))


def parse_spec(spec: str) -> tuple[str, list[int]]:
    """``(kind, widths)`` of a spec ``mlp:H,H,...`` (``mlp:`` or ``mlp`` is a linear model) or
    ``cnn:C,C,...``; ``ValueError`` saying how to write one otherwise.

    Example:
        >>> parse_spec("cnn:8,16"), parse_spec("mlp:")
        (('cnn', [8, 16]), ('mlp', []))
    """
    how = ("write mlp:H[,H...] (hidden widths; 'mlp:' for a linear model) or cnn:C[,C...] "
           "(the channels of the conv stages), e.g. mlp:8 or cnn:8,16")
    if not isinstance(spec, str):
        raise TypeError(f"a model spec must be a string ({how}); got {spec!r}")
    kind, _, text = spec.strip().partition(":")
    words = [w.strip() for w in text.split(",")] if text.strip() else []
    if kind not in KINDS or not all(w.isdigit() and int(w) > 0 for w in words):
        raise ValueError(f"cannot read the model spec {spec!r}: {how}")
    if kind == "cnn" and not words:
        raise ValueError(f"cannot read the model spec {spec!r}: a CNN needs at least one "
                         f"stage; {how}")
    return kind, [int(w) for w in words]


def arch_for(spec: str | dict, feature_shape: Sequence[int], num_classes: int) -> dict:
    """The architecture dict of ``spec`` (or of an arch dict, checked) for examples of shape
    ``feature_shape`` and ``num_classes`` classes (a CNN on flat ``(D,)`` examples reads them
    as one-channel sequences of length ``D``)."""
    if isinstance(spec, dict):
        arch = arch_of(nnx.eval_shape(lambda: build(spec)))
    else:
        kind, w = parse_spec(spec)
        shape = [int(d) for d in feature_shape]
        if kind == "mlp":
            arch = {"kind": "mlp", "in_features": math.prod(shape), "hidden": w,
                    "num_classes": int(num_classes), "activation": "relu"}
        else:
            arch = arch_of(nnx.eval_shape(lambda: CNN(shape, w, num_classes,
                                                      rngs=nnx.Rngs(0))))
    return arch


def widths(arch: dict) -> list[int]:
    """The widths that growth changes: an MLP's hidden widths, a CNN's stage channels."""
    return list(arch["hidden"] if arch.get("kind", "mlp") == "mlp" else arch["channels"])


def describe(arch: dict) -> str:
    """A short text for ``arch``: its spec, with a CNN's residual blocks (``cnn:8,16+1,0``).

    Example:
        >>> describe({"kind": "cnn", "channels": [8, 16], "blocks": [1, 0]})
        'cnn:8,16+1,0'
    """
    kind = arch.get("kind", "mlp")
    text = f"{kind}:{','.join(map(str, widths(arch)))}"
    blocks = arch.get("blocks") or []
    return text + (f"+{','.join(map(str, blocks))}" if any(blocks) else "")


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

    arch = arch_of(model) if isinstance(model, (MLP, CNN)) else None
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
            f"{expected}, got {got} (after growth, rebuild with template(new_arch))"
        )
    return nnx.merge(fn.graphdef, jax.tree.map(jnp.asarray, params), fn.rest, copy=True)


def count_params(params) -> int:
    """Total number of scalar parameters in a pytree (a params dict, a module, a Functional)."""
    if isinstance(params, Functional):
        params = params.params
    elif isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return int(sum(math.prod(np.shape(a)) for a in jax.tree.leaves(params)))




# The checkpoint functions live in their own module; they are re-exported for the short
# ``models.save`` / ``models.load``.
from .checkpoints import load, save  # noqa: E402
