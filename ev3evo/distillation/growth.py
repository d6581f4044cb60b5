"""Function-preserving growth of a built-in model (Net2Net): MLPs here, CNNs in ``growth_conv``.

EV3 grows its model when progress stalls (Ding et al. 2023, "architecture expansion"); the
grown model must compute *exactly* the same function right after growth, so that growth is
assessed like any other update and the stable model's guarantee still holds. Following Net2Net
(Chen, Goodfellow & Shlens 2016):

- :func:`widen` adds units to hidden layer ``l``. ``method="zero"`` (default): the new units get
  random incoming weights (LeCun-normal, times ``init_scale``) and **zero outgoing** weights, so
  the next layer receives ``h_old @ W_old + h_new @ 0`` — the same output (exact up to
  summation order in the matmul). ``method="split"`` (Net2WiderNet, Eq. 6 of the paper): each
  new unit copies a random existing unit ``g(j)`` (incoming weights and bias), and the outgoing
  weights of every replicated unit are divided by its number of copies, so the sum is unchanged.
- :func:`deepen` inserts a hidden layer initialized to the identity (Net2DeeperNet). This is
  exact when ``activation(identity(h)) = h``, i.e. for ``relu`` after a relu layer (its input
  ``h >= 0``). Directly on the raw input (position 0), where values can be negative, the layer is
  ``[I, -I]`` (width ``2 * in_features``) and the next layer's kernel becomes ``[W; -W]``:
  ``relu(x) W - relu(-x) W = x W``. Other activations have no exact identity layer: refused.

Everything works on the engine's view of a model: the architecture dict of
:func:`ev3evo.distillation.models.build` and the plain params dict (``nnx.to_pure_dict``), returning
a new ``(arch, params)`` pair (nothing is modified in place). :func:`grow` dispatches on the
architecture: a CNN (:class:`~ev3evo.distillation.models.CNN`) grows as
:mod:`ev3evo.distillation.growth_conv` describes (wider stages, an identity stage, residual
blocks). :func:`grow_module` does the same on an nnx module.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ev3evo.distillation import models
    >>> f = models.functional(models.build({"in_features": 4, "hidden": [3], "num_classes": 2}))
    >>> arch, params = grow(f.arch, f.params, "widen", jax.random.key(0), 2)
    >>> arch, params = grow(arch, params, "deepen", jax.random.key(1))
    >>> arch["hidden"]
    [5, 5]
    >>> g = models.template(arch)  # apply for the new architecture, no initialization
    >>> x = jax.random.normal(jax.random.key(2), (8, 4))
    >>> bool(jnp.allclose(f.apply(f.params, x), g.apply(params, x), atol=1e-6))
    True
"""

from __future__ import annotations

import copy
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from . import growth_conv, models

__all__ = ["KINDS", "deepen", "grow", "grow_module", "widen"]

#: how a model grows: wider layers, an identity layer, residual blocks (CNNs only)
KINDS = ("widen", "deepen", "residual")


def _check(arch: dict, params: dict) -> tuple[list[int], dict]:
    """Validate that params fit the MLP ``arch``; return hidden widths and the layers dict."""
    if not isinstance(arch, dict) or "hidden" not in arch:
        raise TypeError(f"arch must be an MLP architecture dict (see models.build), got {arch!r}")
    if arch.get("kind", "mlp") != "mlp":
        raise ValueError(f"growth supports only MLPs, got kind {arch.get('kind')!r}")
    hidden = [int(h) for h in arch["hidden"]]
    widths = [int(arch["in_features"]), *hidden, int(arch["num_classes"])]
    layers = params.get("layers") if isinstance(params, dict) else None
    if not isinstance(layers, dict) or sorted(layers) != list(range(len(widths) - 1)):
        raise ValueError(
            f"params do not match arch {arch}: expected {{'layers': {{0..{len(widths) - 2}: "
            "{'kernel', 'bias'}}} as given by models.functional(...).params"
        )
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        k, bias = layers[i].get("kernel"), layers[i].get("bias")
        if k is None or bias is None or np.shape(k) != (a, b) or np.shape(bias) != (b,):
            raise ValueError(
                f"params do not match arch {arch}: layer {i} should have kernel {(a, b)} and bias "
                f"{(b,)}, got {np.shape(k)} and {np.shape(bias)} (a population axis? grow each "
                "member, e.g. with jax.vmap)"
            )
    return hidden, layers


def _rebuild(arch: dict, hidden: list[int], layer_list: list[dict]) -> tuple[dict, dict]:
    new_arch = copy.deepcopy(arch)
    new_arch["hidden"] = list(hidden)
    return new_arch, {"layers": dict(enumerate(layer_list))}


