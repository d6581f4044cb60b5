"""Checkpoints of any flax nnx model: one msgpack file, its variables and a JSON config.

:func:`save` writes every variable of a module (parameters, batch statistics, RNG streams as
raw key data) with ``flax.serialization``: no pickle. A built-in model
(:class:`~ev3evo.distillation.models.MLP`, :class:`~ev3evo.distillation.models.CNN`) also
writes its architecture dict, so :func:`load` rebuilds it from the file alone. Any other
module is restored into a module of the same architecture that the caller builds
(``load(path, like=MyCNN(rngs=nnx.Rngs(0)))`` or a function returning one; the file names the
class it was saved from): a file holds numbers, never code. The variables and the config are
stored with their SHA-256, so a flipped byte is found on load, never used.

Example::

    import os, tempfile
    import jax.numpy as jnp
    from flax import nnx
    from ev3evo.distillation.checkpoints import load, save
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    path = save(os.path.join(tempfile.mkdtemp(), "m.msgpack"), model)
    fresh = lambda: nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(1)),
                                   nnx.BatchNorm(4, rngs=nnx.Rngs(1)))
    again, config = load(path, like=fresh)
    assert config["class"].endswith("Sequential")
    assert jnp.array_equal(again.layers[0].kernel[...], model.layers[0].kernel[...])
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np
from flax import nnx, serialization

from ..io.atomic import atomic_write, open_nofollow
from . import models
from .nnx_state import from_raw, keys_of, to_raw

__all__ = ["load", "save"]

_FORMAT = "ev3evo-model"
# 1: built-in MLPs only ("params"); 2: also any module ("state"); 3: the body (config and
# variables) as msgpack bytes beside their SHA-256
_VERSION = 3


def _builtin(obj) -> tuple[dict, dict] | None:
    """(arch, params) of a built-in model, its Functional or an (arch or Functional, params)
    pair; ``None`` for any other nnx module."""
    if isinstance(obj, (models.MLP, models.CNN)):
        f = models.functional(obj)
        return f.arch, f.params
    if isinstance(obj, models.Functional):
        if obj.arch is None:
            raise TypeError("save needs the module itself: this Functional is not of a "
                            "built-in architecture (save the nnx module)")
        return obj.arch, obj.params
    if isinstance(obj, tuple) and len(obj) == 2:
        head, params = obj
        if isinstance(head, models.Functional) and head.arch is not None:
            return head.arch, params
        if isinstance(head, dict):
            return head, params
    if isinstance(obj, nnx.Module):
        return None
    raise TypeError(
        "save expects a flax nnx Module, a built-in Functional, or a pair (arch dict or "
        f"Functional, params); got {type(obj).__name__}")


def _merged_config(config, fixed: dict) -> dict:
    full = dict(config or {})
    for k, v in fixed.items():
        if k in full and full[k] != v:
            raise ValueError(f"config[{k!r}] = {full[k]!r} disagrees with the model's {v!r}")
        full[k] = v
    return full


def save(path: str | os.PathLike, model, config: dict | None = None, *,
         root: str | os.PathLike | None = None) -> str:
    """Write a model checkpoint atomically: one msgpack file with its variables and a config.

    Args:
        path: file to write (conventionally ``*.msgpack``); its folder is created.
        model: any flax nnx Module; or, for a built-in architecture, its
            :class:`~ev3evo.distillation.models.Functional` or a pair ``(Functional or arch
            dict, params)`` (e.g. a grown student: ``(new_arch, new_params)``).
        config: extra JSON-able information (e.g. the dataset's name). For a built-in model
            the architecture keys are filled in and must agree with the model when given; for
            any other module ``"class"`` names its class.
        root: the folder trusted as given: folders between it and ``path`` must not be
            symbolic links (see :mod:`ev3evo.io.atomic`; default: ``path`` 's own folder).

    Returns:
        The path written. The file is written to a temporary name, fsynced, then renamed, so a
        crash never leaves a half-written checkpoint.

    Example:
        >>> import os, tempfile
        >>> from flax import nnx
        >>> p = save(os.path.join(tempfile.mkdtemp(), "m.msgpack"),
        ...          models.MLP(3, [4], 2, rngs=nnx.Rngs(0)))
        >>> load(p)[1]["hidden"]
        [4]
    """
    builtin = _builtin(model)
    if builtin is not None:
        arch, params = builtin
        full = _merged_config(config, arch)
        models.to_module(models.template(full), params)  # the params fit, before any write
        body = {"params": jax.tree.map(np.asarray, params)}
    else:
        cls = type(model)
        full = _merged_config(config, {"kind": "module",
                                       "class": f"{cls.__module__}.{cls.__qualname__}"})
        body = {"state": jax.tree.map(np.asarray, to_raw(nnx.to_pure_dict(nnx.state(model))))}
    try:
        config_json = json.dumps(full, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"config must be JSON-serializable: {e}") from None
    inner = serialization.msgpack_serialize({"config": config_json, **body})
    payload = {"format": _FORMAT, "version": _VERSION,
               "sha256": hashlib.sha256(inner).hexdigest(), "body": inner}
    return atomic_write(path, serialization.msgpack_serialize(payload), root=root)


def _bytes(path: str, root) -> bytes:
    if root is None:  # the user named the file: it is read wherever it is
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such checkpoint file")
        with open(path, "rb") as f:
            return f.read()
    if not os.path.lexists(path):
        raise ValueError(f"{path}: no such checkpoint file")
    with os.fdopen(open_nofollow(path, os.O_RDONLY, root=root), "rb") as f:  # never a link
        return f.read()


def _restore(data: bytes, path: str, what: str) -> dict:
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as e:
        raise ValueError(f"{path}: not a readable msgpack {what} ({type(e).__name__})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not an ev3evo model checkpoint")
    return payload


def _read(path: str, root=None, require_checksum: bool = False) -> dict:
    payload = _restore(_bytes(path, root), path, "checkpoint")
    if payload.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an ev3evo model checkpoint")
    version = payload.get("version")
    if version not in (1, 2, _VERSION):
        raise ValueError(f"{path}: unsupported checkpoint version {version!r}")
    if version != _VERSION:
        if require_checksum:
            raise ValueError(f"{path}: written without a checksum (format version {version})")
        return payload
    body = payload.get("body")
    if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != payload.get("sha256"):
        raise ValueError(f"{path}: its checksum does not match (the file is corrupted or "
                         "truncated)")
    return _restore(body, path, "checkpoint body")


def _into(path: str, saved: dict, like, cls: str) -> nnx.Module:
    """The module ``like`` (or ``like()``) with the saved variables."""
    if like is None:
        raise ValueError(
            f"{path} holds the variables of a {cls}, not a built-in architecture: load it into "
            f"a module of that architecture, load(path, like=<a {cls.rsplit('.', 1)[-1]}> or a "
            "function returning one)")
    target = like if isinstance(like, nnx.Module) else like()
    if not isinstance(target, nnx.Module):
        raise TypeError(f"like must be an nnx Module or a function returning one, got "
                        f"{type(target).__name__}")
    graphdef, state = nnx.split(target)
    pure = nnx.to_pure_dict(state)
    keys = keys_of(pure)
    expected = jax.tree_util.tree_flatten_with_path(pure)[0]
    got = jax.tree_util.tree_flatten_with_path(saved)[0]
    if [p for p, _ in expected] != [p for p, _ in got] or any(  # (a key's raw data is longer)
            p not in keys and np.shape(a) != np.shape(b) for (p, a), (_, b) in zip(expected, got)):
        raise ValueError(f"{path}: the saved variables of a {cls} do not fit the given "
                         f"{type(target).__name__} (other layers or shapes)")
    restored = from_raw(jax.tree.map(jax.numpy.asarray, saved), keys)
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


def load(path: str | os.PathLike, like=None, *, root: str | os.PathLike | None = None,
         require_checksum: bool = False) -> tuple[nnx.Module, dict]:
    """Read a checkpoint written by :func:`save`: ``(module, config)``.

    Args:
        path: the file.
        like: for a module that is not a built-in architecture, a module of the same
            architecture (its values are not used) or a function returning one; the saved
            variables are put into it. Not needed for built-in models.
        root: read the file without following a symbolic link at ``path`` or below ``root``
            (a file ev3evo wrote itself, e.g. a cache); default: read it wherever it is.
        require_checksum: refuse a file of an earlier format version, written without one.

    Raises:
        ValueError: missing or unreadable file, not an ev3evo checkpoint, a checksum that does
            not match, variables that do not match the architecture (its config's or
            ``like``'s), or ``like`` missing.
        ev3evo.io.UnsafePathError: with ``root``, ``path`` (or a folder below ``root``) is a
            symbolic link.
    """
    path = os.fspath(path)
    payload = _read(path, root, require_checksum)
    try:
        config = json.loads(payload["config"])
        if "state" in payload:
            return _into(path, payload["state"], like, config.get("class", "module")), config
        module = models.to_module(models.template(config), payload["params"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: corrupt checkpoint ({e})") from None
    except ValueError as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: corrupt checkpoint ({e})") from None
    return module, config
