"""Checkpoints: the whole state of a run on disk, written atomically, restored exactly.

A checkpoint holds everything a run needs to continue as if it had never stopped: the
:class:`~ev3evo.EV3State` (current and stable models, every source's state including evosax
and optax states, the allocation record, the step and stall counters), the run's PRNG key, the
history so far, user metadata (e.g. the student's architecture after growth) and, for host
sources that keep Python objects (nevergrad), the bytes of their own ``dump`` hook.

**Format.** One file per checkpoint, ``ckpt-<step>.ev3``::

    b"EV3CKPT\\0" | format version (uint32 LE) | sha256 of the payload | payload

The payload is a msgpack document written with :mod:`flax.serialization` (arrays as typed
buffers; typed PRNG keys stored as ``jax.random.key_data`` and re-wrapped on load), with the
history and metadata as JSON strings. Nothing is pickled. A checksum catches truncated and
corrupted files; the version is readable without decoding the payload.

**Atomic writes.** The bytes go to a temporary file in the same directory, are flushed and
``fsync`` ed, then ``os.replace`` d onto the final name and the directory is ``fsync`` ed: a
crash at any moment leaves either the previous set of checkpoints or the new one, never a
half-written checkpoint under a final name. The last ``keep`` checkpoints are kept; the loader
takes the newest intact one and falls back to an older one (with a :class:`CheckpointWarning`)
when the newest is unreadable.

**Fingerprint.** Each checkpoint records the structure of the state (every leaf's path, shape
and dtype), a summary of the engine's configuration (sources, metrics, objectives,
constraints, gate, allocation settings) and ``metadata["config"]`` when given. Restoring into a
different configuration fails with a :class:`CheckpointError` that names the difference.

Example::

    import tempfile, jax, jax.numpy as jnp, ev3evo
    from ev3evo.io import load_checkpoint, save_checkpoint

    metric = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - 1) ** 2) + 0 * b)
    engine = ev3evo.EV3([ev3evo.gaussian(4, 0.1)], [metric])
    key = jax.random.key(0)
    state = engine.init(key, {"w": jnp.zeros(3)})
    directory = tempfile.mkdtemp()
    save_checkpoint(directory, state, engine=engine, key=key, history=[{"step": 0}])
    restored = load_checkpoint(directory, template=state, engine=engine)
    assert restored.step == 0 and restored.history == [{"step": 0}]
    assert (restored.state.current["w"] == state.current["w"]).all()
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .atomic import atomic_write

MAGIC = b"EV3CKPT\x00"
VERSION = 1
_HEADER = struct.Struct("<8sI32s")  # magic, version, sha256 of the payload
_NAME = re.compile(r"^ckpt-(\d{9})\.ev3$")
_TMP = re.compile(r"^\.ckpt-\d{9}\.ev3\.tmp-")


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, unreadable, another version or configuration."""


class CheckpointWarning(UserWarning):
    """The newest checkpoint was unreadable; an older one was used."""


class Checkpoint(NamedTuple):
    """A checkpoint read from disk.

    Attributes:
      path: the file it came from.
      step: the run's step counter when it was written.
      state: the restored :class:`~ev3evo.EV3State` (``None`` from :func:`read_checkpoint`,
        which does not need a template).
      key: the run's PRNG key (``None`` if none was saved).
      history: the run's history records up to ``step``.
      metadata: the user metadata (JSON), e.g. the model's architecture.
      fingerprint: the configuration fingerprint (hex).
      summary: the configuration summary the fingerprint hashes.
    """

    path: str
    step: int
    state: Any
    key: Any
    history: list
    metadata: dict
    fingerprint: str
    summary: dict


# ----------------------------------------------------------------------------- fingerprint
def _is_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaf_spec(x) -> list:
    if _is_key(x):
        return [list(np.shape(x)), str(x.dtype)]  # e.g. "key<fry>", also for abstract values
    return [list(np.shape(x)), np.dtype(x.dtype).name]


def _engine_summary(engine) -> dict:
    return {} if engine is None else engine.describe()


def _nevergrad():
    """The nevergrad source module when it is in use (never imported just for a checkpoint)."""
    return sys.modules.get("ev3evo.explore.nevergrad")


