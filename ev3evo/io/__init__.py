"""Input/output: checkpoints for exact resume, safe file writes, a run lock, strict JSON.

Modules: :mod:`~ev3evo.io.checkpoint` (saving, reading with the newest-intact fallback,
restoring), :mod:`~ev3evo.io.format` (the file format), :mod:`~ev3evo.io.fingerprint` (the
configuration fingerprint and the difference between two), :mod:`~ev3evo.io.checkpointer`
(what :func:`ev3evo.run` uses), :mod:`~ev3evo.io.atomic` (atomic writes that never follow a
symbolic link), :mod:`~ev3evo.io.lock` (one run per folder), :mod:`~ev3evo.io.strict_json`,
:mod:`~ev3evo.io.errors` (a storage error in one line: the path and the cause).

**What is and is not pickled.** A checkpoint is a msgpack document of plain data: the state's
arrays (numeric dtypes; typed PRNG keys as their key data), the run's key, the history and the
metadata (JSON text), the fingerprint, and the host data the engine source's ``dump`` hook
returns (numeric arrays, numbers, strings, bytes, lists and dicts). Reading one never runs
code. The only pickles are bytes a ``dump`` hook marks as :class:`~ev3evo.types.Pickled`: of
the sources in ev3evo, only nevergrad's (its optimizers are Python objects that nevergrad
serializes with ``pickle``, ``Optimizer.dump``). They are handed back to the source's ``load``
hook, which unpickles them, only when the caller passes ``trust_pickles=True``
(:func:`load_checkpoint`, :class:`Checkpointer`, :func:`ev3evo.run`); without it a checkpoint
holding one is refused before anything is unpickled. Pass it only for files you trust: you
wrote them and nobody else could change them. No other file ev3evo writes (histories, summaries,
locks) holds a pickle.

The array state is written with :mod:`flax.serialization` (msgpack) rather than with
orbax-checkpoint: orbax writes a folder of about a dozen files per checkpoint (tensorstore) and
carries neither the run's history, metadata and host data nor the single-file checksum, version
header and fingerprint that make a checkpoint one atomic rename; for an EV3 state on a CPU a
single msgpack file is also several times faster to save and restore
(``benchmarks/checkpoint_formats.py``). orbax's strengths (asynchronous saves, arrays sharded
over several hosts) would matter for models far larger than a population's host memory.

Example::

    import os, tempfile
    from ev3evo.io import atomic_write
    path = atomic_write(os.path.join(tempfile.mkdtemp(), "notes.txt"), b"hello")
    assert open(path, "rb").read() == b"hello"
"""

from .atomic import UnsafePathError as UnsafePathError
from .atomic import atomic_write as atomic_write
from .atomic import atomic_writer as atomic_writer
from .atomic import open_append as open_append
from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import CheckpointWarning as CheckpointWarning
from .checkpoint import list_checkpoints as list_checkpoints
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import read_checkpoint as read_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .checkpointer import Checkpointer as Checkpointer
from .fingerprint import fingerprint as fingerprint
from .lock import RunLock as RunLock
from .lock import RunLockedError as RunLockedError
