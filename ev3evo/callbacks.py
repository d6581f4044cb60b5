"""Callbacks for :func:`ev3evo.run`: progress bar, JSONL history, early stopping.

Example::

    import jax, jax.numpy as jnp, ev3evo
    score = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum(p["w"] ** 2) + 0 * b)
    engine = ev3evo.EV3([ev3evo.gaussian(4, sigma=0.1)], [score])
    stop = ev3evo.EarlyStopping(patience=2)
    result = ev3evo.run(engine, jax.random.key(0), {"w": jnp.zeros(2)}, jnp.zeros(4),
                        jnp.zeros(4), steps=50, callbacks=[stop, ev3evo.JSONLHistory("h.jsonl")])
    assert result.status == "stopped" and result.steps < 50
"""

from __future__ import annotations

import math
import os
from typing import Any

from .io.atomic import atomic_write, open_append
from .io.strict_json import dumps


class Callback:
    """Base class: override what you need. ``on_step`` returning true stops the run."""

    def on_start(self, engine, state) -> None:
        pass

    def on_step(self, record: dict, state, engine) -> bool | None:
        return None

    def on_end(self, result) -> None:
        pass

    def on_resume(self, history: list[dict]) -> None:
        """Called by ``run(..., resume=True)`` with the history restored from the checkpoint."""


class ProgressBar(Callback):
    """A tqdm progress bar showing the stable and current primary metric and the winner."""

    def __init__(self, total: int | None = None, desc: str = "ev3", **tqdm_kwargs: Any):
        self.total, self.desc, self.kwargs = total, desc, tqdm_kwargs
        self.bar = None

    def on_start(self, engine, state):
        from tqdm.auto import tqdm

        self.primary = engine.objectives[0].metric
        self.bar = tqdm(total=self.total, desc=self.desc, initial=int(state.step), **self.kwargs)

    def on_step(self, record, state, engine):
        self.bar.update(1)
        self.bar.set_postfix(
            stable=f"{record['stable'][self.primary]:.4f}",
            current=f"{record['current'][self.primary]:.4f}",
            win=record["winner_source"] or "-",
            refresh=False,
        )

    def on_end(self, result):
        if self.bar is not None:
            self.bar.close()


class JSONLHistory(Callback):
    """Appends one strict-JSON line per step to ``path`` (flushed each step: a crash keeps it).

    Non-finite numbers are written as ``null`` (:mod:`ev3evo.io.strict_json`). The file is
    opened without following a symbolic link at ``path``, and the folders between ``root``
    and it must not be links either (:mod:`ev3evo.io.atomic`).

    Args:
      path: the log file.
      mode: ``"a"`` appends to an existing log, ``"w"`` empties it first.
      root: the folder trusted as given (default: ``path`` 's own folder).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "a", *,
                 root: str | os.PathLike | None = None):
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        self.path, self.mode, self.root = os.fspath(path), mode, root
        self.file = None

    def on_start(self, engine, state):
        self.file = open_append(self.path, root=self.root, truncate=self.mode == "w")

    def on_resume(self, history):
        # Steps after the last checkpoint were logged before the crash and will run again:
        # replace the file by the restored history so that no step appears twice.
        self.file.close()
        atomic_write(self.path, "".join(dumps(r) + "\n" for r in history).encode("utf-8"),
                     root=self.root)
        self.file = open_append(self.path, root=self.root)

    def on_step(self, record, state, engine):
        try:
            self.file.write(dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk says so without a file name: name the log
            if e.filename is None:
                e.filename = self.path
            raise

    def on_end(self, result):
        if self.file is not None:
            self.file.close()
            self.file = None


class EarlyStopping(Callback):
    """Stops when the stable model's metric has not improved by ``min_delta`` for ``patience`` steps.

    Args:
      patience: steps without improvement before stopping.
      metric: the metric to watch (defaults to the primary objective).
      min_delta: the smallest change that counts as an improvement (in the metric's own
        direction: a decrease for metrics to minimize).
    """

    def __init__(self, patience: int = 20, metric: str | None = None, min_delta: float = 0.0):
        if patience <= 0:
            raise ValueError(f"patience must be positive, got {patience}")
        self.patience, self.metric, self.min_delta = patience, metric, min_delta
        self.best, self.waited = -math.inf, 0

    def on_start(self, engine, state):
        self.metric = self.metric or engine.objectives[0].metric
        m = {x.name: x for x in engine.metrics}[self.metric]
        self.sign = 1.0 if m.maximize else -1.0

    def on_resume(self, history):
        self.best, self.waited = -math.inf, 0
        for record in history:
            self._update(record)

    def on_step(self, record, state, engine):
        return self._update(record)

    def _update(self, record) -> bool:
        value = self.sign * record["stable"][self.metric]
        if value > self.best + self.min_delta:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        return self.waited >= self.patience