def _host_states(tree) -> list:
    ng = _nevergrad()
    return [] if ng is None else ng._nevergrad_states(tree)


def _dump_host(state) -> list[bytes]:
    """Nevergrad optimizers behind the state, in pytree order, through nevergrad's own dump.

    Nevergrad optimizers are Python objects kept outside the pytree (the state holds a
    handle); ``Optimizer.dump`` pickles them, the only pickle in a checkpoint. The source's
    bookkeeping of foreign tells is saved next to it so that a resumed run tells the same points.
    """
    ng, blobs = _nevergrad(), []
    for st in _host_states(state):
        entry = ng._entry(st)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "optimizer.pkl")
            ng.nevergrad_dump(st, path)
            with open(path, "rb") as f:
                optimizer = f.read()
        last = entry.last_foreign
        blobs.append(
            {
                "optimizer": optimizer,
                "foreign": bool(entry.foreign),
                "foreign_told": int(entry.foreign_told),
                "last_foreign": None if last is None else np.asarray(last),
            }
        )
    return blobs


def _load_host(state, template, blobs: list, path: str):
    """Binds the saved nevergrad optimizers to the handles of ``template``'s fresh ones."""
    restored_states = _host_states(state)
    if len(restored_states) != len(blobs):
        raise CheckpointError(
            f"checkpoint {path} holds {len(blobs)} nevergrad optimizer(s) but the state has "
            f"{len(restored_states)}"
        )
    if not blobs:
        return state
    ng = _nevergrad()
    fresh = iter(_host_states(template))
    mapping = {}
    for st, blob in zip(restored_states, blobs):
        like = next(fresh)  # the template's fresh optimizer is replaced by the saved one
        unravel = ng._entry(like).unravel
        new = st._replace(handle=like.handle)
        with tempfile.TemporaryDirectory() as tmp:
            opt_path = os.path.join(tmp, "optimizer.pkl")
            with open(opt_path, "wb") as f:
                f.write(blob["optimizer"])
            ng.nevergrad_load(new, opt_path, None)
        entry = ng._entry(new)
        entry.unravel = unravel
        entry.foreign, entry.foreign_told = bool(blob["foreign"]), int(blob["foreign_told"])
        last = blob.get("last_foreign")
        entry.last_foreign = None if last is None else np.asarray(last)
        mapping[id(st)] = new
    return jax.tree.map(lambda x: mapping.get(id(x), x), state, is_leaf=lambda x: id(x) in mapping)


def _tree_summary(state) -> list:
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    out = []
    for path, x in flat:
        name = jax.tree_util.keystr(path)
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise CheckpointError(
                f"cannot checkpoint state leaf {name} of type {type(x).__name__}: only arrays "
                "are saved; a source that keeps Python objects in its state needs dump/load hooks"
            )
        out.append([name, *_leaf_spec(x)])
    return out


def summarize(state, engine=None, config: Mapping | None = None) -> dict:
    """The configuration summary that :func:`fingerprint` hashes (JSON-ready)."""
    return {
        "tree": _tree_summary(state),
        "engine": _engine_summary(engine),
        "host_states": len(_host_states(state)),
        "config": json.loads(json.dumps(config, sort_keys=True)) if config is not None else None,
    }


def _hash(summary: dict) -> str:
    text = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(state, engine=None, config: Mapping | None = None) -> str:
    """A short hash of the state's structure (paths, shapes, dtypes) and the configuration.

    ``state`` may be real arrays or ``jax.ShapeDtypeStruct`` s (``jax.eval_shape``).
    """
    return _hash(summarize(state, engine, config))


