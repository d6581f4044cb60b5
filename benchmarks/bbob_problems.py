"""COCO's problems and observers for the BBOB benchmark (``benchmarks/bbob.py``).

The problems are COCO's own (``cocoex.Suite``): the 24 noiseless functions of ``bbob`` and
the 30 noisy ones of ``bbob-noisy`` (ids 101-130), each in several dimensions and instances.
Every solver evaluates them through :class:`Budgeted`, which calls the COCO problem one row at
a time, and stops the solver by raising :class:`BudgetExhausted` before a call beyond the
budget, or :class:`FinalTargetHit` once COCO says the final target (``f_opt + 1e-8``) was hit
(as COCO's example experiments stop). A ``cocoex.Observer`` attached to every problem writes
COCO data (``.info``, ``.dat``, ``.tdat`` files) that ``cocopp`` reads offline.

Example (a few evaluations of f1 in 2-D, observed into a temporary folder)::

    import os, tempfile, numpy as np
    import bbob_problems as bp
    os.chdir(tempfile.mkdtemp())  # COCO writes under ./exdata/
    observer = bp.observer("bbob", "demo/bbob_d2", "demo")
    for problem in bp.problems("bbob", (1,), (2,), (1,)):
        problem.observe_with(observer)
        f = bp.Budgeted(problem, budget=3)
        f(np.zeros(2)); f(np.ones(2)); f(-np.ones(2))
        try:
            f(np.zeros(2))
        except bp.BudgetExhausted:
            pass
        assert problem.evaluations == 3
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

#: COCO's 51 targets above f_opt: 10^2, 10^1.8, ..., 10^-8.
TARGETS = 10.0 ** np.linspace(2, -8, 51)

#: The function groups of each suite (function ids, inclusive ranges).
GROUPS = {
    "bbob": {
        "separable": range(1, 6),
        "low/moderate cond": range(6, 10),
        "high cond": range(10, 15),
        "multimodal, global structure": range(15, 20),
        "multimodal, weak structure": range(20, 25),
    },
    "bbob-noisy": {
        "moderate noise": range(101, 107),
        "severe noise": range(107, 122),
        "severe noise, multimodal": range(122, 131),
    },
}

#: Function ids of each suite.
FUNCTIONS = {"bbob": tuple(range(1, 25)), "bbob-noisy": tuple(range(101, 131))}
#: The first function id of each suite (COCO's ``function_indices`` count from 1 in a suite).
_FIRST = {"bbob": 1, "bbob-noisy": 101}


class BudgetExhausted(Exception):
    """Raised by :class:`Budgeted` instead of a call beyond the budget."""


class FinalTargetHit(Exception):
    """Raised by :class:`Budgeted` after the call that hit COCO's final target."""


def check(suite: str, functions: Sequence[int], dims: Sequence[int],
          instances: Sequence[int]) -> None:  # fmt: skip
    """One clear ``ValueError`` for a suite, function id, dimension or instance out of range."""
    if suite not in FUNCTIONS:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(FUNCTIONS)}")
    known = FUNCTIONS[suite]
    bad = [f for f in functions if f not in known]
    if bad:
        raise ValueError(f"{suite} function ids must be in {known[0]}..{known[-1]}, got {bad}")
    bad = [d for d in dims if d not in (2, 3, 5, 10, 20, 40)]
    if bad:
        raise ValueError(f"COCO's dimensions are 2, 3, 5, 10, 20, 40; got {bad}")
    bad = [i for i in instances if not 1 <= i <= 15]
    if bad:
        raise ValueError(f"instances must be in 1..15, got {bad}")


def suite_options(suite: str, functions: Sequence[int], dims: Sequence[int],
                  instances: Sequence[int]) -> str:  # fmt: skip
    """The ``cocoex.Suite`` filter string of these function ids, dimensions and instances."""
    first = _FIRST[suite]
    return (f"dimensions:{','.join(map(str, dims))} "
            f"instance_indices:{','.join(map(str, instances))} "
            f"function_indices:{','.join(str(f - first + 1) for f in functions)}")  # fmt: skip


def problems(suite: str, functions: Sequence[int], dims: Sequence[int],
             instances: Sequence[int]) -> Iterator:  # fmt: skip
    """COCO's problems of ``suite`` for these ids, dimensions and instances; each is freed
    once the caller moves on."""
    import cocoex

    check(suite, functions, dims, instances)
    for problem in cocoex.Suite(suite, "", suite_options(suite, functions, dims, instances)):
        try:
            yield problem
        finally:
            problem.free()


def observer(suite: str, folder: str, algorithm: str):
    """A ``cocoex.Observer`` writing COCO data to ``exdata/<folder>`` (relative to the working
    directory, as COCO does), under the algorithm name ``algorithm``."""
    import cocoex

    return cocoex.Observer(suite, f"result_folder: {folder} algorithm_name: {algorithm}")


class Budgeted:
    """A COCO problem called one row at a time within a budget (see the module doc).

    Args:
      problem: a ``cocoex`` problem (observed or not).
      budget: the most evaluations.
      stop_at_target: raise :class:`FinalTargetHit` once COCO's final target is hit.
    """

    def __init__(self, problem, budget: int, stop_at_target: bool = True):
        self.problem = problem
        self.budget = int(budget)
        self.dimension = int(problem.dimension)
        self.stop_at_target = bool(stop_at_target)

    @property
    def evaluations(self) -> int:
        return int(self.problem.evaluations)

    def __call__(self, x) -> float:
        if self.problem.evaluations >= self.budget:
            raise BudgetExhausted
        value = float(self.problem(np.asarray(x, dtype=np.float64)))
        if self.stop_at_target and self.problem.final_target_hit:
            raise FinalTargetHit
        return value

    def batch(self, x) -> np.ndarray:
        """``(n, D) -> (n,)``, row by row (raising as :meth:`__call__` does)."""
        return np.array([self(row) for row in np.atleast_2d(x)])