def widen(
    arch: dict,
    params: dict,
    layer: int,
    new_width: int,
    key: jax.Array,
    *,
    method: str = "zero",
    init_scale: float = 1.0,
) -> tuple[dict, dict]:
    """Widen hidden layer ``layer`` to ``new_width`` units without changing the function.

    Args:
        arch, params: the MLP (architecture dict and plain params dict).
        layer: index into ``arch["hidden"]`` (negative indices count from the end).
        new_width: the new number of units (at least the current one).
        key: randomness for the new incoming weights (``"zero"``) or the copied units
            (``"split"``).
        method: ``"zero"`` (new units with zero outgoing weights) or ``"split"`` (Net2WiderNet).
        init_scale: multiplies the LeCun-normal incoming weights of ``"zero"`` units.

    Returns:
        ``(new_arch, new_params)``.

    Example:
        >>> import jax
        >>> from ev3evo.distillation import models
        >>> f = models.functional(models.build({"in_features": 4, "hidden": [3], "num_classes": 2}))
        >>> arch, p = widen(f.arch, f.params, 0, 6, jax.random.key(0))
        >>> arch["hidden"], p["layers"][1]["kernel"].shape
        ([6], (6, 2))
    """
    hidden, layers = _check(arch, params)
    if not hidden:
        raise ValueError("the model has no hidden layer to widen; deepen it first")
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an integer index into hidden {hidden}, got {layer!r}")
    if not -len(hidden) <= layer < len(hidden):
        raise ValueError(f"layer {layer} out of range for hidden widths {hidden}")
    layer = int(layer) % len(hidden)
    old = hidden[layer]
    if isinstance(new_width, bool) or not isinstance(new_width, (int, np.integer)):
        raise TypeError(f"new_width must be an integer, got {new_width!r}")
    if new_width < old:
        raise ValueError(f"new_width {new_width} is smaller than the current width {old}")
    if method not in ("zero", "split"):
        raise ValueError(f"method must be 'zero' or 'split', got {method!r}")
    extra = int(new_width) - old
    layer_list = [dict(layers[i]) for i in range(len(layers))]
    if extra == 0:
        return _rebuild(arch, hidden, layer_list)
    inc, out = layer_list[layer], layer_list[layer + 1]
    k_in, b_in, k_out = inc["kernel"], inc["bias"], out["kernel"]
    if method == "zero":
        fan_in = k_in.shape[0]
        w = jax.random.normal(key, (fan_in, extra), k_in.dtype) * (init_scale / np.sqrt(fan_in))
        inc["kernel"] = jnp.concatenate([k_in, w], axis=1)
        inc["bias"] = jnp.concatenate([b_in, jnp.zeros((extra,), b_in.dtype)])
        out["kernel"] = jnp.concatenate([k_out, jnp.zeros((extra, k_out.shape[1]), k_out.dtype)])
    else:
        # Net2WiderNet: g maps every unit of the wide layer to a unit of the narrow one.
        g = jnp.concatenate([jnp.arange(old), jax.random.randint(key, (extra,), 0, old)])
        copies = jnp.bincount(g, length=old).astype(k_out.dtype)
        inc["kernel"] = k_in[:, g]
        inc["bias"] = b_in[g]
        out["kernel"] = k_out[g] / copies[g][:, None]
    hidden[layer] = int(new_width)
    return _rebuild(arch, hidden, layer_list)


