"""The ``ev3evo`` command line.

Subcommands live in their own modules, each with ``add_arguments(parser)`` and
``main(args) -> int``; this file wires them up and turns whatever stops a subcommand into one
line on standard error, never a traceback:

* bad input (``ValueError``, ``TypeError``, and ev3evo's own errors: a damaged checkpoint, a
  locked output folder, a run that gave up): ``ev3evo CMD: error: ...``, exit code 2;
* storage faults (any ``OSError``: a read-only file system, a file in the way, a path through
  a file, a full disk, a symbolic link refused): the path and the cause
  (:func:`ev3evo.io.errors.describe_os_error`) and what is kept on disk (the last good
  checkpoint), exit code 2;
* SIGINT and SIGTERM: deferred to the next safe point (:mod:`ev3evo.interrupts`; the scope
  is opened before the heavy imports), where the run saves a checkpoint and stops:
  ``ev3evo CMD: interrupted by SIGINT at step 12; last checkpoint: ...``, exit code 130 or
  143; a second signal stops the process at once.

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

from . import __version__, interrupts

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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _own_errors() -> tuple[type[BaseException], ...]:
    """ev3evo's error types that are not ``ValueError``/``TypeError``/``OSError`` already."""
    from .io.lock import RunLockedError
    from .run import RunError

    return (RunLockedError, RunError)


def describe(error: BaseException) -> str:
    """The one line (without the command's name) for an error a subcommand ended with."""
    if isinstance(error, OSError):
        from .io.errors import describe_os_error

        text = describe_os_error(error)
    else:
        text = str(error) or type(error).__name__
    notes = [n for n in getattr(error, "__notes__", ()) if n]
    return "; ".join([text.strip().replace("\n", " "), *notes])


def _say(name: str, line: str) -> None:
    print(f"{name}: {line}", file=sys.stderr, flush=True)


def _run(argv: list[str] | None, signals: interrupts.Deferral) -> int:
    name = "ev3evo"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        name = signals.label = f"ev3evo {args.command}"
        signals.safe_point("before it started")
        module = importlib.import_module(args._module)
        signals.safe_point("before it started")
        code = int(module.main(args) or 0)
        signals.safe_point("as it finished (its outputs are complete)")
        return code
    except interrupts.Interrupted as e:
        _say(name, str(e))
        return e.exit_code
    except KeyboardInterrupt:  # no scope could defer it (another program's signal handlers)
        _say(name, "interrupted")
        return 130
    except (UsageError, ValueError, TypeError, OSError, *_own_errors()) as e:
        _say(name, f"error: {describe(e)}")
        return 2


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    with interrupts.deferred(stop=True) as signals:
        return _run(argv, signals)


if __name__ == "__main__":
    sys.exit(main())
