"""Function-preserving growth of a CNN: wider stages (Net2Net), an identity stage, residual blocks.

The CNN of :class:`~ev3evo.distillation.models.CNN` is a sequence of stages (a convolution and
its relu, residual blocks ``relu(h + conv2(relu(conv1(h))))``, an optional 2× max pool) and a
dense head on the flattened features. Every stage's output is non-negative (a relu, or a max
of relus), which is what makes these growths exact:

- :func:`widen` adds ``e`` channels to a stage (Net2WiderNet with zero outgoing weights, Chen,
  Goodfellow & Shlens 2016): the new filters get random incoming weights (LeCun-normal), and
  everything that reads them gets zero weights for them: the next convolution's input slice,
  the head's rows of those channels at every position, the stage's residual blocks' input
  slice (their new inner units read the old channels only and write nothing back). The old
  channels compute what they computed; the new ones are ignored until trained.
- :func:`deepen` inserts a stage whose convolution is the identity (a kernel whose centre tap
  is ``I``, zero elsewhere; ``SAME`` padding, odd kernel) and that does not pool:
  ``relu(I h) = h`` for ``h ≥ 0`` (Net2DeeperNet). On the raw input (position 0), which can be
  negative, the new stage has ``[I, -I]`` (twice the input channels) and the next layer reads
  ``[W; -W]``: ``relu(x) W - relu(-x) W = x W``.
- :func:`residual` appends a residual block to every stage, its second convolution zero
  (kernel and bias), the first random: the block computes ``relu(h + 0) = h``. This is the
  analogue of EV3's deepening of every ResNet stage (Ding et al. 2023), where the new blocks
  start as identities.

All work on the architecture dict and plain params dict of the CNN and return a new pair.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from ev3evo.distillation import models
    >>> f = models.functional(models.CNN((8, 8, 1), [4], 3, rngs=nnx.Rngs(0)))
    >>> arch, params = widen(f.arch, f.params, 0, 6, jax.random.key(0))
    >>> arch, params = residual(*deepen(arch, params))
    >>> arch["channels"], arch["blocks"]
    ([6, 6], [1, 1])
    >>> x = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
    >>> g = models.template(arch)
    >>> bool(jnp.allclose(f.apply(f.params, x), g.apply(params, x), atol=1e-5))
    True
"""

from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import models

__all__ = ["deepen", "grow", "residual", "widen"]


def _layers(arch: dict, params: dict):
    """``(convs, blocks, head)`` of a CNN's params, checked against ``arch``'s shapes."""
    if not isinstance(arch, dict) or arch.get("kind") != "cnn":
        raise TypeError(f"arch must be a CNN architecture dict (see models.build), got {arch!r}")
    expected = jax.tree.map(np.shape, models.template(arch).params)
    got = jax.tree.map(np.shape, params) if isinstance(params, dict) else None
    if got != expected:
        raise ValueError(
            f"params do not match arch {models.describe(arch)}: expected shapes {expected}, got "
            f"{got} (a population axis? grow each member, e.g. with jax.vmap)")
    n = len(arch["channels"])
    convs = [dict(params["convs"][i]) for i in range(n)]
    res = params.get("residual", {})
    blocks = [[{k: dict(v) for k, v in res[i][j].items()} for j in range(arch["blocks"][i])]
              for i in range(n)]
    return convs, blocks, dict(params["head"])


def _assemble(arch: dict, convs, blocks, head) -> tuple[dict, dict]:
    params = {"convs": dict(enumerate(convs)), "head": head}
    residual = {i: dict(enumerate(b)) for i, b in enumerate(blocks) if b}
    if residual:
        params["residual"] = residual
    arch = {**copy.deepcopy(arch), "blocks": [len(b) for b in blocks]}
    return arch, params


