"""The BBOB benchmark on COCO: ev3evo.minimize against pycma, lq-CMA-ES, evosax and nevergrad.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --quick --out benchmarks/results
    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --quick --suite bbob-noisy --out benchmarks/results
    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --dims 20 --instances 1,2,3 --budget-per-dim 1000
    make bench   # the quick mode, results in benchmarks/results/

The problems are COCO's (``cocoex.Suite``), every solver is observed by a ``cocoex.Observer``
(COCO data under ``--data``, one folder per solver), and the report is computed from that data:
the anytime table (fractions of (problem, target) pairs reached at 10, 100, 300, 1000 (and
10^4 in the full mode) evaluations per dimension, 51 targets 10^2 ... 10^-8) and cocopp's ECDF
pictures against best 2009. Modules: ``bbob_problems`` (suite, observer, budget),
``bbob_solvers`` (the solvers), ``bbob_runner`` (worker processes), ``bbob_report`` (tables,
cocopp).

Bad input (an unknown solver, a function id out of range) exits with code 2 and one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tarfile
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bbob_report
import bbob_runner
import bbob_solvers
from bbob_runner import Config

#: Anytime budgets (evaluations per dimension) reported, by mode.
BUDGETS = {"quick": (10, 100, 300, 1000), "full": (10, 100, 300, 1000, 10_000)}
#: COCO data archives are written next to the results when they are at most this big.
MAX_ARCHIVE = 3 * 2**20
NOTE = (
    "Machine: 2 CPU cores shared with other jobs while this ran, so wall times are noisy; "
    "ratios between solvers of the same run mean more than absolute seconds. Wall time is the "
    "sum over runs of the solver's time, COCO's evaluations included (the same for all). "
    "Every solver starts at COCO's initial solution (the origin) with step size 2 and stops at "
    "the budget or at COCO's final target (f_opt + 1e-8). best 2009 reaches a pair when its "
    "expected running time (ERT) is within the budget."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbob.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="D in {2,5,10}, 1 instance, 1000·D (about 15 minutes on 2 cores)",
    )
    parser.add_argument("--suite", default="bbob", choices=("bbob", "bbob-noisy"))
    parser.add_argument(
        "--out", default=None, help="directory for the table, JSON and ECDF pictures"
    )
    parser.add_argument(
        "--data", default=None, help="directory for the COCO data folders (default: runs/bbob/NAME)"
    )
    parser.add_argument(
        "--name", default=None, help="name of this run's files (default: from the mode and suite)"
    )
    parser.add_argument(
        "--solvers",
        default=None,
        help=f"comma-separated subset of {','.join(bbob_solvers.SOLVERS)}",
    )
    parser.add_argument("--functions", default=None, help="comma-separated function ids")
    parser.add_argument("--dims", default=None, help="comma-separated dimensions")
    parser.add_argument("--instances", default=None, help="comma-separated instance ids")
    parser.add_argument("--budget-per-dim", type=int, default=None)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--no-cocopp", action="store_true", help="skip cocopp's pictures")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke tests
    return parser


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from None


def config_from_args(args) -> tuple[Config, tuple[int, ...], str]:
    """The configuration, the anytime budgets and the run's name."""
    suite = args.suite
    changes: dict[str, Any] = {"suite": suite, "solvers": bbob_solvers.DEFAULT[suite]}
    if suite == "bbob-noisy":
        changes["functions"] = tuple(range(101, 131))
    mode = "full"
    if args.tiny:
        mode = "tiny"
        changes.update(functions=(1, 15) if suite == "bbob" else (101, 122), dims=(2,),
                       instances=(1,), budget_per_dim=30, processes=1)  # fmt: skip
    elif args.quick:
        mode = "quick"
        changes.update(dims=(2, 5, 10), instances=(1,), budget_per_dim=1000)
    if args.solvers:
        changes["solvers"] = tuple(s.strip() for s in args.solvers.split(",") if s.strip())
    if args.functions:
        changes["functions"] = _ints(args.functions, "functions")
    if args.dims:
        changes["dims"] = _ints(args.dims, "dims")
    if args.instances:
        changes["instances"] = _ints(args.instances, "instances")
    if args.budget_per_dim is not None:
        changes["budget_per_dim"] = args.budget_per_dim
    if args.processes:
        changes["processes"] = args.processes
    name = args.name or f"{suite.replace('-', '_')}_{mode}"
    changes["out"] = args.data or os.path.join("runs", "bbob", name)
    config = dataclasses.replace(Config(), **changes)
    budget = config.budget_per_dim
    budgets = tuple(b for b in BUDGETS["quick" if budget <= 1000 else "full"] if b < budget)
    return config, (*budgets, budget), name


