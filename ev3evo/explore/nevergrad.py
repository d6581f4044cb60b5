"""Any nevergrad optimizer as an EV3 *host* source (ask/tell in Python, outside ``jit``).

Example::

    import jax, jax.numpy as jnp, ev3evo
    src = ev3evo.nevergrad_source("TwoPointsDE", 6, seed=1)
    params = {"w": jnp.ones(3)}
    state = src.init(jax.random.key(0), params)
    for t in range(30):
        pop, state = src.ask(jax.random.key(t), state, params, None, jnp.ones(6, bool))
        fitness = -jnp.sum(pop["w"] ** 2, axis=1)                 # higher is better
        fb = ev3evo.Feedback(fitness, jnp.zeros(6, bool), params, jnp.array(False))
        state = src.tell(jax.random.key(t), state, pop, fb)
    best = ev3evo.nevergrad_optimizer(state).recommend().value
    assert float((best**2).sum()) < 3.0
    ev3evo.nevergrad_close(state)

**Where the optimizer lives.** A nevergrad optimizer is a mutable Python object; it cannot be
a pytree leaf. The source state (:class:`NevergradState`) holds an integer *handle* and a step
counter; the optimizer, the candidates asked but not yet told, and bookkeeping live in this
module's private handle table, from the source's ``init`` (or ``load``) until
:func:`nevergrad_close`, or until the interpreter exits (the table is cleared just before Python
joins its threads). ``init`` builds the optimizer (so that nevergrad's own errors, e.g. an
optimizer that cannot ask several candidates at once, surface there); a state made only as a
template to restore a checkpoint into keeps that optimizer until it is closed (the template
``ev3evo.run(..., resume=True)`` makes internally lives until the interpreter exits). Handles
are random, so a handle from another process (a state restored without its ``load`` hook) is
reported as unknown rather than taken for a live optimizer. ``Source.host`` is true: the
engine calls ``ask`` and ``tell`` on the host, with concrete arrays, outside ``jit``.

**Candidates.** The parametrization is ``ng.p.Array(init=ravelled params)`` (``sigma`` sets
its mutation scale), seeded with ``np.random.RandomState(seed)``; candidates are unravelled to
the params pytree. Only *active* slots are asked (``num_workers = population_size``); inactive
slots are filled with copies of ``params`` and are never told. The loss told is ``-fitness``;
a non-finite fitness (an invalid candidate) is told as ``1e20`` (nevergrad clips larger values
with a warning).

**Foreign candidates** (``tell_foreign=True``): when the model after the step
(``feedback.params``) was not produced by this source and differs from the last one told, it is
told as a not-asked point, ``opt.tell(opt.parametrization.spawn_child(new_value=x), loss)``
with ``loss = -feedback.params_fitness`` (the engine fills it in). Optimizers that do not
support tell-not-asked raise ``TellNotAskedNotSupportedError`` once; foreign tells are then
switched off for that optimizer.

**Checkpoints.** The source has ``dump``/``load`` hooks (:class:`~ev3evo.Source`): ``dump``
returns the optimizer as a pickle (nevergrad serializes optimizers only with ``pickle``, as
``Optimizer.dump`` does), marked :class:`~ev3evo.Pickled`, with the bookkeeping of foreign
tells; ``load`` unpickles it into a new handle. :mod:`ev3evo.io` hands the pickle to ``load``
only with ``trust_pickles=True``. Dump between steps (asked-but-untold candidates are not
saved). :func:`nevergrad_dump` / :func:`nevergrad_load` write and read one optimizer's pickle
file directly.

**Known problems.** ``NGOpt``/``MetaModel`` crash under numpy ≥ 2.4 on small continuous
problems; the source re-raises that as a ``RuntimeError`` that says so (the engine isolates a
raising host source for that step). Optimizers wrapping scipy or pycma run a non-daemon thread
that hangs interpreter exit if the optimizer is alive: call :func:`nevergrad_close` when done;
as a safety net the table is cleared at exit.
"""

from __future__ import annotations

import difflib
import gc
import math
import os
import pickle
import secrets
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import MAX_SEED, check_positive_int, check_seed
from ..types import Feedback, Pickled, Source

FAILED_LOSS = 1e20


class NevergradState(NamedTuple):
    """Pytree state of a :func:`nevergrad_source`: a handle into the host-side table.

    Attributes:
      handle: int32 scalar, the key of the optimizer in the module's table.
      step: int32 scalar, completed ask/tell rounds.
    """

    handle: jax.Array
    step: jax.Array


