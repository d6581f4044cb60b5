"""The :class:`Checkpointer` that :func:`ev3evo.run` uses: periodic saves and the resume.

A checkpoint is due every ``every`` steps, or once ``seconds`` of wall time have passed since
the last one was written (or since the checkpointer was made), whichever comes first; either
trigger may be ``None``. The time trigger bounds the work a crash can lose whatever a step
costs; it never changes the run (a checkpoint only reads the state), so a run resumed from
any of them ends the same.

Example::

    import tempfile, jax, jax.numpy as jnp, ev3evo
    from ev3evo.io import Checkpointer

    metric = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - 1) ** 2) + 0 * b)
    engine = ev3evo.EV3([ev3evo.gaussian(4, 0.1)], [metric])
    key = jax.random.key(0)
    state = engine.init(key, {"w": jnp.zeros(3)})
    saver = Checkpointer(tempfile.mkdtemp(), every=2)
    assert saver.save(engine, key, state, history=[]) is not None  # step 0 is due
    assert saver.save(engine, key, state, history=[]) is None      # already written
    assert saver.resume(engine, key, state).step == 0
    timed = Checkpointer(tempfile.mkdtemp(), every=None, seconds=30.0)
    assert timed.save(engine, key, state, history=[]) is None         # not yet 30 s
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

from . import atomic
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    list_checkpoints,
    read_document,
    remove_stale_temporaries,
    restore,
    same_key,
    save_checkpoint,
)


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _seconds(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"checkpoint_seconds must be a number of seconds >= 0, got {value!r}")
    return float(value)


class Checkpointer:
    """Periodic checkpoints for :func:`ev3evo.run` (built from its ``checkpoint_*`` arguments).

    Args:
      directory: where checkpoints live.
      every: write one every ``every`` steps (and always at the end of the run); ``None``:
        no step trigger.
      keep: how many to keep.
      metadata: a JSON-ready dict, or ``(engine, state) -> dict`` called at each write (e.g.
        the architecture after growth).
      seconds: also write one when this many seconds of wall time have passed since the last
        one written (``None``: no time trigger; ``0``: every step).
      root: the folder trusted as given (e.g. a command's output folder): folders between it
        and ``directory`` must not be symbolic links (default: ``directory`` itself).
      trust_pickles: let :meth:`resume` hand pickled host data (nevergrad optimizers) to the
        sources' ``load`` hooks; only for checkpoints you trust (see
        :func:`~ev3evo.io.load_checkpoint`).
      clock: the wall clock of the time trigger, in seconds (``time.monotonic``).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int | None = 1,
        keep: int = 3,
        metadata: Mapping | Callable[[Any, Any], Mapping] | None = None,
        *,
        seconds: float | None = None,
        root: str | os.PathLike | None = None,
        trust_pickles: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.every = None if every is None else _positive(every, "checkpoint_every")
        self.seconds, self.clock = _seconds(seconds), clock
        self.saved_at = clock()  # when the last checkpoint was written (or the start)
        self.keep = _positive(keep, "keep_checkpoints")
        self.directory, self.metadata = os.fspath(directory), metadata
        self.root = self.directory if root is None else os.fspath(root)
        self.trust_pickles = bool(trust_pickles)
        self.last_saved: int | None = None
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"checkpoint_dir {self.directory} exists and is not a directory")
        if os.path.isdir(self.directory):  # a symbolic link below the root is refused early
            atomic.make_dirs(self.directory, root=self.root)

    def _metadata(self, engine, state) -> dict:
        m = self.metadata(engine, state) if callable(self.metadata) else self.metadata
        return dict(m or {})

    def resume(self, engine, key, template) -> Checkpoint | None:
        """The restored checkpoint, or ``None`` when the directory has none yet."""
        remove_stale_temporaries(self.directory)
        doc = read_document(self.directory)
        if doc is None:
            return None
        config = self._metadata(engine, template).get("config")
        ckpt = restore(doc, template, engine=engine, config=config,
                       trust_pickles=self.trust_pickles)
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

    def due(self, step: int) -> bool:
        """Whether a checkpoint of ``step`` is due (the step or the time trigger)."""
        if self.every is not None and step % self.every == 0:
            return True
        return self.seconds is not None and self.clock() - self.saved_at >= self.seconds

    def save(self, engine, key, state, history, *, force: bool = False) -> str | None:
        """Writes a checkpoint when one is due (or ``force``) and not already written."""
        step = int(jax.device_get(state.step))
        if step == self.last_saved or not (force or self.due(step)):
            return None
        path = save_checkpoint(
            self.directory,
            state,
            engine=engine,
            key=key,
            history=history,
            metadata=self._metadata(engine, state),
            keep=self.keep,
            root=self.root,
        )
        self.last_saved, self.saved_at = step, self.clock()
        return path
