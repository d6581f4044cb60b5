"""``ev3evo distill``: distill a teacher into a small student with EV3, against baselines.

The flags are generated from the settings' descriptions (:data:`~ev3evo.distillation.options.
OPTIONS`): every setting with a flag becomes one argument of its ``--help`` group, with its
help text, its default, its choices and its parser; the parsed arguments become a
:class:`~ev3evo.distillation.options.DistillConfig` for :func:`ev3evo.distill`. Usage::

    ev3evo distill --steps 200 --student mlp:8 --out runs/digits
    ev3evo distill --data mnist1d --student cnn:8,16 --grow --grow-kind residual
    ev3evo distill --data my.csv --label target --metric macro_f1 \\
        --constraint "agreement>=0.9" --time-budget 60 --no-baselines

Bad input (a missing file, a wrong column, an unknown metric, ...) exits with code 2 and a
one-line message (see :mod:`ev3evo.cli`).

Example::

    import argparse
    from ev3evo.distillation.command import add_arguments, config_from_args
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--metric", "macro_f1", "--no-baselines",
                                                 "--student", "cnn:8,4", "--quiet"]))
    assert config.metrics == ("macro_f1",) and config.student == "cnn:8,4"
    assert not config.baselines and not config.progress and config.out == "ev3evo-distill"
"""

from __future__ import annotations

import argparse
from typing import Any

from .options import GROUPS, OPTIONS, DistillConfig, Option, shown_default

DESCRIPTION = (
    "Distill a teacher into a small student with EV3 (explore with gradient, biased, "
    "evolutionary and mutation sources; assess on the validation split; adapt with a "
    "statistical gate), and compare with plain KD and a pure evolution strategy given the "
    "same wall time. Writes summary.json, history.jsonl and PNG plots to --out and prints "
    "a table of test metrics."
)


def _help(option: Option) -> str:
    text = option.flag_help or option.help
    if option.kind.parse is None:  # on/off flags: argparse's --no-FLAG states the default
        return text
    default = shown_default(option, cli=True)
    return f"{text} (default: {default})" if default else text


def _argument(option: Option) -> dict[str, Any]:
    """``add_argument`` keywords for ``option``."""
    spec: dict[str, Any] = {"dest": option.name, "help": _help(option)}
    default = option.cli_default if option.cli_default is not None else option.default
    if option.negated:
        return {**spec, "action": "store_false", "default": default}
    if option.kind.parse is None:
        return {**spec, "action": argparse.BooleanOptionalAction}
    spec.update(type=option.kind.parse, metavar=option.metavar)
    if option.choices is not None:
        spec.update(choices=option.choices, metavar=None)
    if option.kind.many == "append":
        return {**spec, "action": "append", "default": None}
    if option.kind.many == "+":
        return {**spec, "nargs": "+", "default": list(default)}
    return {**spec, "default": default}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every setting that has a flag to ``parser``, grouped as in ``--help``."""
    parser.description = DESCRIPTION
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for option in OPTIONS:
        if option.flag is None:
            continue
        action = groups[option.group].add_argument(option.flag, **_argument(option))
        if isinstance(action, argparse.BooleanOptionalAction):
            # Set after construction: given at construction, argparse versions differ in
            # whether they append the default to the help text.
            action.default = option.default
            action.help = f"{action.help} (default: {option.default})"


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    """The :class:`DistillConfig` of parsed arguments (settings without a flag keep their
    defaults; a repeated flag never given takes the setting's default)."""
    values = {}
    for option in OPTIONS:
        if option.flag is None:
            continue
        value = getattr(args, option.name)
        if option.kind.many is not None:
            value = option.default if value is None else tuple(value)
        values[option.name] = value
    return DistillConfig(**values)


def main(args: argparse.Namespace) -> int:
    from .pipeline import distill

    distill(config_from_args(args))
    return 0
