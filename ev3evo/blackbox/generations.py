"""The generation loop of :func:`ev3evo.minimize`: explore → assess → adapt, on the host.

One generation:

* **explore**: every member (:mod:`ev3evo.blackbox.member`) proposes candidates around the
  incumbent, the best point so far;
* **assess**: the candidates are evaluated in one batch, in the members' order, clipped into
  the bounds. Non-finite points are not evaluated, and the generation is truncated so that the
  evaluations never exceed the budget. NaN values are ranked worst, never best;
* **adapt**: the best candidate becomes the incumbent when it improves on it, and every member
  is told the whole generation (:class:`~ev3evo.blackbox.member.Outcome`).

The loop stops when the budget is spent, when a value ``<= ftarget`` is found, or after
:data:`STALL` generations in a row without an evaluation (the members proposed nothing
evaluable).

Example::

    import numpy as np
    from ev3evo.blackbox.generations import run, start
    from ev3evo.blackbox.local import LocalPool
    from ev3evo.blackbox.portfolio import Portfolio

    pool = LocalPool(("gaussian",), 0.3, seed=0, capacity=4, alone=True)
    fun = lambda x: np.sum(x**2, axis=1)
    x0 = np.ones(2)
    progress, status = run(Portfolio((pool,), pool.names), fun, start(x0, 2.0, 1),
                           budget=41, box=None, ftarget=None)
    assert progress.nfev == 41 and progress.best_f < 2.0 and status == "budget_exhausted"
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .member import Outcome
from .portfolio import Portfolio

#: Generations in a row without an evaluation after which the run stops as ``"stalled"``.
STALL = 50


class Progress(NamedTuple):
    """Where a run stands after a generation.

    Attributes:
      best_x: the incumbent, ``(D,)``.
      best_f: its value (``inf`` while every value was NaN).
      nfev: evaluations so far.
      nit: generations so far.
      idle: generations in a row without an evaluation.
      history: ``(evaluations, best value)`` at each improvement.
      seen_finite: some evaluation returned a non-NaN value.
      evals: evaluations of each part's candidates, in the portfolio's name order.
      wins: new incumbents each part produced, in the same order.
    """

    best_x: np.ndarray
    best_f: float
    nfev: int
    nit: int
    idle: int
    history: tuple
    seen_finite: bool
    evals: tuple
    wins: tuple


def start(x0: np.ndarray, f0: float, parts: int) -> Progress:
    """The progress after evaluating ``x0`` (value ``f0``; NaN counts as ``inf``)."""
    f0 = math.inf if math.isnan(f0) else float(f0)
    finite = math.isfinite(f0)
    return Progress(x0.copy(), f0, 1, 0, 0, ((1, f0),) if finite else (), finite,
                    (0,) * parts, (0,) * parts)  # fmt: skip


def run(portfolio: Portfolio, evaluate: Callable, progress: Progress, *, budget: int,
        box, ftarget: float | None, judge=None) -> tuple[Progress, str]:  # fmt: skip
    """Runs generations until a stop; returns the final progress and the stop's status.

    Args:
      portfolio: the members and the part names.
      evaluate: ``(n, D) -> (n,)`` values of ``fun``.
      progress: where the run starts (:func:`start`).
      budget: the most evaluations in all.
      box: ``(lower, upper)`` arrays, or ``None``.
      ftarget: stop once a value ``<= ftarget`` is found (``None``: never).
      judge: a :class:`~ev3evo.blackbox.noise.NoisyIncumbent` (noisy ``fun``): the best
        candidate becomes the incumbent only when it wins the judge's paired test (its
        re-evaluations are counted); ``None``: when its value is below the incumbent's.

    Returns:
      ``(progress, status)``, status ``"converged"``, ``"budget_exhausted"`` or ``"stalled"``.
    """
    members, names = portfolio.members, portfolio.names
    index = {n: i for i, n in enumerate(names)}
    owners = [np.array([index[n] for n in m.names], np.int32) for m in members]
    while progress.nfev < budget and not _reached(progress.best_f, ftarget):
        x, owner, blocks = _explore(members, owners, progress)
        if len(x):
            x, values, evaluated = _assess(x, evaluate, box, budget - progress.nfev)
            decide = _lowest if judge is None else _judged(judge, evaluate, budget)
            progress, outcome = _adapt(progress, x, values, evaluated, owner, names, decide)
            for member, block in zip(members, blocks):
                member.tell(outcome._replace(block=block))
        else:  # no member proposed anything this generation
            progress = progress._replace(nit=progress.nit + 1, idle=progress.idle + 1)
        if progress.idle >= STALL:
            return progress, "stalled"
    return progress, "converged" if _reached(progress.best_f, ftarget) else "budget_exhausted"


def _reached(best_f: float, ftarget: float | None) -> bool:
    return ftarget is not None and best_f <= ftarget


def _explore(members, owners, progress: Progress):
    """Every member's candidates, the part index of each row, and each member's rows."""
    d = progress.best_x.size
    xs, owner, blocks = [], [], []
    start = 0
    for member, ids in zip(members, owners):
        proposal = member.ask(progress.best_x, progress.nit)
        n = 0 if proposal is None else len(proposal.x)
        if n:
            xs.append(np.asarray(proposal.x, dtype=np.float64).reshape(n, d))
            owner.append(ids[np.asarray(proposal.part)])
        blocks.append(slice(start, start + n))
        start += n
    if not xs:
        return np.empty((0, d)), np.empty(0, np.int32), blocks
    return np.concatenate(xs), np.concatenate(owner), blocks


def _assess(x: np.ndarray, evaluate: Callable, box, remaining: int):
    """``(x clipped into the box, values (NaN where not evaluated), evaluated mask)``."""
    if box is not None:
        x = np.clip(x, *box)
    n = len(x)
    finite = np.isfinite(x).all(axis=1)
    everything = n <= remaining and finite.all()
    todo = slice(None) if everything else np.flatnonzero(finite)[:remaining]
    values = np.full(n, np.nan)
    evaluated = np.ones(n, bool) if everything else np.isin(np.arange(n), todo)
    if evaluated.any():
        values[todo] = evaluate(x[todo])
    return x, values, evaluated


def _lowest(progress: Progress, x, ranked, win: int, nfev: int):
    """The candidate with the lowest value replaces the incumbent when it is lower."""
    if ranked[win] < progress.best_f:
        return True, x[win].copy(), float(ranked[win]), 0
    return False, progress.best_x, progress.best_f, 0


def _judged(judge, evaluate: Callable, budget: int):
    """The best candidate replaces the incumbent when it wins ``judge``'s paired test."""

    def decide(progress: Progress, x, ranked, win: int, nfev: int):
        won, spent = judge.challenge(x[win], float(ranked[win]), evaluate, budget - nfev, nfev)
        return won, judge.x, judge.f, spent

    return decide


