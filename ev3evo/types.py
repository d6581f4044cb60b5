"""Type aliases and the small NamedTuples shared by the explore, assess and adapt phases.

The protocol in one place:

* A **source** (explore) is a :class:`Source`: pure ``init``/``ask``/``tell`` functions plus a
  static ``size`` (how many candidate slots it fills per step)::

      state = source.init(key, params)
      population, state = source.ask(key, state, params, batch, active)
      state = source.tell(key, state, population, feedback)

  ``population`` has the structure of ``params`` with a leading axis of length ``size``;
  ``active`` is a ``(size,)`` boolean mask of the slots the allocation gives the source this
  step (a source may skip work for inactive slots, or ignore the mask). ``feedback`` is a
  :class:`Feedback`.

* A **metric** (assess) is a :class:`Metric`: ``stats(params, batch)`` returns per-example
  statistics of shape ``(N, k)``; the metric's value on a set of examples is
  ``aggregate(mean of the stats over those examples)``. Per-example metrics (accuracy) have
  ``k = 1`` and ``aggregate = identity``; batch-level metrics (macro-F1, calibration error) are
  written as smooth-free functions of means of per-example counts, so that a bootstrap over
  examples only needs a weighted mean.

Example::

    import jax.numpy as jnp, ev3evo
    source = ev3evo.gaussian(4, sigma=0.1)                 # a Source
    assert isinstance(source, ev3evo.Source) and source.layout.sizes == (4,)
    metric = ev3evo.metrics.accuracy(lambda p, x: x @ p)   # a Metric
    assert metric.stats(jnp.eye(2), {"x": jnp.eye(2), "y": jnp.arange(2)}).shape == (2, 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PRNGKey = jax.Array
Params = Any  # a pytree of arrays
Population = Any  # a pytree of arrays with a leading population axis
Batch = Any  # a pytree of arrays with a leading example axis
SourceState = Any
LossFn = Callable[[Params, Batch], Array]  # (params, batch) -> scalar loss
MutationFn = Callable[[PRNGKey, Params], Params]  # (key, params) -> params


class Feedback(NamedTuple):
    """What a source is told after the assess and adapt phases of a step.

    Attributes:
      fitness: ``(size,)`` utility of each of the source's candidates (higher is better):
        the primary objective's mean on the evaluation batch; ``-inf`` for candidates that
        were inactive, invalid (non-finite parameters or scores) or infeasible.
      selected: ``(size,)`` bool, true for the candidate that became the current model.
      params: the current model after the adapt phase (the accepted candidate, the unchanged
        current model, or the stable model after a rollback).
      rolled_back: scalar bool, true when the current model was rolled back to the stable one.
      params_fitness: scalar utility of ``params`` on the same scale as ``fitness`` (the
        engine fills it in; ``None`` when unknown). Sources that learn from points they did not
        propose (nevergrad's tell-not-asked) use it.
    """

    fitness: Array
    selected: Array
    params: Params
    rolled_back: Array
    params_fitness: Array | None = None


class InitFn(Protocol):
    def __call__(self, key: PRNGKey, params: Params) -> SourceState: ...


class AskFn(Protocol):
    def __call__(
        self, key: PRNGKey, state: SourceState, params: Params, batch: Batch, active: Array
    ) -> tuple[Population, SourceState]: ...


class TellFn(Protocol):
    def __call__(
        self, key: PRNGKey, state: SourceState, population: Population, feedback: Feedback
    ) -> SourceState: ...


#: What a source's ``dump`` hook returns: a dict of plain data (numpy arrays, numbers, strings,
#: bytes, ``None``, lists and dicts with string keys of them, and :class:`Pickled` bytes) that a
#: checkpoint stores as it is (tuples come back as lists).
HostData = dict


class Pickled(NamedTuple):
    """Bytes that are a pickle, marked as such inside a ``dump`` hook's data.

    A checkpoint stores them as bytes; :mod:`ev3evo.io` hands them back to the ``load`` hook
    only when the caller trusts the file (``trust_pickles=True``), because unpickling can run
    arbitrary code. A ``load`` hook unpickles only a :class:`Pickled` value, never bare bytes.

    Attributes:
      data: the pickle's bytes.
    """

    data: bytes


class DumpFn(Protocol):
    def __call__(self, state: SourceState) -> HostData: ...


class LoadFn(Protocol):
    def __call__(self, state: SourceState, data: HostData) -> SourceState: ...


class Source(NamedTuple):
    """A source of candidates: pure ``(init, ask, tell)`` functions and a static slot count.

    Attributes:
      init: ``(key, params) -> state``.
      ask: ``(key, state, params, batch, active) -> (population, state)``.
      tell: ``(key, state, population, feedback) -> state``.
      size: number of candidates ``ask`` returns (the leading axis of ``population``).
      name: a short name used in logs and in the allocation record.
      host: true when ``ask``/``tell`` run Python on the host (nevergrad, pycma, external
        programs); such a source is called outside ``jit``, with concrete arrays.
      dump: optional ``state -> data``: the part of the source's state that lives outside the
        state pytree (a Python optimizer object on the host), as plain data (:data:`HostData`)
        for a checkpoint; bytes that are a pickle are wrapped in :class:`Pickled`. Called
        between steps only.
      load: optional ``(state, data) -> state``: the inverse of ``dump``. ``state`` is a fresh
        state from ``init`` (with the checkpoint's arrays already restored into it); the hook
        rebuilds the host-side part from ``data`` and returns the state bound to it (a handle
        among the restored arrays belongs to the process that wrote them: bind a new one).
      parts: the sources a :func:`~ev3evo.mix` is made of (empty for a single source); see
        :attr:`layout`.
      used: optional ``state -> (size,) bool``: the slots the source will fill in its next
        ``ask`` (e.g. the population of a restart ladder's current rung); the others are
        *unused*: not evaluated, not counted as invalid. ``None``: every slot is used.
    """

    init: InitFn
    ask: AskFn
    tell: TellFn
    size: int
    name: str
    host: bool = False
    dump: DumpFn | None = None
    load: LoadFn | None = None
    parts: tuple = ()
    used: Callable | None = None

    @property
    def layout(self) -> Layout:
        """Which part of the source fills which slot (a single source is its own one part)."""
        return Layout(self.parts or (self,))


class Layout(NamedTuple):
    """The slot layout of a source: its parts in order, and which slots each one fills.

    Attributes:
      parts: the single sources, in slot order.
    """

    parts: tuple

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(p.size) for p in self.parts)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start slot of each part, plus the total size at the end."""
        out = [0]
        for size in self.sizes:
            out.append(out[-1] + size)
        return tuple(out)

    @property
    def source_ids(self) -> np.ndarray:
        """``(size,)`` int32: the index in :attr:`parts` of each slot's part."""
        return np.repeat(np.arange(len(self.parts), dtype=np.int32), self.sizes)


class Metric(NamedTuple):
    """A score to maximize, computed from per-example statistics (no gradient is ever taken).

    Attributes:
      name: the name used in objectives, logs and the command line.
      stats: ``(params, batch) -> (N, k)`` per-example statistics.
      aggregate: ``(..., k) -> (...)`` maps the mean of the statistics to the metric's value.
      maximize: true when larger values are better; a metric to minimize (calibration error)
        is negated internally, so that every *utility* is higher-is-better.
      decomposable: true when the value is the mean of a per-example score (``k == 1`` and
        ``aggregate`` the identity); then normal-theory bounds apply, otherwise the bootstrap.
      host: true when ``stats`` is plain Python on numpy arrays; it is then called through
        :func:`jax.pure_callback` with the whole population at once.
      bounds: ``(lowest, highest)`` values the metric can take (``None``: unbounded), so that
        a constraint that cannot hold is refused before any work.
    """

    name: str
    stats: Callable[[Params, Batch], Array]
    aggregate: Callable[[Array], Array]
    maximize: bool = True
    decomposable: bool = True
    host: bool = False
    bounds: tuple | None = None


class Objective(NamedTuple):
    """One metric in a lexicographic ranking.

    Attributes:
      metric: the metric's name.
      tolerance: candidates within ``tolerance`` of the best value of this metric are
        considered tied on it, and the next objective breaks the tie.
    """

    metric: str
    tolerance: float = 0.0


class Evaluation(NamedTuple):
    """What a step is assessed on: a fixed validation batch, and optionally a fresh one.

    Attributes:
      validation: the labelled validation batch: selection, acceptance, rollback, the
        reported metrics and (with the split gates) the held-out certification examples.
      fresh: a batch drawn afresh every step (e.g. teacher-labelled transfer examples) on
        which the fresh-data certification rules test the gate's evidence metric
        (``Gate(correction="fresh" | "sequential", evidence=...)``); ``None`` otherwise.
      selection: a batch drawn afresh every step on which the candidates are selected and
        accepted (and the current model compared with the stable one for rollback), with
        the same metrics; the validation batch then serves the reported metrics and, whole,
        the held-out guards of certification. ``None``: selection on the validation batch
        (its even half with the held-out rules). A fixed batch that every step selects on
        is fitted by the selection itself (the current model becomes the luckiest of many
        candidates on it); a fresh one is not.
    """

    validation: Any
    fresh: Any = None
    selection: Any = None


class Constraint(NamedTuple):
    """A requirement on a metric's value, e.g. ``Constraint("agreement", ">=", 0.95)``."""

    metric: str
    op: str  # ">=" or "<="
    threshold: float

    def gap(self, value):
        """By how much ``value`` (a number or an array) misses the threshold: positive where
        the constraint fails, zero or negative where it holds."""
        return self.threshold - value if self.op == ">=" else value - self.threshold
