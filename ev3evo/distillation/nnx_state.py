"""A flax nnx model as plain arrays: its parameters, the rest of its state, and back.

``nnx.split(model, nnx.Param, ...)`` gives the parameters (what EV3 explores) and the rest
(batch statistics, RNG streams, caches: what it carries). :func:`split` makes both plain
dicts (``nnx.to_pure_dict``) whose leaves are ordinary arrays: a typed PRNG key (dtype
``key<fry>``) becomes its raw data (``jax.random.key_data``), so that population arithmetic,
finiteness checks and checkpoints see ``uint32`` arrays; :func:`merge` wraps the keys back
(``jax.random.wrap_key_data``) and rebuilds the module. A model that cannot be split this way
(no ``nnx.Param`` at all, or a parameter that is not floating-point) raises
:class:`ModelError` saying how to write it.

Example::

    import jax.numpy as jnp
    from flax import nnx
    from ev3evo.distillation.nnx_state import merge, split
    model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(1)))
    parts = split(model)
    assert parts.rest["layers"][1]["rngs"]["key"].dtype == jnp.uint32   # raw key data
    again = merge(parts.graphdef, parts.params, parts.rest, parts.keys)
    assert isinstance(again, nnx.Sequential)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ModelError", "Parts", "from_raw", "keys_of", "merge", "split", "to_raw"]


class ModelError(ValueError):
    """A model that ev3evo cannot use as it is; the message says why and what to change."""


class Parts(NamedTuple):
    """A module split into plain arrays (see the module docstring).

    Attributes:
      graphdef: the module's structure (``nnx.split``'s first output).
      params: its ``nnx.Param`` values, a plain dict.
      rest: every other variable, a plain dict with PRNG keys as raw data.
      keys: ``{path: impl}`` of the leaves of ``rest`` that are PRNG keys.
    """

    graphdef: Any
    params: dict
    rest: dict
    keys: dict


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None) or jnp.float32, jax.dtypes.prng_key)


def keys_of(tree) -> dict:
    """``{path: impl name}`` of the typed PRNG keys among the leaves of ``tree``."""
    return {path: str(jax.random.key_impl(x))
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if _is_key(x)}


def to_raw(tree):
    """``tree`` with every typed PRNG key replaced by its raw data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def from_raw(tree, keys: dict):
    """The inverse of :func:`to_raw` for the key leaves ``keys`` (from :func:`keys_of`)."""
    if not keys:
        return tree
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jax.random.wrap_key_data(x, impl=keys[path]) if path in keys else x,
        tree)


def _check_params(module, params) -> None:
    name = type(module).__name__
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ModelError(
            f"the model {name} holds no nnx.Param: EV3 explores a model's nnx.Param variables "
            "and carries the rest; keep its weights in nnx.Param (nnx.Linear and nnx.Conv do), "
            "and batch statistics, RNG streams and buffers in other nnx.Variable types")
    for path, x in leaves:
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise ModelError(
                f"the model {name} has a parameter {jax.tree_util.keystr(path)} of dtype "
                f"{x.dtype}: EV3 explores floating-point parameters only; hold it in an "
                "nnx.Variable that is not an nnx.Param to carry it unchanged")


def split(module: nnx.Module) -> Parts:
    """``module``'s parameters and the rest of its state as plain dicts (see the module
    docstring); raises :class:`ModelError` for a model that cannot be split so."""
    if not isinstance(module, nnx.Module):
        raise TypeError(f"expected a flax nnx Module, got {type(module).__name__}")
    try:
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    except Exception as e:  # flax refuses the graph (e.g. a variable it cannot place)
        raise ModelError(
            f"cannot split the model {type(module).__name__} into its parameters and the rest "
            f"with nnx.split(model, nnx.Param, ...): {type(e).__name__}: {e}") from None
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    _check_params(module, params)
    return Parts(graphdef, params, to_raw(rest), keys_of(rest))


def merge(graphdef, params: dict, rest: dict, keys: dict) -> nnx.Module:
    """The module of ``graphdef`` with ``params`` and ``rest`` (raw keys wrapped back)."""
    return nnx.merge(graphdef, params, from_raw(rest, keys))