def _adapt(progress: Progress, x, values, evaluated, owner, names,
           decide=_lowest) -> tuple[Progress, Outcome]:  # fmt: skip
    """The new incumbent and the counts; the :class:`Outcome` every member is told."""
    n_done = int(evaluated.sum())
    ranked = np.where(np.isnan(values), np.inf, values)  # NaN ranks worst, never best
    win = int(np.argmin(ranked))
    nfev = progress.nfev + n_done
    improved, best_x, best_f, spent = decide(progress, x, ranked, win, nfev)
    nfev += spent
    history, winner, wins = progress.history, None, progress.wins
    if improved:
        history = (*history, (nfev, best_f))
        who = int(owner[win])
        winner = names[who]
        wins = tuple(w + int(i == who) for i, w in enumerate(wins))
    counted = np.bincount(owner[evaluated], minlength=len(names))
    progress = Progress(
        best_x=best_x,
        best_f=best_f,
        nfev=nfev,
        nit=progress.nit + 1,
        idle=0 if n_done else progress.idle + 1,
        history=history,
        seen_finite=progress.seen_finite or not np.isnan(values).all(),
        evals=tuple(int(e + c) for e, c in zip(progress.evals, counted)),
        wins=wins,
    )
    outcome = Outcome(x, values, evaluated, slice(0, 0), win if improved else -1, winner,
                      best_x, best_f)  # fmt: skip
    return progress, outcome
