"""Host metrics: plain Python scoring (scikit-learn, an external program) on an executor.

A host metric is an ordinary :class:`~ev3evo.Metric` whose ``stats`` leaves JAX through
:func:`jax.pure_callback`. Under the engine's ``vmap`` over the population the callback is
called **once with the whole population** (``vmap_method="expand_dims"``), and the members are
mapped over a :class:`concurrent.futures.Executor`:

* ``executor=None`` or ``"process"``: a local process pool (one worker per core, started on
  first use, shared by every host metric). Workers are *spawned*, never forked: JAX is
  multithreaded and a forked copy of it can deadlock. ``fn`` must then be picklable (a
  module-level function, or a :func:`functools.partial` of one); anything else (a lambda, a
  nested function, a function typed into an interactive session) is refused when the metric
  is built, with that hint.
* ``"thread"``: a thread pool (for ``fn`` that releases the GIL: numpy, scikit-learn,
  ``subprocess``); ``"serial"``: in the calling thread.
* any ``Executor`` instance, e.g. a Dask cluster's ``distributed.Client(...).get_executor()``.

Everything else about the engine is unchanged: the step stays one compiled program, which
pauses at the callback while the executor works.

**Per-example scores.** The gate compares models example by example (paired tests, the
bootstrap), so ``fn`` returns one score per example, ``(N,)``, or per-example statistics
``(N, k)`` with an ``aggregate`` that turns their mean into the value. A *batch-level* scorer
(scikit-learn's ``f1_score``, ``roc_auc_score``) returns one number for the whole batch and
cannot be used as it is: return the per-example statistics it is a function of instead. For
F1 of class 1 those are the example's true-positive, false-positive and false-negative
indicators, and the aggregate is ``2 tp / (2 tp + fp + fn)`` of their means (the second example
below; :func:`ev3evo.metrics.macro_f1` does the same for every class).

Example::

    import numpy as np, jax, jax.numpy as jnp, ev3evo

    def correct(params, batch):            # numpy in, (N,) scores out
        return np.argmax(batch["x"] @ params["w"], axis=-1) == batch["y"]

    acc = ev3evo.host_metric(correct, "host_accuracy", executor="serial")
    batch = {"x": jnp.eye(3), "y": jnp.array([0, 1, 1])}
    stats = acc.stats({"w": jnp.eye(3)}, batch)          # (3, 1)
    assert abs(float(acc.aggregate(stats.mean(axis=0))) - 2 / 3) < 1e-6

Example (F1 of class 1 from per-example counts, as ``sklearn.metrics.f1_score`` computes it)::

    import numpy as np, jax.numpy as jnp, ev3evo
    from sklearn.metrics import f1_score

    def f1_counts(params, batch):          # (N, 3): tp, fp, fn of class 1, each 0 or 1
        pred = np.argmax(batch["x"] @ params["w"], axis=-1) == 1
        true = batch["y"] == 1
        return np.stack([pred & true, pred & ~true, ~pred & true], axis=1)

    f1 = ev3evo.host_metric(f1_counts, "f1", executor="serial", num_stats=3,
                            aggregate=lambda m: 2 * m[..., 0] / (2 * m[..., 0] + m[..., 1] + m[..., 2]))
    x, y = np.eye(3)[[0, 1, 1, 2, 1]], np.array([0, 1, 0, 1, 1])
    value = f1.aggregate(f1.stats({"w": jnp.eye(3)}, {"x": x, "y": y}).mean(axis=0))
    assert abs(float(value) - f1_score(y, np.argmax(x, -1) == 1)) < 1e-6
"""

from __future__ import annotations

import atexit
import functools
import math
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from ..types import Metric
from .evaluate import batch_size

HostFn = Callable[[dict, dict], np.ndarray]  # (params, batch) as numpy -> (N,) or (N, k)

_default_pool: ProcessPoolExecutor | None = None
_default_lock = threading.Lock()