class _Layout(NamedTuple):
    """How a params pytree maps to a flat vector, done in numpy on the host.

    ``jax.flatten_util.ravel_pytree`` under an eager ``vmap`` traces and dispatches op by op on
    every call; a host source only needs concatenation and reshapes.
    """

    treedef: Any
    shapes: tuple
    dtypes: tuple
    splits: tuple

    @classmethod
    def of(cls, params) -> _Layout:
        leaves, treedef = jax.tree.flatten(params)
        shapes = tuple(tuple(np.shape(x)) for x in leaves)
        dtypes = tuple(jnp.result_type(x) for x in leaves)
        splits = tuple(np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist())
        return cls(treedef, shapes, dtypes, splits)

    def ravel(self, params) -> np.ndarray:
        return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(params)])

    def unravel_rows(self, rows: np.ndarray):
        """``(n, d)`` rows → a population pytree with leading axis ``n``."""
        parts = np.split(rows, self.splits, axis=1)
        leaves = [
            jnp.asarray(p.reshape((rows.shape[0], *s)), dtype=dt)
            for p, s, dt in zip(parts, self.shapes, self.dtypes)
        ]
        return jax.tree.unflatten(self.treedef, leaves)


@dataclass
class _Entry:
    """One live optimizer and the source's bookkeeping around it."""

    optimizer: Any
    layout: _Layout | None = None  # from the params at init, or at the first ask after a load
    pending: list = field(default_factory=list)  # (slot, candidate) asked, not yet told
    foreign: bool = True
    last_foreign: Any = None
    foreign_told: int = 0

    def layout_of(self, params) -> _Layout:
        if self.layout is None:
            self.layout = _Layout.of(params)
        return self.layout


class _Table:
    """The live nevergrad optimizers of this process, keyed by the handle a state holds.

    It exists because a pytree leaf must be an array while a nevergrad optimizer is a mutable
    Python object. Entries are added by a source's ``init`` and ``load`` (and
    :func:`nevergrad_load`), removed by :func:`nevergrad_close`, and all dropped when the
    interpreter exits. Handles are random 31-bit numbers (an identifier, not a draw that affects
    any result), so that a handle restored from another process's arrays is almost surely
    unknown here instead of naming another live optimizer. Only this module reads the table.
    """

    def __init__(self):
        self._entries: dict[int, _Entry] = {}

    def add(self, entry: _Entry) -> int:
        handle = 0
        while handle == 0 or handle in self._entries:
            handle = secrets.randbelow(2**31 - 1) + 1
        self._entries[handle] = entry
        return handle

    def get(self, state: NevergradState) -> _Entry:
        handle = int(np.asarray(state.handle))
        try:
            return self._entries[handle]
        except KeyError:
            raise ValueError(
                f"no nevergrad optimizer with handle {handle} in this process: it was closed, "
                "or the state was restored from arrays alone; restore a checkpoint through the "
                "source's load hook (ev3evo.io.load_checkpoint with the engine)"
            ) from None

    def put(self, handle: int, entry: _Entry) -> None:
        self._entries[handle] = entry

    def close(self, handle: int) -> None:
        self._entries.pop(handle, None)
        gc.collect()  # stops the threads of scipy/pycma-backed optimizers now

    def clear(self) -> None:
        self._entries.clear()
        gc.collect()


_TABLE = _Table()

try:  # Runs before Python joins non-daemon threads at exit (atexit runs after: too late).
    import threading

    threading._register_atexit(_TABLE.clear)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - older Pythons / late import
    pass


def _check_name(optimizer: str):
    import nevergrad as ng

    registry = ng.optimizers.registry
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name in nevergrad.optimizers.registry, got {optimizer!r}")
    if optimizer not in registry:
        close = difflib.get_close_matches(optimizer, list(registry), n=5, cutoff=0.5)
        raise ValueError(
            f"unknown nevergrad optimizer {optimizer!r}"
            + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
            + f" ({len(registry)} names in nevergrad.optimizers.registry)"
        )
    return registry[optimizer]


def make_optimizer(optimizer: str, x0: np.ndarray, population_size: int, seed: int,
                   budget: int | None, sigma: float | None = None):
    """The nevergrad optimizer the source drives (exposed so tests can build the raw twin)."""
    import nevergrad as ng

    factory = _check_name(optimizer)
    param = ng.p.Array(init=np.asarray(x0, dtype=np.float64))
    if sigma is not None:
        param.set_mutation(sigma=sigma)
    param.random_state = np.random.RandomState(seed)
    return factory(parametrization=param, budget=budget, num_workers=population_size)


def _probe(optimizer: str, population_size: int, budget: int | None,
           sigma: float | None) -> str | None:
    """What a throw-away optimizer on a 2-d problem raises within its first asks, or ``None``."""
    import sys
    import threading
    import warnings

    threads, failure = threading.active_count(), None
    # A half-built optimizer complains in __del__ about attributes it never set: not the
    # user's concern, so unraisable errors are silenced until the throw-away is gone.
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the real optimizer, built by init, warns itself
                opt = make_optimizer(optimizer, np.zeros(2), population_size, 0, budget, sigma)
                for _ in range(min(population_size, 4)):
                    opt.ask()
            del opt
        except Exception as e:
            failure = f"{type(e).__name__}: {e}".rstrip(": ")
        if failure is not None or threading.active_count() > threads:
            gc.collect()  # now: scipy/pycma-backed optimizers run a thread until collected
    finally:
        sys.unraisablehook = hook
    return failure


