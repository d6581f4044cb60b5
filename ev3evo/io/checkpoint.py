"""Checkpoints: the whole state of a run in one file, written atomically, restored exactly.

A checkpoint holds everything a run needs to continue as if it had never stopped: the
:class:`~ev3evo.EV3State` (current and stable models, every source's state including evosax
and optax states, the allocation record, the step and stall counters), the run's PRNG key, the
history so far, user metadata (e.g. the student's architecture after growth) and the host data
of the engine's source: what ``engine.source.dump(state.sources)`` returns, handed back to
``engine.source.load(state.sources, data)`` on restore. This module knows no source by name;
a source that keeps Python objects on the host (nevergrad, a user's own) is saved through its
hooks (:class:`~ev3evo.Source`). The file format is :mod:`ev3evo.io.format`; the fingerprint
:mod:`ev3evo.io.fingerprint`.

**Atomic writes.** Files are written by :mod:`ev3evo.io.atomic` (temporary file, ``fsync``,
``os.replace``, ``fsync`` of the folder; never through a symbolic link): a crash at any moment
leaves either the previous set of checkpoints or the new one, never a half-written checkpoint
under a final name. The last ``keep`` checkpoints are kept; the reader takes the newest intact
one and falls back to an older one (with a :class:`CheckpointWarning`) when the newest is
unreadable.

**Pickles.** Host data marked as a pickle (:class:`~ev3evo.types.Pickled`: nevergrad's
optimizers) is handed to the ``load`` hook only with ``trust_pickles=True``; without it a
checkpoint holding one is refused with a :class:`CheckpointError`, before anything is
unpickled. :attr:`Checkpoint.pickles` says where a file holds pickles.

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

import errno
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from . import atomic
from .fingerprint import describe_difference, hash_summary, leaf_spec, summarize
from .format import VERSION as VERSION
from .format import CheckpointError as CheckpointError
from .format import CheckpointWarning as CheckpointWarning
from .format import (
    DamagedCheckpoint,
    decode_host,
    decode_leaf,
    encode_host,
    encode_leaf,
    is_key,
    pack,
    pickles_in,
    unpack,
)

_NAME = re.compile(r"^ckpt-(\d{9})\.ev3$")
_TMP = re.compile(r"^\.ckpt-\d{9}\.ev3\.tmp-")
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


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
      pickles: where the host data holds pickles (restored only with ``trust_pickles=True``).
    """

    path: str
    step: int
    state: Any
    key: Any
    history: list
    metadata: dict
    fingerprint: str
    summary: dict
    pickles: tuple = ()


# ----------------------------------------------------------------------------- writing
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