def default_executor() -> ProcessPoolExecutor:
    """The shared local process pool (spawned workers, one per core), created on first use."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = ProcessPoolExecutor(
                max_workers=os.cpu_count() or 1,
                mp_context=multiprocessing.get_context("spawn"),
            )
            atexit.register(_default_pool.shutdown, wait=True, cancel_futures=True)
        return _default_pool


class _Serial(Executor):
    """Runs every task in the calling thread (``concurrent.futures`` has no such executor)."""

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures import Future

        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # handed to the caller through the future, as pools do
            future.set_exception(e)
        return future


_thread_pool: ThreadPoolExecutor | None = None


def resolve_executor(executor) -> Executor:
    """``None``/``"process"``/``"thread"``/``"serial"`` or an ``Executor`` → an ``Executor``."""
    global _thread_pool
    if executor is None or executor == "process":
        return default_executor()
    if executor == "thread":
        with _default_lock:
            if _thread_pool is None:
                _thread_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        return _thread_pool
    if executor == "serial":
        return _Serial()
    if isinstance(executor, Executor) or (
        hasattr(executor, "submit") and hasattr(executor, "map")
    ):
        return executor
    raise TypeError(
        "executor must be None, 'process', 'thread', 'serial' or a concurrent.futures.Executor "
        f"(e.g. distributed.Client(...).get_executor()), got {executor!r}"
    )


def check_picklable(fn: HostFn, name: str) -> None:
    """Refuses ``fn`` that a process pool could not send to its workers, with the way out.

    The pool pickles ``fn`` by reference (its module and name) and spawned workers import it:
    a lambda, a nested function or a function of a main program without a file (an
    interactive session) cannot be.
    """
    hint = ("define it at module level (or use a functools.partial of a module-level "
            "function), or pass executor='thread' (or 'serial')")
    try:
        pickle.dumps(fn)
    except Exception as e:
        raise TypeError(f"host metric {name!r}: its function cannot be sent to the process "
                        f"pool's workers ({type(e).__name__}: {e}); {hint}") from None
    inner = fn.func if isinstance(fn, functools.partial) else fn
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if getattr(inner, "__module__", None) == "__main__" and not (script and os.path.isfile(script)):
        raise TypeError(f"host metric {name!r}: its function {getattr(inner, '__qualname__', inner)!r} "
                        "is defined in a main program without a file (an interactive "
                        "session, python -c, standard input), which the process pool's "
                        f"workers cannot import; {hint}")


def _run_chunk(fn: HostFn, members: list, batches: list) -> list:
    """One task: ``fn`` on a chunk of members (runs in a worker)."""
    return [np.asarray(fn(p, b)) for p, b in zip(members, batches)]


def _pick(tree, index, extra):
    """Member ``index`` (over the ``extra`` leading axes, size-1 axes broadcast)."""

    def one(a):
        idx = tuple(i if s > 1 else 0 for i, s in zip(index, a.shape[:extra]))
        return a[idx]

    return jax.tree.map(one, tree)


def host_metric(
    fn: HostFn,
    name: str,
    executor=None,
    *,
    num_stats: int = 1,
    aggregate: Callable | None = None,
    maximize: bool = True,
    chunks: int | None = None,
) -> Metric:
    """A metric computed by plain Python ``fn(params, batch)`` on numpy arrays, on an executor.

    Args:
      fn: ``(params, batch) -> scores``: ``params`` and ``batch`` are the model's pytree and
        the evaluation batch as numpy arrays; ``scores`` has shape ``(N,)`` (one score per
        example, higher is better unless ``maximize=False``) or ``(N, num_stats)``.
      name: the metric's name.
      executor: where the members are scored (see the module docstring).
      num_stats: statistics per example; more than 1 needs ``aggregate``.
      aggregate: maps the mean statistics ``(..., num_stats)`` to the value (a JAX function);
        ``None`` for a per-example score (the metric is then decomposable).
      maximize: whether larger values are better.
      chunks: tasks per call (members are split evenly); default: twice the executor's
        workers when known, else 8. Fewer, larger tasks move the batch fewer times.

    Returns:
      A :class:`~ev3evo.Metric` with ``host=True``, usable under ``jit`` and ``vmap``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (params, batch) -> scores, got {fn!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(num_stats, int) or num_stats < 1:
        raise ValueError(f"num_stats must be a positive int, got {num_stats!r}")
    if num_stats > 1 and aggregate is None:
        raise ValueError(f"host metric {name!r} has num_stats={num_stats}: give an aggregate")
    if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
        raise ValueError(f"chunks must be a positive int, got {chunks!r}")
    pool = resolve_executor(executor)
    if isinstance(pool, ProcessPoolExecutor):
        check_picklable(fn, name)
    if chunks is None:
        chunks = 2 * getattr(pool, "_max_workers", 4)

    def host_call(traced_ndim, params, batch):
        params = jax.tree.map(np.asarray, params)
        batch = jax.tree.map(np.asarray, batch)
        leaf = jax.tree.leaves(params)[0]
        extra = leaf.ndim - traced_ndim  # leading axes added by vmap (expand_dims)
        n = batch_size_np(batch, extra)
        leads = [a.shape[:extra] for a in jax.tree.leaves((params, batch))]
        lead = np.broadcast_shapes(*leads) if extra else ()
        index = list(np.ndindex(*lead))
        members = [_pick(params, i, extra) for i in index]
        batches = [_pick(batch, i, extra) for i in index]
        size = max(1, math.ceil(len(members) / chunks))
        futures = [
            pool.submit(_run_chunk, fn, members[s : s + size], batches[s : s + size])
            for s in range(0, len(members), size)
        ]
        outs = []
        for f in futures:
            try:
                outs.extend(f.result())
            except Exception as e:
                raise RuntimeError(f"host metric {name!r} failed: {type(e).__name__}: {e}") from e
        rows = []
        for out in outs:
            if out.shape in ((n,), (n, 1)) and num_stats == 1:
                out = out.reshape(n, 1)
            if out.shape != (n, num_stats):
                raise ValueError(
                    f"host metric {name!r} returned shape {out.shape} for {n} examples; "
                    f"expected ({n},) or ({n}, {num_stats})"
                )
            rows.append(out.astype(np.float32))
        return np.stack(rows).reshape((*lead, n, num_stats))

    def stats(params, batch):
        n = batch_size(batch)
        traced_ndim = jnp.ndim(jax.tree.leaves(params)[0])
        shape = jax.ShapeDtypeStruct((n, num_stats), jnp.float32)
        return jax.pure_callback(
            lambda p, b: host_call(traced_ndim, p, b), shape, params, batch,
            vmap_method="expand_dims",
        )

    if aggregate is None:
        return Metric(name, stats, lambda m: m[..., 0], maximize=maximize, decomposable=True,
                      host=True)
    return Metric(name, stats, aggregate, maximize=maximize, decomposable=False, host=True)


def batch_size_np(batch, extra: int) -> int:
    """Examples in a numpy batch whose leaves carry ``extra`` leading vmap axes."""
    sizes = {a.shape[extra] for a in jax.tree.leaves(batch) if a.ndim > extra}
    if len(sizes) != 1:
        raise ValueError(f"evaluation batch leaves must share one example axis; got {sorted(sizes)}")
    return sizes.pop()