def _describe_difference(saved: dict, current: dict) -> str:
    if saved.get("tree") != current.get("tree"):
        a = {row[0]: row[1:] for row in saved.get("tree", [])}
        b = {row[0]: row[1:] for row in current.get("tree", [])}
        lines = []
        for name in [n for n in b if n in a and a[n] != b[n]][:3]:
            (sa, da), (sb, db) = a[name], b[name]
            lines.append(f"leaf {name} is {da}{sa} in the checkpoint but {db}{sb} here")
        missing = [n for n in a if n not in b][:3]
        extra = [n for n in b if n not in a][:3]
        if missing:
            lines.append(f"leaves only in the checkpoint: {', '.join(missing)}")
        if extra:
            lines.append(f"leaves only here: {', '.join(extra)}")
        return "the model/state structure differs: " + "; ".join(lines or ["leaf order differs"])
    labels = {
        "engine": "engine configuration",
        "host_states": "number of nevergrad optimizers",
        "config": "run configuration (metadata['config'])",
    }
    for part, label in labels.items():
        sa, sb = saved.get(part), current.get(part)
        if sa != sb:
            if isinstance(sa, dict) and isinstance(sb, dict):
                keys = [k for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
                details = "; ".join(
                    f"{k}: {sa.get(k)!r} in the checkpoint, {sb.get(k)!r} here" for k in keys[:3]
                )
                return f"the {label} differs ({details})"
            return f"the {label} differs: {sa!r} in the checkpoint, {sb!r} here"
    return "the configuration differs"


# ----------------------------------------------------------------------------- encoding
def _encode_leaf(x) -> dict:
    if _is_key(x):
        return {"key": str(jax.random.key_impl(x)), "data": np.asarray(jax.random.key_data(x))}
    return {"data": np.asarray(x)}


def _decode_leaf(entry: dict, template):
    data = np.asarray(entry["data"])
    if "key" in entry:
        return jax.random.wrap_key_data(jnp.asarray(data), impl=entry["key"])
    if _is_key(template):
        raise CheckpointError("a PRNG-key leaf was saved as a plain array")
    if isinstance(template, np.ndarray | np.generic):
        return data  # numpy stays numpy (jnp.asarray would narrow float64 without x64)
    return jnp.asarray(data)


def checkpoint_path(directory: str | os.PathLike, step: int) -> str:
    """The file name of the checkpoint of ``step`` in ``directory``."""
    return os.path.join(os.fspath(directory), f"ckpt-{int(step):09d}.ev3")


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """``(step, path)`` of the checkpoint files in ``directory``, newest first."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return sorted(found, reverse=True)


def save_checkpoint(
    directory: str | os.PathLike,
    state,
    *,
    engine=None,
    key=None,
    history: Sequence[dict] = (),
    metadata: Mapping | None = None,
    keep: int = 3,
    step: int | None = None,
) -> str:
    """Writes ``state`` (and the run's key, history and metadata) atomically; returns the path.

    Args:
      directory: where checkpoints live (created if missing).
      state: an :class:`~ev3evo.EV3State` (any pytree of arrays works).
      engine: the :class:`~ev3evo.EV3` that made it: its configuration goes in the
        fingerprint.
      key: the run's PRNG key.
      history: JSON-ready step records.
      metadata: JSON-ready user data (e.g. the architecture); ``metadata["config"]`` is part
        of the fingerprint.
      keep: how many checkpoints to keep (older ones are removed after the new one is safe).
      step: the step number in the file name; defaults to ``state.step`` (or
        ``state["step"]``), else 0.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a positive integer, got {keep!r}")
    from flax import serialization

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    metadata = dict(metadata or {})
    if step is None:
        step = state.get("step", 0) if isinstance(state, Mapping) else getattr(state, "step", 0)
    step = int(jax.device_get(step))
    summary = summarize(state, engine, metadata.get("config"))
    leaves = [_encode_leaf(x) for x in jax.device_get(jax.tree.leaves(state))]
    host = _dump_host(state)
    try:
        history_text = json.dumps(list(history), allow_nan=True)
        metadata_text = json.dumps(metadata, allow_nan=True, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"checkpoint history and metadata must be JSON-serializable: {e}") from e
    payload = serialization.msgpack_serialize(
        {
            "format": "ev3evo-checkpoint",
            "step": step,
            "fingerprint": _hash(summary),
            "summary": json.dumps(summary, sort_keys=True),
            "leaves": {str(i): leaf for i, leaf in enumerate(leaves)},
            "num_leaves": len(leaves),
            "key": _encode_leaf(jax.device_get(key)) if key is not None else None,
            "host": {str(i): blob for i, blob in enumerate(host)},
            "history": history_text,
            "metadata": metadata_text,
        }
    )
    blob = _HEADER.pack(MAGIC, VERSION, hashlib.sha256(payload).digest()) + payload
    final = atomic_write(checkpoint_path(directory, step), blob)
    for _, old in list_checkpoints(directory)[keep:]:
        try:
            os.remove(old)
        except FileNotFoundError:
            pass
    return final


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Removes temporary files left by writes that were interrupted; returns how many."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for name in os.listdir(directory):
        if _TMP.match(name):
            try:
                os.remove(os.path.join(directory, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


# ----------------------------------------------------------------------------- reading
class _Corrupt(Exception):
    pass


def _read_file(path: str) -> dict:
    from flax import serialization

    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise _Corrupt(f"cannot read it ({e.strerror or e})") from e
    if len(blob) < _HEADER.size or blob[: len(MAGIC)] != MAGIC:
        raise _Corrupt("it is not an ev3evo checkpoint (bad header; truncated?)")
    _, version, digest = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this ev3evo "
            f"reads version {VERSION}. Use the ev3evo version that wrote it, or start afresh"
        )
    payload = blob[_HEADER.size :]
    if hashlib.sha256(payload).digest() != digest:
        raise _Corrupt("its checksum does not match (truncated or corrupted)")
    try:
        doc = serialization.msgpack_restore(payload)
        doc["summary"] = json.loads(doc["summary"])
        doc["history"] = json.loads(doc["history"])
        doc["metadata"] = json.loads(doc["metadata"])
        if doc.get("format") != "ev3evo-checkpoint" or len(doc["leaves"]) != doc["num_leaves"]:
            raise ValueError("unexpected content")
    except Exception as e:  # any decoding problem means the file is unusable
        raise _Corrupt(f"its content cannot be decoded ({type(e).__name__}: {e})") from e
    doc["path"] = path
    return doc


def _read_newest(directory: str | os.PathLike) -> dict | None:
    """The newest intact checkpoint's document; ``None`` if the directory has none."""
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        try:
            return _read_file(directory)
        except _Corrupt as e:
            raise CheckpointError(f"checkpoint {directory} is unusable: {e}") from None
    candidates = list_checkpoints(directory)
    problems = []
    for _, path in candidates:
        try:
            doc = _read_file(path)
        except _Corrupt as e:
            problems.append(f"{os.path.basename(path)}: {e}")
            continue
        if problems:
            warnings.warn(
                f"skipped unreadable checkpoint(s) in {directory} ({'; '.join(problems)}); "
                f"using {os.path.basename(path)} (step {doc['step']})",
                CheckpointWarning,
                stacklevel=3,
            )
        return doc
    if problems:
        raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(problems))
    return None


def _checkpoint(doc: dict, state, key) -> Checkpoint:
    return Checkpoint(
        path=doc["path"],
        step=int(doc["step"]),
        state=state,
        key=key,
        history=doc["history"],
        metadata=doc["metadata"],
        fingerprint=doc["fingerprint"],
        summary=doc["summary"],
    )


def _decode_key(entry):
    if entry is None:
        return None
    return _decode_leaf(entry, None)


def read_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The newest intact checkpoint without restoring the state (``state`` is ``None``).

    Use it to read ``metadata`` first (e.g. to rebuild a grown model before restoring).
    Returns ``None`` when ``directory`` holds no checkpoint; raises :class:`CheckpointError`
    when it holds only unusable ones.
    """
    doc = _read_newest(directory)
    return None if doc is None else _checkpoint(doc, None, _decode_key(doc["key"]))


def restore(doc_or_dir, template, *, engine=None, config: Mapping | None = None) -> Checkpoint:
    """Restores a checkpoint into the structure of ``template`` (see :func:`load_checkpoint`)."""
    doc = doc_or_dir if isinstance(doc_or_dir, dict) else _read_newest(doc_or_dir)
    if doc is None:
        raise CheckpointError(f"no checkpoint in {os.fspath(doc_or_dir)}")
    if config is None:
        config = doc["metadata"].get("config")
    current = summarize(template, engine, config)
    if _hash(current) != doc["fingerprint"]:
        raise CheckpointError(
            f"checkpoint {doc['path']} was written by another configuration: "
            f"{_describe_difference(doc['summary'], current)}"
        )
    templates, treedef = jax.tree.flatten(template)
    leaves = [_decode_leaf(doc["leaves"][str(i)], t) for i, t in enumerate(templates)]
    for (name, shape, dtype), x in zip(current["tree"], leaves):
        if [list(np.shape(x)), _leaf_spec(x)[1]] != [shape, dtype]:
            raise CheckpointError(f"checkpoint {doc['path']}: leaf {name} does not match")
    host = [doc["host"][str(i)] for i in range(len(doc["host"]))]
    state = _load_host(jax.tree.unflatten(treedef, leaves), template, host, doc["path"])
    return _checkpoint(doc, state, _decode_key(doc["key"]))


def load_checkpoint(
    directory: str | os.PathLike, template, *, engine=None, config: Mapping | None = None
) -> Checkpoint:
    """Loads the newest intact checkpoint of ``directory`` into the structure of ``template``.

    Args:
      directory: a checkpoint directory (or one checkpoint file).
      template: a state of the same configuration, e.g. ``engine.init(key, params)``; only
        its structure, shapes and dtypes are used.
      engine: the engine the run uses (its configuration must match the checkpoint's).
        Nevergrad optimizers are restored into the handles of ``template`` (which must be a
        real state, not ``jax.eval_shape`` output, when the run has nevergrad sources).
      config: the user configuration to check (defaults to the one saved in the metadata).

    Raises:
      CheckpointError: no checkpoint, only unusable ones, another format version, or another
        configuration (the message names the difference).
    """
    return restore(os.fspath(directory), template, engine=engine, config=config)


def same_key(a, b) -> bool:
    """Whether two PRNG keys (typed or raw) hold the same bits."""

    def bits(k):
        return np.asarray(jax.random.key_data(k) if _is_key(k) else k)

    return _is_key(a) == _is_key(b) and np.array_equal(bits(a), bits(b))


class Checkpointer:
    """Periodic checkpoints for :func:`ev3evo.run` (built from its ``checkpoint_*`` arguments).

    Args:
      directory: where checkpoints live.
      every: write one every ``every`` steps (and always at the end of the run).
      keep: how many to keep.
      metadata: a JSON-ready dict, or ``(engine, state) -> dict`` called at each write (e.g.
        the architecture after growth).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int = 1,
        keep: int = 3,
        metadata: Mapping | Callable[[Any, Any], Mapping] | None = None,
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep_checkpoints must be a positive integer, got {keep!r}")
        self.directory, self.every, self.keep, self.metadata = (
            os.fspath(directory),
            every,
            keep,
            metadata,
        )
        self.last_saved: int | None = None
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"checkpoint_dir {self.directory} exists and is not a directory")

    def _metadata(self, engine, state) -> dict:
        m = self.metadata(engine, state) if callable(self.metadata) else self.metadata
        return dict(m or {})

    def resume(self, engine, key, template) -> Checkpoint | None:
        """The restored checkpoint, or ``None`` when the directory has none yet."""
        remove_stale_temporaries(self.directory)
        doc = _read_newest(self.directory)
        if doc is None:
            return None
        config = self._metadata(engine, template).get("config")
        ckpt = restore(doc, template, engine=engine, config=config)
        if ckpt.key is not None and key is not None and not same_key(ckpt.key, key):
            raise CheckpointError(
                f"checkpoint {ckpt.path} was written by a run with another PRNG key (seed); "
                "resume with the seed of the original run"
            )
        self.last_saved = ckpt.step
        return ckpt

    def check_fresh(self) -> None:
        """Refuses to start a new run over an existing one's checkpoints."""
        if list_checkpoints(self.directory):
            raise ValueError(
                f"checkpoint_dir {self.directory} already holds checkpoints; pass resume=True "
                "to continue that run, or choose an empty directory"
            )

    def save(self, engine, key, state, history, *, force: bool = False) -> str | None:
        """Writes a checkpoint when one is due (or ``force``) and not already written."""
        step = int(jax.device_get(state.step))
        if step == self.last_saved or (not force and step % self.every):
            return None
        path = save_checkpoint(
            self.directory,
            state,
            engine=engine,
            key=key,
            history=history,
            metadata=self._metadata(engine, state),
            keep=self.keep,
        )
        self.last_saved = step
        return path