def deepen(
    arch: dict,
    params: dict,
    key: jax.Array | None = None,
    position: int | None = None,
) -> tuple[dict, dict]:
    """Insert an identity-initialized hidden layer at ``position`` without changing the function.

    Exact for ``relu`` MLPs only (see the module docstring for why); other activations raise
    ``ValueError``. After a hidden layer of width ``w`` the new layer has width ``w``
    (the identity); at position 0 (on the raw input) it has width ``2 * in_features``
    (``[I, -I]``, because the input may be negative).

    Args:
        arch, params: the MLP.
        key: unused (the construction is deterministic); accepted for a uniform API.
        position: index in ``arch["hidden"]`` where the new layer goes; default
            ``len(hidden)``: just before the output layer.

    Returns:
        ``(new_arch, new_params)``.

    Example:
        >>> from ev3evo.distillation import models
        >>> f = models.functional(models.build({"in_features": 4, "hidden": [3], "num_classes": 2}))
        >>> deepen(f.arch, f.params)[0]["hidden"]
        [3, 3]
    """
    del key
    hidden, layers = _check(arch, params)
    activation = arch.get("activation", "relu")
    if activation != "relu":
        raise ValueError(
            f"deepen is function-preserving only for relu MLPs (an identity layer passes the "
            f"non-negative outputs of relu unchanged); this model uses {activation!r}: "
            "use widen instead"
        )
    position = len(hidden) if position is None else position
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise TypeError(f"position must be an integer in [0, {len(hidden)}], got {position!r}")
    if not 0 <= position <= len(hidden):
        raise ValueError(f"position {position} out of range [0, {len(hidden)}]")
    layer_list = [dict(layers[i]) for i in range(len(layers))]
    nxt = layer_list[position]  # the layer that currently reads the new layer's input
    width = nxt["kernel"].shape[0]
    dtype = nxt["kernel"].dtype
    eye = jnp.eye(width, dtype=dtype)
    if position > 0:  # input is a relu output (>= 0): relu(I h) = h
        new = {"kernel": eye, "bias": jnp.zeros((width,), dtype)}
        new_width = width
    else:  # raw input, any sign: relu(x) - relu(-x) = x
        new = {"kernel": jnp.concatenate([eye, -eye], axis=1),
               "bias": jnp.zeros((2 * width,), dtype)}
        nxt = dict(nxt)
        nxt["kernel"] = jnp.concatenate([nxt["kernel"], -nxt["kernel"]], axis=0)
        layer_list[position] = nxt
        new_width = 2 * width
    layer_list.insert(position, new)
    hidden.insert(position, new_width)
    return _rebuild(arch, hidden, layer_list)


def grow(
    arch: dict,
    params: dict,
    kind: str,
    key: jax.Array,
    amount: int | None = None,
    *,
    method: str = "zero",
) -> tuple[dict, dict]:
    """One growth step: ``"widen"`` every hidden layer by ``amount`` units, ``"deepen"``, or
    (CNNs) ``"residual"``.

    ``"widen"``: each hidden layer gets ``amount`` more units (default: half its width, at
    least 2), with ``method`` as in :func:`widen`. ``"deepen"``: ``amount`` identity layers
    (default 1) inserted before the output layer. A CNN grows by
    :func:`ev3evo.distillation.growth_conv.grow` (channels per stage, identity stages,
    ``"residual"`` blocks in every stage; ``method`` must be ``"zero"``). Calling it with the
    same ``key`` on the current and the stable model grows both the same way.

    Example:
        >>> import jax
        >>> from ev3evo.distillation import models
        >>> f = models.functional(models.build({"in_features": 4, "hidden": [8], "num_classes": 2}))
        >>> grow(f.arch, f.params, "widen", jax.random.key(0))[0]["hidden"]
        [12]
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, np.integer))
                               or amount < 1):
        raise ValueError(f"amount must be a positive integer, got {amount!r}")
    if isinstance(arch, dict) and arch.get("kind") == "cnn":
        if method != "zero":
            raise ValueError(f"a CNN widens with method='zero' only, got {method!r}")
        return growth_conv.grow(arch, params, kind, key, amount)
    if kind == "residual":
        raise ValueError("residual blocks grow a CNN (a cnn:... model); an MLP grows with "
                         "'widen' or 'deepen'")
    hidden, _ = _check(arch, params)
    if kind == "deepen":
        for _ in range(1 if amount is None else int(amount)):
            arch, params = deepen(arch, params)
        return arch, params
    if not hidden:
        raise ValueError("the model has no hidden layer to widen; use kind='deepen' first")
    for layer, (w, k) in enumerate(zip(hidden, jax.random.split(key, len(hidden)))):
        extra = max(2, w // 2) if amount is None else int(amount)
        arch, params = widen(arch, params, layer, w + extra, k, method=method)
    return arch, params


def grow_module(
    model: models.MLP | models.CNN, kind: str, key: jax.Array, amount: int | None = None,
    **kwargs
) -> models.MLP | models.CNN:
    """:func:`grow` on a built-in nnx model (an MLP or a CNN): returns a new, grown module.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> m = models.MLP(4, [3], 2, rngs=nnx.Rngs(0))
        >>> grow_module(m, "deepen", jax.random.key(0)).hidden
        (3, 3)
    """
    if not isinstance(model, (models.MLP, models.CNN)):
        raise TypeError(f"grow_module expects an ev3evo MLP or CNN, got {type(model).__name__}")
    f = models.functional(model)
    arch, params = grow(f.arch, f.params, kind, key, amount, **kwargs)
    return models.to_module(models.template(arch), params)
