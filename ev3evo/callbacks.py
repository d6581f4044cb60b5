"""Callbacks for :func:`ev3evo.run`: progress bar, JSONL history, TensorBoard, early stopping.

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
import uuid
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
    """A tqdm progress bar of what ends the run: the time budget, the steps, or both.

    With a time budget the bar counts seconds of it (and shows ``step k/N`` beside); without
    one, it counts steps. The stable and current primary metric and the last winning source
    are shown too.

    Args:
      total: the run's steps.
      time_budget: the run's wall-clock budget in seconds, when it has one.
      desc: the bar's label.
      **tqdm_kwargs: passed to ``tqdm`` (e.g. ``file=sys.stderr``).
    """

    def __init__(self, total: int | None = None, desc: str = "ev3",
                 time_budget: float | None = None, **tqdm_kwargs: Any):
        self.total, self.desc, self.kwargs = total, desc, tqdm_kwargs
        self.time_budget = time_budget
        self.bar = None

    def on_start(self, engine, state):
        from tqdm.auto import tqdm

        self.primary = engine.objectives[0].metric
        self.first = int(state.step)
        self.elapsed = 0.0
        if self.time_budget is not None:
            self.bar = tqdm(total=round(float(self.time_budget), 1), desc=self.desc, unit="s",
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
                            **self.kwargs)
        else:
            self.bar = tqdm(total=self.total, desc=self.desc, initial=self.first, unit="step",
                            **self.kwargs)

    def on_step(self, record, state, engine):
        if record.get("initial"):  # the starting model: no step taken yet
            return
        postfix = {}
        if self.time_budget is not None:
            seconds = float(record.get("seconds", self.elapsed))
            self.bar.update(max(0.0, min(seconds, self.time_budget) - self.elapsed))
            self.elapsed = max(self.elapsed, min(seconds, self.time_budget))
            postfix["step"] = f"{record['step']}/{self.total}" if self.total else record["step"]
        else:
            self.bar.update(1)
        postfix.update(stable=f"{record['stable'][self.primary]:.4f}",
                       current=f"{record['current'][self.primary]:.4f}",
                       win=record["winner_source"] or "-")
        self.bar.set_postfix(postfix, refresh=False)

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


class TensorBoard(Callback):
    """Writes every step's record as TensorBoard scalars (event files, with ``tensorboardX``).

    Tags: ``stable/<metric>``, ``current/<metric>``, ``slots/<source>``, ``gate/accepted``,
    ``gate/certified``, ``gate/pvalue``; the step number is the record's. After a resume the
    events from the steps that run again are purged, so each step appears once. Needs the
    ``tensorboard`` extra (``pip install "ev3evo[tensorboard]"``).

    Args:
      logdir: the folder of the event files.
    """

    def __init__(self, logdir: str | os.PathLike):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ImportError("the TensorBoard callback needs tensorboardX: "
                              'pip install "ev3evo[tensorboard]"') from None
        self.logdir = os.fspath(logdir)
        self.writer = None
        self._purge = None

    def _writer(self, purge_step):
        from tensorboardX import SummaryWriter

        # An event file is named after the second it was opened in and the host: a suffix of
        # its own keeps a run resumed within the same second from truncating the last one's.
        return SummaryWriter(self.logdir, purge_step=purge_step, flush_secs=10,
                             filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")

    def on_start(self, engine, state):
        self.writer = self._writer(self._purge)

    def on_resume(self, history):
        steps = [r["step"] for r in history if "step" in r and "event" not in r]
        if self.writer is not None and steps:  # the steps after max(steps) run again
            self.writer.close()
            self.writer = self._writer(max(steps) + 1)

    def on_step(self, record, state, engine):
        step = int(record["step"])
        scalars = {f"stable/{k}": v for k, v in record["stable"].items()}
        scalars.update({f"current/{k}": v for k, v in record["current"].items()})
        scalars.update({f"slots/{k}": v for k, v in record["allocation"].items()})
        scalars.update({"gate/accepted": float(record["accepted"]),
                        "gate/certified": float(record["certified"]),
                        "gate/pvalue": record["pvalue"]})
        for tag, value in scalars.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)

    def on_end(self, result):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
