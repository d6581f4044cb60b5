"""Runs every (solver, problem) of a BBOB configuration, observed by COCO, on worker processes.

One *group* is a solver on every problem of one dimension; it runs in one process (as a user
would call a solver on many problems: a JAX solver compiles once per group), with one
``cocoex.Observer`` writing ``<out>/exdata/<solver>/<suite>_d<D>/``. ``cocopp`` reads a
solver's folder with its subfolders as one algorithm. Groups are spread over ``processes``
spawned workers, the slowest first.

A run records its evaluations, the solver's wall time (the evaluations of the COCO problem
included, the same for every solver; the solver's imports excluded: they are done before the
group's first run) and the first line of any exception other than the
budget's and the final target's: a crashing solver is reported as failed, not hidden.

Example (with ``benchmarks/`` on ``sys.path``; a few seconds)::

    import tempfile, bbob_runner
    config = bbob_runner.Config(functions=(1,), dims=(2,), instances=(1,), budget_per_dim=20,
                                solvers=("pycma-ipop",), processes=1, out=tempfile.mkdtemp())
    runs = bbob_runner.run(config)
    assert len(runs) == 1 and runs[0]["evaluations"] <= 40 and runs[0]["error"] is None
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import traceback
from collections.abc import Sequence

import bbob_problems as bp
import bbob_solvers

#: Relative cost of a solver's own overhead per evaluation (to start the slowest groups first).
_COST = {"lq-cma": 15.0, "ng-ngopt": 10.0, "ng-cma": 10.0, "evosax-cma": 3.0}


@dataclasses.dataclass(frozen=True)
class Config:
    """What to run: ``budget_per_dim · D`` evaluations per (solver, problem)."""

    suite: str = "bbob"
    functions: Sequence[int] = tuple(range(1, 25))
    dims: Sequence[int] = (2, 5, 10, 20)
    instances: Sequence[int] = (1, 2, 3)
    budget_per_dim: int = 10_000
    solvers: Sequence[str] = bbob_solvers.DEFAULT["bbob"]
    processes: int = 2
    seed: int = 1
    out: str = "bbob-out"

    @property
    def exdata(self) -> str:
        return os.path.join(os.path.abspath(self.out), "exdata")

    def folder(self, solver: str) -> str:
        """The COCO data folder of ``solver`` (every dimension in a subfolder)."""
        return os.path.join(self.exdata, solver)


def check(config: Config) -> None:
    """One clear ``ValueError`` for anything the configuration gets wrong."""
    unknown = [s for s in config.solvers if s not in bbob_solvers.SOLVERS]
    if unknown:
        raise ValueError(f"unknown solver(s) {unknown}; known: {', '.join(bbob_solvers.SOLVERS)}")
    bp.check(config.suite, config.functions, config.dims, config.instances)
    if config.budget_per_dim <= 0:
        raise ValueError(f"the budget per dimension must be positive, got {config.budget_per_dim}")


def _run_group(args) -> list[dict]:
    """Every problem of one (solver, dimension), observed into the solver's folder."""
    config, solver, dim = args
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.makedirs(config.exdata, exist_ok=True)
    here = os.getcwd()
    os.chdir(os.path.dirname(config.exdata))  # COCO writes under ./exdata/
    try:
        return _observed_runs(config, solver, dim)
    finally:
        os.chdir(here)


def _observed_runs(config: Config, solver: str, dim: int) -> list[dict]:
    observer = bp.observer(config.suite, f"{solver}/{config.suite}_d{dim}", solver)
    solve = bbob_solvers.SOLVERS[solver]
    bbob_solvers.prepare(solver)
    runs = []
    for problem in bp.problems(config.suite, config.functions, (dim,), config.instances):
        problem.observe_with(observer)
        f = bp.Budgeted(problem, config.budget_per_dim * dim)
        error = None
        start = time.perf_counter()
        try:
            solve(f, problem.initial_solution.copy(), config.seed)
        except (bp.BudgetExhausted, bp.FinalTargetHit):
            pass
        except Exception as e:  # a crashing solver is recorded, not hidden
            error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            if os.environ.get("EV3EVO_BENCH_DEBUG"):
                traceback.print_exc()
        runs.append({"solver": solver, "function": int(problem.id_function), "dim": dim,
                     "instance": int(problem.id_instance), "budget": f.budget,
                     "evaluations": f.evaluations, "target_hit": bool(problem.final_target_hit),
                     "wall_s": time.perf_counter() - start, "error": error})  # fmt: skip
    del observer
    return runs


def run(config: Config, progress: bool = False) -> list[dict]:
    """Runs every (solver, problem) of ``config`` (fresh COCO folders); returns the runs."""
    check(config)
    for solver in config.solvers:  # COCO would add -001 to an existing folder's name
        shutil.rmtree(config.folder(solver), ignore_errors=True)
    groups = [(config, s, d) for s in config.solvers for d in config.dims]
    groups.sort(key=lambda g: -g[2] * _COST.get(g[1], 1.0))
    start = time.perf_counter()
    runs: list[dict] = []
    if config.processes <= 1:
        for g in groups:
            runs.extend(_run_group(g))
    else:
        import multiprocessing as mp

        # spawn, not fork: forking a process that has started XLA threads can deadlock.
        with mp.get_context("spawn").Pool(config.processes, maxtasksperchild=1) as pool:
            for done in pool.imap_unordered(_run_group, groups):
                runs.extend(done)
                if progress:
                    print(f"  {done[0]['solver']} D={done[0]['dim']}: {len(done)} runs, "
                          f"{sum(r['wall_s'] for r in done):.0f} s; "
                          f"{time.perf_counter() - start:.0f} s so far", flush=True)  # fmt: skip
    runs.sort(key=lambda r: (r["solver"], r["dim"], r["function"], r["instance"]))
    return runs
