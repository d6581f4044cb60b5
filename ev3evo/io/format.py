"""The checkpoint file format: a header, a checksum and a msgpack document of plain data.

One file per checkpoint::

    b"EV3CKPT\\0" | format version (uint32 LE) | sha256 of the payload | payload

The payload is a msgpack document (:mod:`flax.serialization`: arrays as typed buffers of a
numeric dtype) holding only arrays, numbers, strings, bytes, lists and dicts: decoding it never
creates any other Python object. Typed PRNG keys are stored as ``jax.random.key_data`` with
the name of their implementation and re-wrapped on load.

A source's host data (its ``dump`` hook) is plain data too; bytes the hook marked as a pickle
(:class:`~ev3evo.types.Pickled`) are stored as ``{"__ev3evo_pickle__": bytes}`` and decoded back
into :class:`~ev3evo.types.Pickled` only by :func:`decode_host` with ``trust=True``; nothing in
this package unpickles them.

Example::

    import numpy as np
    from ev3evo.io import format as fmt

    blob = fmt.pack({"format": "ev3evo-checkpoint", "leaves": {"0": {"data": np.arange(3)}}})
    doc = fmt.unpack(blob, "example")
    assert doc["leaves"]["0"]["data"].tolist() == [0, 1, 2]
"""

from __future__ import annotations

import hashlib
import struct

import jax
import jax.numpy as jnp
import numpy as np

from ..types import Pickled

MAGIC = b"EV3CKPT\x00"
# 2: host data through the sources' dump/load hooks, pickles marked (1: nevergrad blobs)
VERSION = 2
HEADER = struct.Struct("<8sI32s")  # magic, version, sha256 of the payload
PICKLE_KEY = "__ev3evo_pickle__"


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, unreadable, another version or configuration."""


class CheckpointWarning(UserWarning):
    """The newest checkpoint was unreadable; an older one was used."""


class DamagedCheckpoint(Exception):
    """A file that is not an intact checkpoint (the reader falls back to an older one)."""


# ----------------------------------------------------------------------------- array leaves
def is_key(x) -> bool:
    """Whether ``x`` is a typed PRNG key array (or its abstract value)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def encode_leaf(x) -> dict:
    """One state leaf (a host array) as a dict of plain data."""
    if is_key(x):
        return {"key": str(jax.random.key_impl(x)), "data": np.asarray(jax.random.key_data(x))}
    return {"data": np.asarray(x)}


def decode_leaf(entry: dict, template):
    """The leaf ``entry`` encodes, as numpy when ``template`` is numpy, else as a JAX array."""
    data = np.asarray(entry["data"])
    if "key" in entry:
        return jax.random.wrap_key_data(jnp.asarray(data), impl=entry["key"])
    if is_key(template):
        raise CheckpointError("a PRNG-key leaf was saved as a plain array")
    if isinstance(template, np.ndarray | np.generic):
        return data  # numpy stays numpy (jnp.asarray would narrow float64 without x64)
    return jnp.asarray(data)


# ----------------------------------------------------------------------------- host data
_SCALARS = (str, bytes, bool, int, float, type(None))


def encode_host(data, where: str = "host") -> tuple:
    """``(encoded, pickles)``: a dump hook's data as msgpack-ready plain data.

    ``pickles`` lists where the :class:`~ev3evo.types.Pickled` values are. Raises
    ``TypeError`` naming the first value that is not plain data.
    """
    pickles: list[str] = []
    return _encode(data, where, pickles), pickles


def _encode(x, where: str, pickles: list):
    if isinstance(x, Pickled):
        if not isinstance(x.data, bytes):
            raise TypeError(f"{where}: Pickled data must be bytes, got {type(x.data).__name__}")
        pickles.append(where)
        return {PICKLE_KEY: x.data}
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str) or k == PICKLE_KEY:
                raise TypeError(f"{where}: dict keys must be strings (not {PICKLE_KEY!r}), got {k!r}")
            out[k] = _encode(v, f"{where}[{k!r}]", pickles)
        return out
    if isinstance(x, list | tuple):
        return [_encode(v, f"{where}[{i}]", pickles) for i, v in enumerate(x)]
    if isinstance(x, _SCALARS):
        return x
    if isinstance(x, np.ndarray | np.generic | jax.Array) and not is_key(x):
        a = np.asarray(x)
        if a.dtype.kind in "biufc":
            return a
    raise TypeError(
        f"{where} is a {type(x).__name__}: a dump hook returns plain data (numeric arrays, numbers, "
        "strings, bytes, None, lists and dicts of them); wrap bytes that are a pickle in "
        "ev3evo.Pickled"
    )


def pickles_in(encoded, where: str = "host") -> list[str]:
    """Where the stored data holds marked pickles (read without decoding them)."""
    if isinstance(encoded, dict):
        if PICKLE_KEY in encoded:
            return [where]
        return [p for k, v in encoded.items() for p in pickles_in(v, f"{where}[{k!r}]")]
    if isinstance(encoded, list):
        return [p for i, v in enumerate(encoded) for p in pickles_in(v, f"{where}[{i}]")]
    return []


def decode_host(encoded, *, trust: bool, path: str):
    """The data a dump hook returned; marked pickles become :class:`~ev3evo.types.Pickled`.

    Raises:
      CheckpointError: the data holds a pickle and ``trust`` is false.
    """
    found = pickles_in(encoded)
    if found and not trust:
        raise CheckpointError(
            f"checkpoint {path} holds pickled host data ({', '.join(found[:3])}): a source's "
            "dump hook saved a Python object as a pickle, and unpickling a file can run any "
            "code. Restore it only from a file you trust (you wrote it and nobody else could "
            "change it), with trust_pickles=True"
        )
    return _decode(encoded)


def _decode(x):
    if isinstance(x, dict):
        if PICKLE_KEY in x:
            if set(x) != {PICKLE_KEY} or not isinstance(x[PICKLE_KEY], bytes):
                raise CheckpointError("a pickle marker in the host data is malformed")
            return Pickled(x[PICKLE_KEY])
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v) for v in x]
    return x


# ----------------------------------------------------------------------------- the file
def pack(doc: dict) -> bytes:
    """The file's bytes for a document of plain data: header, checksum, msgpack payload."""
    from flax import serialization

    payload = serialization.msgpack_serialize(doc)
    return HEADER.pack(MAGIC, VERSION, hashlib.sha256(payload).digest()) + payload


def unpack(blob: bytes, path: str) -> dict:
    """The document of a checkpoint file's bytes.

    Raises:
      DamagedCheckpoint: not a checkpoint, truncated, or corrupted (bad checksum or content).
      CheckpointError: an intact file of another format version.
    """
    from flax import serialization

    if len(blob) < HEADER.size or blob[: len(MAGIC)] != MAGIC:
        raise DamagedCheckpoint("it is not an ev3evo checkpoint (bad header; truncated?)")
    _, version, digest = HEADER.unpack_from(blob)
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this ev3evo "
            f"reads version {VERSION}. Use the ev3evo version that wrote it, or start afresh"
        )
    payload = blob[HEADER.size :]
    if hashlib.sha256(payload).digest() != digest:
        raise DamagedCheckpoint("its checksum does not match (truncated or corrupted)")
    try:
        doc = serialization.msgpack_restore(payload)
        if not isinstance(doc, dict):
            raise ValueError("the payload is not a document")
    except Exception as e:  # any decoding problem means the file is unusable
        raise DamagedCheckpoint(f"its content cannot be decoded ({type(e).__name__}: {e})") from e
    return doc
