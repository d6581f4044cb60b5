"""BBOB benchmark of ev3evo.minimize against pycma, evosax and nevergrad (harness: bbob_lib.py).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --quick --json benchmarks/results/bbob_quick.json \
        --out benchmarks/results
    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --quick --solvers ev3evo,pycma-ipop  # 2 solvers
    make bench   # the quick mode, results in benchmarks/results/

Bad input (an unknown solver, a function id out of range) exits with code 2 and one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bbob_lib
from bbob_lib import SOLVERS, Config

NOTE = (
    "Machine: 2 CPU cores shared with other jobs while this ran, so wall times are noisy; "
    "ratios between solvers in the same run are more meaningful than absolute seconds. "
    "Wall time is the sum over runs of the solver's own time, the objective's compilation "
    "excluded (it is compiled once per function and dimension before timing, shared by all). "
    "Each (solver, dimension) group of 24 runs runs in one process, so a JAX solver's own "
    "compilation (evosax; ev3evo's default portfolio compiles nothing) is counted once per "
    "group, in its first run. The objective "
    "is a jitted batch function with its instance data on the device; nevergrad's CMA is "
    "asked a whole generation at a time (the same points as one at a time), NGOpt one "
    "candidate at a time."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbob.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="D in {2,5}, 1 instance, budget 1000·D (minutes on 2 idle cores)",
    )
    parser.add_argument("--json", default=None, help="write all numbers to this JSON file")
    parser.add_argument(
        "--out",
        default=None,
        help="directory for the table (bbob_table.md) and ECDF (bbob_ecdf.png)",
    )
    parser.add_argument(
        "--solvers",
        default=None,
        help=f"comma-separated subset of {','.join(SOLVERS)} (default: all), "
        "e.g. --quick --solvers ev3evo,pycma-ipop for a fast comparison",
    )
    parser.add_argument("--functions", default=None, help="comma-separated BBOB ids (1..24)")
    parser.add_argument("--dims", default=None, help="comma-separated dimensions")
    parser.add_argument("--instances", default=None, help="comma-separated instance ids")
    parser.add_argument("--budget-per-dim", type=int, default=None)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke tests
    return parser


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from None


def config_from_args(args) -> Config:
    if args.tiny:
        config = Config(functions=(1, 15), dims=(2,), instances=(1,), budget_per_dim=30,
                        checkpoints_per_dim=(10, 30), processes=1)  # fmt: skip
    elif args.quick:
        config = Config.quick()
    else:
        config = Config()
    changes: dict[str, Any] = {}
    if args.solvers:
        changes["solvers"] = tuple(s.strip() for s in args.solvers.split(",") if s.strip())
    if args.functions:
        changes["functions"] = _ints(args.functions, "functions")
    if args.dims:
        changes["dims"] = _ints(args.dims, "dims")
    if args.instances:
        changes["instances"] = _ints(args.instances, "instances")
    if args.budget_per_dim:
        if args.budget_per_dim <= 0:
            raise ValueError(f"--budget-per-dim must be positive, got {args.budget_per_dim}")
        changes["budget_per_dim"] = args.budget_per_dim
        cps = tuple(c for c in config.checkpoints_per_dim if c < args.budget_per_dim)
        changes["checkpoints_per_dim"] = (*cps, args.budget_per_dim)
    if args.processes:
        changes["processes"] = args.processes
    return dataclasses.replace(config, **changes)


def run(args) -> int:
    config = config_from_args(args)
    n = len(config.solvers) * len(config.functions) * len(config.dims) * len(config.instances)
    print(f"BBOB: {n} runs, solvers {', '.join(config.solvers)}, D={list(config.dims)}, "
          f"budget {config.budget_per_dim}·D, {config.processes} process(es)", flush=True)  # fmt: skip
    result = bbob_lib.run_benchmark(config, progress=True)
    print(bbob_lib.format_table(result))
    print(f"total wall time {result['total_wall_s']:.0f} s")
    for path in bbob_lib.save(result, args.json, args.out, NOTE):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ValueError as e:  # bad input: one line, exit code 2
        print(f"bbob.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
