"""The ``ev3evo`` command line.

Subcommands live in their own modules, each with ``add_arguments(parser)`` and
``main(args) -> int``; this file only wires them up. Bad input exits with code 2 and a
one-line message, never a traceback.

Example::

    from ev3evo.cli import main
    try:
        main(["distill", "--steps", "0"])                 # a usage error: one line, exit 2
    except SystemExit as stop:
        assert stop.code == 2
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "distill": ("ev3evo.distillation.command",
                "distill a teacher into a small student with EV3, against KD and ES baselines"),
}


class UsageError(ValueError):
    """Bad input from the command line: reported in one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``, exit code 2), like every
    other bad input; ``--help`` still shows the whole usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ev3evo",
        description="EV3: explore -> assess -> adapt meta-optimization on a vectorized JAX population.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except (UsageError, ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"ev3evo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ev3evo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