def _spatial(arch: dict) -> tuple[list[int], int]:
    """The spatial size after the last stage and the number of input channels."""
    shape = arch["in_shape"]
    spatial, c_in = (list(shape), 1) if len(shape) == 1 else (list(shape[:-1]), shape[-1])
    for p in arch["pool"]:
        spatial = [d // 2 for d in spatial] if p else spatial
    return spatial, int(c_in)


def _head_rows(head: dict, arch: dict, channels: int, fn) -> dict:
    """The head with its kernel's rows seen as ``(positions, channels, classes)`` mapped by
    ``fn`` (a new channel count may come out)."""
    k = head["kernel"]
    positions = math.prod(_spatial(arch)[0])
    rows = fn(k.reshape(positions, channels, k.shape[-1]))
    return {**head, "kernel": rows.reshape(-1, k.shape[-1])}


def _zeros_in(kernel, extra: int):
    """``kernel`` with ``extra`` zero input channels appended."""
    pad = jnp.zeros((*kernel.shape[:-2], extra, kernel.shape[-1]), kernel.dtype)
    return jnp.concatenate([kernel, pad], axis=-2)


def _lecun(key, shape, dtype, scale: float = 1.0):
    """LeCun-normal weights of kernel shape ``(*taps, in, out)``: variance ``scale² / fan_in``."""
    fan_in = math.prod(shape[:-1])
    return jax.random.normal(key, shape, dtype) * (scale / np.sqrt(fan_in))


def _new_filters(key, kernel, extra: int, scale: float):
    """``extra`` LeCun-normal output filters over ``kernel``'s input channels."""
    return _lecun(key, (*kernel.shape[:-1], extra), kernel.dtype, scale)


def _widen_block(key, block: dict, extra: int, scale: float) -> dict:
    c1, c2 = block["conv1"], block["conv2"]
    # conv1: the old inner units ignore the new channels; the new inner units read the old
    # channels only
    k1 = jnp.concatenate([_zeros_in(c1["kernel"], extra),
                          _zeros_in(_new_filters(key, c1["kernel"], extra, scale), extra)],
                         axis=-1)
    # conv2: nothing is read from the new inner units, nothing is written to the new channels
    k2 = _zeros_in(c2["kernel"], extra)
    k2 = jnp.concatenate([k2, jnp.zeros((*k2.shape[:-1], extra), k2.dtype)], axis=-1)
    pad = lambda b: jnp.concatenate([b, jnp.zeros((extra,), b.dtype)])
    return {"conv1": {"kernel": k1, "bias": pad(c1["bias"])},
            "conv2": {"kernel": k2, "bias": pad(c2["bias"])}}


def widen(arch: dict, params: dict, stage: int, new_width: int, key: jax.Array, *,
          init_scale: float = 1.0) -> tuple[dict, dict]:
    """Widen stage ``stage`` to ``new_width`` channels without changing the function.

    Args:
        arch, params: the CNN (architecture dict and plain params dict).
        stage: index into ``arch["channels"]`` (negative indices count from the end).
        new_width: the new number of channels (at least the current one).
        key: randomness for the new filters.
        init_scale: multiplies the LeCun-normal incoming weights of the new filters.

    Returns:
        ``(new_arch, new_params)``.
    """
    convs, blocks, head = _layers(arch, params)
    channels = list(arch["channels"])
    if isinstance(stage, bool) or not isinstance(stage, (int, np.integer)):
        raise TypeError(f"stage must be an integer index into channels {channels}, got {stage!r}")
    if not -len(channels) <= stage < len(channels):
        raise ValueError(f"stage {stage} out of range for channels {channels}")
    s = int(stage) % len(channels)
    old = channels[s]
    if isinstance(new_width, bool) or not isinstance(new_width, (int, np.integer)):
        raise TypeError(f"new_width must be an integer, got {new_width!r}")
    if new_width < old:
        raise ValueError(f"new_width {new_width} is smaller than the current width {old}")
    extra = int(new_width) - old
    if extra == 0:
        return _assemble(arch, convs, blocks, head)
    k_conv, *k_blocks = jax.random.split(key, 1 + len(blocks[s]))
    conv = convs[s]
    convs[s] = {"kernel": jnp.concatenate([conv["kernel"], _new_filters(
        k_conv, conv["kernel"], extra, init_scale)], axis=-1),
        "bias": jnp.concatenate([conv["bias"], jnp.zeros((extra,), conv["bias"].dtype)])}
    blocks[s] = [_widen_block(k, b, extra, init_scale) for k, b in zip(k_blocks, blocks[s])]
    if s + 1 < len(convs):
        convs[s + 1] = {**convs[s + 1], "kernel": _zeros_in(convs[s + 1]["kernel"], extra)}
    else:
        head = _head_rows(head, arch, old, lambda r: jnp.concatenate(
            [r, jnp.zeros((r.shape[0], extra, r.shape[2]), r.dtype)], axis=1))
    channels[s] = int(new_width)
    return _assemble({**arch, "channels": channels}, convs, blocks, head)


def _identity_kernel(kernel_size: int, ndim: int, matrix) -> jax.Array:
    """A kernel whose centre tap is ``matrix`` (in × out) and every other tap zero."""
    k = jnp.zeros((kernel_size,) * ndim + matrix.shape, matrix.dtype)
    centre = (kernel_size // 2,) * ndim
    return k.at[centre].set(matrix)


def deepen(arch: dict, params: dict, key: jax.Array | None = None,
           position: int | None = None) -> tuple[dict, dict]:
    """Insert an identity stage (no pool, no residual block) at ``position`` (default: last,
    before the head) without changing the function; see the module docstring."""
    del key  # deterministic; accepted for a uniform API
    convs, blocks, head = _layers(arch, params)
    channels, n = list(arch["channels"]), len(arch["channels"])
    position = n if position is None else position
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise TypeError(f"position must be an integer in [0, {n}], got {position!r}")
    if not 0 <= position <= n:
        raise ValueError(f"position {position} out of range [0, {n}]")
    k, ndim = int(arch["kernel_size"]), max(1, len(arch["in_shape"]) - 1)
    dtype = head["kernel"].dtype
    if position > 0:  # after a relu stage: relu(I h) = h
        width = channels[position - 1]
        new = {"kernel": _identity_kernel(k, ndim, jnp.eye(width, dtype=dtype)),
               "bias": jnp.zeros((width,), dtype)}
    else:  # the raw input, any sign: relu(x) - relu(-x) = x
        c_in = _spatial(arch)[1]
        eye = jnp.eye(c_in, dtype=dtype)
        width = 2 * c_in
        new = {"kernel": _identity_kernel(k, ndim, jnp.concatenate([eye, -eye], axis=1)),
               "bias": jnp.zeros((width,), dtype)}
        both = lambda w: jnp.concatenate([w, -w], axis=-2)
        if n:
            convs[0] = {**convs[0], "kernel": both(convs[0]["kernel"])}
        else:
            head = _head_rows(head, arch, c_in, lambda r: jnp.concatenate([r, -r], axis=1))
    convs.insert(position, new)
    blocks.insert(position, [])
    channels.insert(position, width)
    pool = [*arch["pool"][:position], False, *arch["pool"][position:]]
    return _assemble({**arch, "channels": channels, "pool": pool}, convs, blocks, head)


def residual(arch: dict, params: dict, key: jax.Array | None = None) -> tuple[dict, dict]:
    """Append a residual block with a zero second convolution to every stage (the identity on
    the stage's non-negative output); see the module docstring."""
    convs, blocks, head = _layers(arch, params)
    key = jax.random.key(0) if key is None else key
    for s, (c, k) in enumerate(zip(arch["channels"], jax.random.split(key, len(convs)))):
        shape = (arch["kernel_size"],) * max(1, len(arch["in_shape"]) - 1) + (c, c)
        dtype = head["kernel"].dtype
        zero = {"kernel": jnp.zeros(shape, dtype), "bias": jnp.zeros((c,), dtype)}
        first = {"kernel": _lecun(k, shape, dtype), "bias": jnp.zeros((c,), dtype)}
        blocks[s] = [*blocks[s], {"conv1": first, "conv2": zero}]
    return _assemble(arch, convs, blocks, head)


def grow(arch: dict, params: dict, kind: str, key: jax.Array, amount: int | None = None
         ) -> tuple[dict, dict]:
    """One growth of a CNN: ``"widen"`` every stage by ``amount`` channels (default half its
    width, at least 2), ``"deepen"`` by ``amount`` identity stages (default 1) before the head,
    or ``"residual"``: ``amount`` residual blocks (default 1) in every stage."""
    if kind == "widen":
        for s, k in enumerate(jax.random.split(key, len(arch["channels"]))):
            w = arch["channels"][s]
            arch, params = widen(arch, params, s, w + (max(2, w // 2) if amount is None
                                                       else int(amount)), k)
        return arch, params
    step = {"deepen": deepen, "residual": residual}[kind]
    for k in jax.random.split(key, 1 if amount is None else int(amount)):
        arch, params = step(arch, params, k)
    return arch, params