def _host_data(state, engine):
    """The engine source's ``dump`` of ``state.sources``, encoded; ``None`` without a hook."""
    source = getattr(engine, "source", None)
    if source is None or source.dump is None:
        return None
    try:
        data = source.dump(state.sources)
    except Exception as e:
        raise CheckpointError(
            f"the dump hook of source {source.name!r} failed: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(data, dict):
        raise TypeError(f"the dump hook of source {source.name!r} returned "
                        f"{type(data).__name__}, not a dict of plain data")
    return encode_host(data, f"host data of source {source.name!r}")[0]


def _document(state, engine, key, history, metadata: dict, step: int) -> dict:
    summary = summarize(state, engine, metadata.get("config"))
    leaves = [encode_leaf(x) for x in jax.device_get(jax.tree.leaves(state))]
    host = _host_data(state, engine)
    try:
        history_text = json.dumps(list(history), allow_nan=True)
        metadata_text = json.dumps(metadata, allow_nan=True, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"checkpoint history and metadata must be JSON-serializable: {e}") from e
    return {
        "format": "ev3evo-checkpoint",
        "step": step,
        "fingerprint": hash_summary(summary),
        "summary": json.dumps(summary, sort_keys=True),
        "leaves": {str(i): leaf for i, leaf in enumerate(leaves)},
        "num_leaves": len(leaves),
        "key": encode_leaf(jax.device_get(key)) if key is not None else None,
        "host": host,
        "history": history_text,
        "metadata": metadata_text,
    }


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
    root: str | os.PathLike | None = None,
) -> str:
    """Writes ``state`` (and the run's key, history and metadata) atomically; returns the path.

    Args:
      directory: where checkpoints live (created if missing).
      state: an :class:`~ev3evo.EV3State` (any pytree of arrays works without ``engine``).
      engine: the :class:`~ev3evo.EV3` that made it: its configuration goes in the
        fingerprint, and its source's ``dump`` hook (if any) gives the host data.
      key: the run's PRNG key.
      history: JSON-ready step records.
      metadata: JSON-ready user data (e.g. the architecture); ``metadata["config"]`` is part
        of the fingerprint.
      keep: how many checkpoints to keep (older ones are removed after the new one is safe).
      step: the step number in the file name; defaults to ``state.step`` (or
        ``state["step"]``), else 0.
      root: the folder trusted as given (see :mod:`ev3evo.io.atomic`): folders between it and
        ``directory`` must not be symbolic links. Defaults to ``directory`` itself.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a positive integer, got {keep!r}")
    directory = os.fspath(directory)
    root = directory if root is None else root
    metadata = dict(metadata or {})
    if step is None:
        step = state.get("step", 0) if isinstance(state, Mapping) else getattr(state, "step", 0)
    step = int(jax.device_get(step))
    blob = pack(_document(state, engine, key, history, metadata, step))
    final = atomic.atomic_write(checkpoint_path(directory, step), blob, root=root)
    for _, old in list_checkpoints(directory)[keep:]:
        atomic.remove(old, root=root)
    return final


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Removes temporary files left by writes that were interrupted; returns how many."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return 0
    names = [n for n in os.listdir(directory) if _TMP.match(n)]
    return sum(atomic.remove(os.path.join(directory, n), root=directory) for n in names)


# ----------------------------------------------------------------------------- reading
def _read_file(path: str, follow: bool) -> dict:
    """The decoded document of one file (``follow``: the user named it; else never a link)."""
    flags = _READ_FLAGS | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as f:
            blob = f.read()
    except OSError as e:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else f"cannot read it ({e.strerror or e})"
        raise DamagedCheckpoint(why) from e
    doc = unpack(blob, path)
    try:
        doc["summary"] = json.loads(doc["summary"])
        doc["history"] = json.loads(doc["history"])
        doc["metadata"] = json.loads(doc["metadata"])
        if doc.get("format") != "ev3evo-checkpoint" or len(doc["leaves"]) != doc["num_leaves"]:
            raise ValueError("unexpected content")
    except Exception as e:  # any decoding problem means the file is unusable
        raise DamagedCheckpoint(f"its content cannot be decoded ({type(e).__name__}: {e})") from e
    doc["path"] = path
    return doc


def read_document(directory: str | os.PathLike) -> dict | None:
    """The newest intact checkpoint's decoded document; ``None`` if the directory has none.

    ``directory`` may also name one checkpoint file (read even if it is a link). In a
    directory, files that are symbolic links count as unreadable; unreadable newer files are
    skipped with a :class:`CheckpointWarning`.

    Raises:
      CheckpointError: only unusable checkpoints, or one of another format version.
    """
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        try:
            return _read_file(directory, follow=True)
        except DamagedCheckpoint as e:
            raise CheckpointError(f"checkpoint {directory} is unusable: {e}") from None
    problems = []
    for _, path in list_checkpoints(directory):
        try:
            doc = _read_file(path, follow=False)
        except DamagedCheckpoint as e:
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


def _checkpoint(doc: dict, state) -> Checkpoint:
    key = None if doc["key"] is None else decode_leaf(doc["key"], None)
    return Checkpoint(
        path=doc["path"],
        step=int(doc["step"]),
        state=state,
        key=key,
        history=doc["history"],
        metadata=doc["metadata"],
        fingerprint=doc["fingerprint"],
        summary=doc["summary"],
        pickles=tuple(pickles_in(doc.get("host"))),
    )


def read_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The newest intact checkpoint without restoring the state (``state`` is ``None``).

    Use it to read ``metadata`` first (e.g. to rebuild a grown model before restoring), or
    ``pickles`` before deciding to trust a file. Returns ``None`` when ``directory`` holds no
    checkpoint; raises :class:`CheckpointError` when it holds only unusable ones.
    """
    doc = read_document(directory)
    return None if doc is None else _checkpoint(doc, None)


