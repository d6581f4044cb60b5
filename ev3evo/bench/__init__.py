"""Benchmarks reachable from the command line: ``ev3evo bench bbob [--quick] ...``."""

from __future__ import annotations

import importlib

#: benchmark name -> module with add_arguments(parser) and main(args)
BENCHMARKS = {"bbob": "ev3evo.bench.bbob"}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, module in BENCHMARKS.items():
        p = sub.add_parser(name, help=f"the {name} benchmark")
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_bench_module=module)


def main(args) -> int:
    if not getattr(args, "benchmark", None):
        raise ValueError(f"choose a benchmark: {', '.join(BENCHMARKS)}")
    return importlib.import_module(args._bench_module).main(args)
