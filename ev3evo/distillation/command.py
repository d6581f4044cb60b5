"""``ev3evo distill``: distill a teacher into a small student with EV3, against baselines.

The flags are generated from the settings' descriptions (:data:`~ev3evo.distillation.options.
OPTIONS`): every setting with a flag becomes one argument of its ``--help`` group, with its
help text, its default, its choices and its parser; the parsed arguments become a
:class:`~ev3evo.distillation.options.DistillConfig` for :func:`ev3evo.distill`. Usage::

    ev3evo distill --steps 200 --student mlp:8 --out runs/digits
    ev3evo distill --data mnist1d --student cnn:8,16 --grow --grow-kind residual
    ev3evo distill --data my.csv --label target --metric macro_f1 \\
        --constraint "agreement>=0.9" --time-budget 60 --no-baselines
    ev3evo distill --config runs/digits/summary.json --out runs/again   # the same run again

``--config FILE`` reads settings from a TOML or JSON file, or a run's ``summary.json``
(:mod:`~ev3evo.distillation.config_file`); the flags given beside it override the file. The
outputs go to ``--out`` (``ev3evo-distill`` by default); ``--resume DIR`` continues the run
saved in ``DIR`` and writes into that folder (``--out`` may only repeat it).

Bad input (a missing file, a wrong column, an unknown metric, ...) exits with code 2 and a
one-line message naming the flag or the file (see :mod:`ev3evo.cli`).

Example::

    import argparse
    from ev3evo.distillation.command import add_arguments, config_from_args
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--metric", "macro_f1", "--no-baselines",
                                                 "--student", "cnn:8,4", "--quiet"]))
    assert config.metrics == ("macro_f1",) and config.student == "cnn:8,4"
    assert not config.baselines and not config.progress and config.out == "ev3evo-distill"
    assert config_from_args(parser.parse_args(["--resume", "runs/a"])).out == "runs/a"
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .options import (
    GROUPS,
    OPTIONS,
    DistillConfig,
    Option,
    checked,
    configure,
    shown_default,
)
from .outputs import resume_folder

DESCRIPTION = (
    "Distill a teacher into a small student with EV3 (explore with gradient, biased, "
    "evolutionary and mutation sources; assess on the validation split; adapt with a "
    "statistical gate), and compare with plain KD and a pure evolution strategy given the "
    "same wall time. Writes summary.json, history.jsonl and PNG plots to --out and prints "
    "a table of test and validation metrics."
)

EPILOG = (
    "Outputs: --out DIR (default ./ev3evo-distill) receives summary.json, history.jsonl, the "
    "PNG plots, the cached teacher and the checkpoints; an empty --out is refused. --resume "
    "DIR continues the run checkpointed in DIR and writes its outputs into DIR; --out may be "
    "given with it only when it names the same folder. Settings: --config FILE reads them "
    "from a TOML or JSON file (the settings' names, as in summary.json's \"config\", or the "
    "flags without their dashes) or from a run's summary.json (its --out and --resume are "
    "not taken over); flags given on the command line override the file."
)

#: the command line's output folder when neither --out nor --resume is given
OUT = next(o.cli_default for o in OPTIONS if o.name == "out")


def _help(option: Option) -> str:
    # argparse formats help texts with %-interpolation: a literal % is written %%
    text = (option.flag_help or option.help).replace("%", "%%")
    if option.kind.parse is None:  # on/off flags: argparse's --no-FLAG states the default
        return text
    default = shown_default(option, cli=True)
    return f"{text} (default: {str(default).replace('%', '%%')})" if default else text


def _argument(option: Option) -> dict[str, Any]:
    """``add_argument`` keywords for ``option``."""
    # Every default is None: a flag not given leaves its setting to --config or the default
    # (see config_from_args).
    spec: dict[str, Any] = {"dest": option.name, "help": _help(option), "default": None}
    if option.negated:
        return {**spec, "action": "store_const", "const": False}
    if option.kind.parse is None:
        return {**spec, "action": argparse.BooleanOptionalAction}
    spec.update(type=option.kind.parse, metavar=option.metavar)
    if option.choices is not None:
        spec.update(choices=option.choices, metavar=None)
    if option.kind.many == "append":
        return {**spec, "action": "append"}
    if option.kind.many == "+":
        return {**spec, "nargs": "+"}
    return spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every setting that has a flag to ``parser``, grouped as in ``--help``."""
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="read settings from a TOML or JSON file, or a run's summary.json (to run it "
             "again); the flags given here override it")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for option in OPTIONS:
        if option.flag is None:
            continue
        action = groups[option.group].add_argument(option.flag, **_argument(option))
        if isinstance(action, argparse.BooleanOptionalAction):
            # Set after construction: given at construction, argparse versions differ in
            # whether they append the default to the help text.
            action.help = f"{action.help} (default: {option.default})"


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    """The :class:`DistillConfig` of parsed arguments: the flags given, over the settings of
    ``--config FILE`` when given, over the defaults. The output folder is ``--out``, else the
    ``--resume`` folder, else ``ev3evo-distill``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        from .config_file import read_settings

        values.update(read_settings(args.config))
    for option in OPTIONS:
        value = getattr(args, option.name, None) if option.flag is not None else None
        if value is not None:
            values[option.name] = tuple(value) if option.kind.many is not None else value
    if values.get("out") is None:
        values["out"] = resume_folder(values["resume"]) if values.get("resume") else OUT
    return configure(None, **values)


def main(args: argparse.Namespace) -> int:
    from .pipeline import distill

    config = checked(config_from_args(args), flags=True)
    if args.config is not None and config.progress:
        print(f"settings from {args.config} (the flags given override them)", file=sys.stderr)
    distill(config)
    return 0