def archive(config: Config, path: str) -> str | None:
    """The COCO data folders as ``path`` (tar.gz) when that is at most :data:`MAX_ARCHIVE`."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(config.exdata, arcname="exdata")
    if os.path.getsize(path) > MAX_ARCHIVE:
        os.remove(path)
        return None
    return path


def write(report: dict, out: str, name: str, config: Config, ecdfs: list[str]) -> list[str]:
    """The JSON, the markdown table and the ECDF pictures under ``out``; the paths written."""
    os.makedirs(out, exist_ok=True)
    written = []
    pictures = os.path.join(out, f"{name}_ecdf")
    shutil.rmtree(pictures, ignore_errors=True)
    if ecdfs:
        os.makedirs(pictures)
        for png in ecdfs:
            shutil.copy(png, pictures)
        written.append(pictures)
    data = archive(config, os.path.join(out, f"{name}_exdata.tar.gz"))
    report["coco_data"] = {"folder": config.exdata, "archive": data and os.path.basename(data)}
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    written.append(path)
    md = os.path.join(out, f"{name}.md")
    with open(md, "w") as f:
        f.write(f"# {config.suite}: fraction of (problem, target) pairs reached\n\n")
        f.write(f"Command: `{report['command']}`\n\n{NOTE}\n\n")
        f.write(bbob_report.table(report) + "\n\n" + bbob_report.wall_table(report) + "\n\n")
        f.write(f"COCO data: `{config.exdata}`"
                + (f" (archived as `{os.path.basename(data)}`)" if data else "") + "; cocopp's "
                f"ECDFs: `{os.path.basename(pictures)}/`. Total wall time "
                f"{report['total_wall_s']:.0f} s.\n")  # fmt: skip
    if data:
        written.append(data)
    return [*written, md]


def run(args, argv) -> int:
    config, budgets, name = config_from_args(args)
    bbob_runner.check(config)
    n = len(config.solvers) * len(config.functions) * len(config.dims) * len(config.instances)
    print(f"{config.suite}: {n} runs, solvers {', '.join(config.solvers)}, "
          f"D={list(config.dims)}, instances {list(config.instances)}, "
          f"budget {config.budget_per_dim}·D, {config.processes} process(es)", flush=True)  # fmt: skip
    start = time.perf_counter()
    runs = bbob_runner.run(config, progress=True)
    report = bbob_report.build(config, runs, budgets)
    report.update(command="python benchmarks/bbob.py " + " ".join(argv),
                  config=dataclasses.asdict(config), runs=runs, python=platform.python_version(),
                  total_wall_s=time.perf_counter() - start)  # fmt: skip
    print(bbob_report.table(report))
    print(bbob_report.wall_table(report))
    ecdfs = []
    if not args.no_cocopp:
        pp = os.path.join(os.path.abspath(config.out), "ppdata")
        ecdfs = bbob_report.run_cocopp(
            [config.folder(s) for s in config.solvers],
            pp,
            os.path.join(os.path.abspath(config.out), "cocopp.log"),
        )
        print(f"cocopp: {len(ecdfs)} ECDF pictures in {pp}")
    if args.out:
        for path in write(report, args.out, name, config, ecdfs):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except ValueError as e:  # bad input: one line, exit code 2
        print(f"bbob.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