def _restore_host(state, engine, doc: dict, trust_pickles: bool):
    """Hands the saved host data to the engine source's ``load`` hook."""
    source, saved, path = getattr(engine, "source", None), doc.get("host"), doc["path"]
    if saved is None:
        if source is not None and source.dump is not None:
            raise CheckpointError(f"checkpoint {path} holds no host data, but source "
                                  f"{source.name!r} keeps host state (it has a dump hook)")
        return state
    if source is None or source.load is None:
        raise CheckpointError(f"checkpoint {path} holds host data, but no source here has a "
                              "load hook (pass the engine that wrote it)")
    data = decode_host(saved, trust=trust_pickles, path=path)
    try:
        sources = source.load(state.sources, data)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: the load hook of source {source.name!r} "
                              f"failed: {type(e).__name__}: {e}") from e
    return state._replace(sources=sources)


def restore(doc_or_dir, template, *, engine=None, config: Mapping | None = None,
            trust_pickles: bool = False) -> Checkpoint:
    """Restores a checkpoint (a document or a directory) into the structure of ``template``.

    See :func:`load_checkpoint`.
    """
    doc = doc_or_dir if isinstance(doc_or_dir, dict) else read_document(doc_or_dir)
    if doc is None:
        raise CheckpointError(f"no checkpoint in {os.fspath(doc_or_dir)}")
    if config is None:
        config = doc["metadata"].get("config")
    current = summarize(template, engine, config)
    if hash_summary(current) != doc["fingerprint"]:
        raise CheckpointError(
            f"checkpoint {doc['path']} was written by another configuration: "
            f"{describe_difference(doc['summary'], current)}"
        )
    templates, treedef = jax.tree.flatten(template)
    leaves = [decode_leaf(doc["leaves"][str(i)], t) for i, t in enumerate(templates)]
    for (name, shape, dtype), x in zip(current["tree"], leaves):
        if [list(np.shape(x)), leaf_spec(x)[1]] != [shape, dtype]:
            raise CheckpointError(f"checkpoint {doc['path']}: leaf {name} does not match")
    state = _restore_host(jax.tree.unflatten(treedef, leaves), engine, doc, trust_pickles)
    return _checkpoint(doc, state)


def load_checkpoint(
    directory: str | os.PathLike, template, *, engine=None, config: Mapping | None = None,
    trust_pickles: bool = False,
) -> Checkpoint:
    """Loads the newest intact checkpoint of ``directory`` into the structure of ``template``.

    Args:
      directory: a checkpoint directory (or one checkpoint file).
      template: a state of the same configuration, e.g. ``engine.init(key, params)``; only
        its structure, shapes and dtypes are used.
      engine: the engine the run uses (its configuration must match the checkpoint's); its
        source's ``load`` hook receives the saved host data.
      config: the user configuration to check (defaults to the one saved in the metadata).
      trust_pickles: hand pickled host data (nevergrad optimizers) to the ``load`` hook, which
        unpickles it. Unpickling runs whatever code the file says: pass true only for a file
        you trust (you wrote it and nobody else could change it).

    Raises:
      CheckpointError: no checkpoint, only unusable ones, another format version, another
        configuration (the message names the difference), or pickled host data without
        ``trust_pickles``.
    """
    return restore(os.fspath(directory), template, engine=engine, config=config,
                   trust_pickles=trust_pickles)


def same_key(a, b) -> bool:
    """Whether two PRNG keys (typed or raw) hold the same bits."""

    def bits(k):
        return np.asarray(jax.random.key_data(k) if is_key(k) else k)

    return is_key(a) == is_key(b) and np.array_equal(bits(a), bits(b))