def _check_needs_budget(optimizer: str, population_size: int, sigma: float | None) -> None:
    """Refuses an optimizer that cannot ask without a budget but can with one: nevergrad's
    selectors (``NGOpt``, ``Shiwa``, ``CSEC10``, ...) pick their algorithm from the budget,
    and without one every ``ask`` raises."""
    why = _probe(optimizer, population_size, None, sigma)
    if why is None or _probe(optimizer, population_size, 100 * population_size, sigma):
        return  # it works, or fails for another reason (init reports that one)
    raise ValueError(
        f"nevergrad {optimizer} needs a budget: pass budget= (about the candidates it will be "
        f"asked for in the run, steps x {population_size}); without one every ask fails "
        f"({why})"
    )


def _numpy_bug(err: Exception) -> bool:
    return isinstance(err, TypeError) and "0-dimensional arrays" in str(err)


def nevergrad_source(
    optimizer: str,
    population_size: int,
    *,
    seed: int = 0,
    name: str | None = None,
    tell_foreign: bool = True,
    budget: int | None = None,
    sigma: float | None = None,
) -> Source:
    """A nevergrad optimizer as a host :class:`~ev3evo.Source` (see the module docstring).

    Args:
      optimizer: a name in ``nevergrad.optimizers.registry`` (``"CMA"``, ``"TwoPointsDE"``,
        ``"OnePlusOne"``, ``"NGOpt"``, ...).
      population_size: candidates per step (nevergrad's ``num_workers``).
      seed: seed of the parametrization's ``RandomState`` (each ``init`` reseeds it).
      name: the source's name (defaults to ``"ng_" + optimizer``).
      tell_foreign: tell the accepted model to nevergrad when another source produced it.
      budget: nevergrad's budget (total asks), or ``None``. Optimizers that cannot ask
        without one (``NGOpt`` and nevergrad's other selectors) are refused without it: a
        throw-away copy on a 2-d problem is asked a few candidates at construction.
      sigma: the parametrization's mutation scale (nevergrad's default is 1.0).

    Returns:
      A host :class:`~ev3evo.Source` whose state is a :class:`NevergradState`, with ``dump``
      and ``load`` hooks for checkpoints (the optimizer as a :class:`~ev3evo.Pickled`).
    """
    _check_name(optimizer)
    population_size = check_positive_int(population_size, "population_size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    seed = check_seed(seed)
    if budget is not None:
        budget = check_positive_int(budget, "budget")
    if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if budget is None:
        _check_needs_budget(optimizer, population_size, sigma)
    name = name or f"ng_{optimizer}"

    def init(key, params):
        del key  # nevergrad draws from its own seeded RandomState
        layout = _Layout.of(params)
        opt = make_optimizer(optimizer, layout.ravel(params), population_size, seed, budget, sigma)
        handle = _TABLE.add(_Entry(opt, layout))
        return NevergradState(jnp.asarray(handle, jnp.int32), jnp.zeros((), jnp.int32))

    def ask(key, state, params, batch, active):
        del key, batch
        return _ask(_TABLE.get(state), optimizer, params, active, population_size), state

    def tell(key, state, population, feedback: Feedback):
        del key, population
        _tell(_TABLE.get(state), feedback, tell_foreign)
        return NevergradState(state.handle, state.step + 1)

    return Source(init, ask, tell, population_size, name, host=True, dump=_dump, load=_load)


def _ask(entry: _Entry, optimizer: str, params, active, population_size: int):
    """Asks nevergrad for the active slots; inactive slots are copies of ``params``."""
    layout = entry.layout_of(params)
    flat = layout.ravel(params)
    rows = np.broadcast_to(flat, (population_size, flat.size)).copy()
    opt = entry.optimizer
    entry.pending = []
    for slot in np.flatnonzero(np.asarray(active)):
        try:
            cand = opt.ask()
        except TypeError as e:
            if _numpy_bug(e):
                raise RuntimeError(
                    f"nevergrad {optimizer} failed inside its MetaModel: {e}. This is a "
                    "known incompatibility of nevergrad 1.0 with numpy >= 2.4 (NGOpt and "
                    "MetaModel on small continuous problems); use 'CMA', 'TwoPointsDE', "
                    "'DE' or 'OnePlusOne', or numpy < 2.4"
                ) from e
            raise
        rows[slot] = np.asarray(cand.value, dtype=flat.dtype).ravel()
        entry.pending.append((int(slot), cand))
    return layout.unravel_rows(rows)


def _tell(entry: _Entry, feedback: Feedback, tell_foreign: bool) -> None:
    """Tells the asked candidates their losses, then the foreign model if there is a new one."""
    fitness = np.asarray(feedback.fitness, dtype=np.float64)
    opt = entry.optimizer
    for slot, cand in entry.pending:
        f = fitness[slot]
        opt.tell(cand, float(-f) if math.isfinite(f) else FAILED_LOSS)
    entry.pending = []
    mine = bool(np.any(np.asarray(feedback.selected)))
    pf = getattr(feedback, "params_fitness", None)
    if tell_foreign and entry.foreign and not mine and pf is not None:
        pf = float(np.asarray(pf))
        x = entry.layout_of(feedback.params).ravel(feedback.params).astype(np.float64)
        new = entry.last_foreign is None or not np.array_equal(x, entry.last_foreign)
        if new and math.isfinite(pf) and np.all(np.isfinite(x)):
            _tell_foreign(entry, x, -pf)


def _tell_foreign(entry: _Entry, x: np.ndarray, loss: float) -> None:
    from nevergrad.common.errors import TellNotAskedNotSupportedError

    opt = entry.optimizer
    try:
        opt.tell(opt.parametrization.spawn_child(new_value=x), loss)
    except TellNotAskedNotSupportedError:
        entry.foreign = False
        return
    entry.last_foreign = x
    entry.foreign_told += 1


def _pickle_optimizer(entry: _Entry) -> bytes:
    if entry.pending:
        raise ValueError("cannot dump a nevergrad optimizer with asked-but-untold candidates")
    return pickle.dumps(entry.optimizer)  # what nevergrad's Optimizer.dump writes


def _unpickle_optimizer(blob: bytes):
    """Unpickles an optimizer: runs whatever code ``blob`` says, so only trusted bytes."""
    from nevergrad.optimization.base import Optimizer

    opt = pickle.loads(blob)  # the caller trusts the bytes (see the docstring)
    if not isinstance(opt, Optimizer):
        raise ValueError(f"the pickle holds a {type(opt).__name__}, not a nevergrad optimizer")
    return opt


def _dump(state: NevergradState) -> dict:
    """The ``dump`` hook: the optimizer (a marked pickle) and the bookkeeping of foreign tells."""
    entry = _TABLE.get(state)
    last = entry.last_foreign
    return {
        "optimizer": Pickled(_pickle_optimizer(entry)),
        "foreign": bool(entry.foreign),
        "foreign_told": int(entry.foreign_told),
        "last_foreign": None if last is None else np.asarray(last),
    }


def _load(state: NevergradState, data: dict) -> NevergradState:
    """The ``load`` hook: unpickles the optimizer of ``data`` into a new handle."""
    blob = data.get("optimizer") if isinstance(data, dict) else None
    if not isinstance(blob, Pickled):
        raise ValueError("the nevergrad host data holds no optimizer marked as a pickle")
    last = data.get("last_foreign")
    entry = _Entry(_unpickle_optimizer(blob.data), foreign=bool(data["foreign"]),
                   foreign_told=int(data["foreign_told"]),
                   last_foreign=None if last is None else np.asarray(last, np.float64))
    return NevergradState(jnp.asarray(_TABLE.add(entry), jnp.int32), state.step)


def nevergrad_optimizer(state: NevergradState):
    """The live nevergrad optimizer behind a :class:`NevergradState` (e.g. to ``recommend``)."""
    return _TABLE.get(state).optimizer


def nevergrad_close(state: NevergradState) -> None:
    """Drops the optimizer (and stops threads of scipy/pycma-backed optimizers)."""
    _TABLE.close(int(np.asarray(state.handle)))


def nevergrad_dump(state: NevergradState, path: str | os.PathLike) -> None:
    """Writes the optimizer behind ``state`` to ``path`` as a pickle (``Optimizer.dump``)."""
    from ..io.atomic import atomic_write

    atomic_write(path, _pickle_optimizer(_TABLE.get(state)))


def nevergrad_load(state: NevergradState, path: str | os.PathLike,
                   params=None) -> NevergradState:
    """Loads an optimizer written by :func:`nevergrad_dump` and binds it to ``state``'s handle.

    The file is unpickled (``Optimizer.load``): that runs whatever code it holds, so load only
    files you trust. ``params`` (the model, or anything of its shape) gives the pytree to
    unravel into; by default it is taken from the next ``ask``. Returns ``state`` (its handle
    now points at the loaded optimizer).
    """
    with open(path, "rb") as f:
        opt = _unpickle_optimizer(f.read())
    layout = None if params is None else _Layout.of(params)
    _TABLE.put(int(np.asarray(state.handle)), _Entry(opt, layout))
    return state
