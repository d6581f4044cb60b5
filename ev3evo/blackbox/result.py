"""What :func:`ev3evo.minimize` returns: :class:`MinimizeResult`, with a status.

Example::

    from ev3evo.blackbox.result import STATUSES, message
    assert "converged" in STATUSES
    assert message("budget_exhausted", budget=10, nfev=10) == "spent the budget of 10 evaluations"
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: The statuses of a result.
STATUSES = ("converged", "budget_exhausted", "stalled", "all_nan")
#: The statuses for which ``minimize(..., throw=True)`` raises instead of returning.
FAILURES = ("all_nan", "stalled")


class MinimizeResult(NamedTuple):
    """What :func:`ev3evo.minimize` returns.

    Attributes:
      x: the best point found, ``(D,)`` float64.
      fun: its value (``inf`` when every evaluation was NaN).
      nfev: evaluations of ``fun`` spent (never more than ``budget``).
      nit: generations run.
      status: ``"converged"`` (``ftarget`` reached), ``"budget_exhausted"``, ``"stalled"``
        (the sources stopped proposing evaluable candidates) or ``"all_nan"``.
      message: a sentence describing the status.
      history: ``(k, 2)`` array of ``(evaluations, best value)`` at each improvement.
      source_evals: evaluations spent on each source's candidates, by source name.
      source_wins: how many times each source produced a new incumbent, by source name.
    """

    x: np.ndarray
    fun: float
    nfev: int
    nit: int
    status: str
    message: str
    history: np.ndarray
    source_evals: dict
    source_wins: dict


def message(status: str, *, ftarget: float | None = None, nfev: int = 0, budget: int = 0,
            stall: int = 50) -> str:  # fmt: skip
    """The sentence describing ``status``."""
    return {
        "converged": f"reached ftarget={ftarget} after {nfev} evaluations",
        "budget_exhausted": f"spent the budget of {budget} evaluations",
        "stalled": f"the sources proposed no evaluable candidate for {stall} generations",
        "all_nan": f"every one of the {nfev} evaluations of fun returned NaN",
    }[status]
