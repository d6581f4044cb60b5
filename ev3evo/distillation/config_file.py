"""Settings read from a file: ``ev3evo distill --config FILE`` and :func:`load_config`.

A settings file is TOML (``.toml``, read with the standard library's ``tomllib``, or
``tomli`` before Python 3.11) or JSON (any other name): a table of settings, keyed by the
names of :class:`~ev3evo.distillation.options.DistillConfig`'s fields (``population_size``,
``metrics``) or by their flags without the dashes (``population``, ``metric``,
``time-budget``; ``quiet = true`` is ``progress = false``, ``no-baselines = true`` is
``baselines = false``). Each value is checked as the
setting's own (an error names the file and the key). A run's ``summary.json`` is a settings
file too: its ``"config"`` holds every setting of the run, so ``ev3evo distill --config
runs/a/summary.json --out runs/b`` runs it again; its output folder and ``resume`` are not
taken over (a rerun starts afresh, in the folder given now). On the command line, flags given
beside ``--config`` override the file.

Example::

    import json, os, tempfile
    from ev3evo.distillation.config_file import load_config, read_settings
    path = os.path.join(tempfile.mkdtemp(), "run.toml")
    with open(path, "w") as f:
        f.write('steps = 20\\nmetric = ["macro_f1"]\\nquiet = true\\n')
    assert read_settings(path) == {"steps": 20, "metrics": ("macro_f1",), "progress": False}
    config = load_config(path)
    assert config.steps == 20 and config.population_size == 16   # the rest: the defaults
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .options import OPTIONS, DistillConfig, Option, check_value, configure

#: settings a summary.json records but a rerun does not take over: where the run wrote
NOT_RERUN = ("out", "resume")


def _keys() -> dict[str, tuple[Option, bool]]:
    """Every accepted key -> ``(option, negated)``: the names, and the flags without dashes
    (with ``-`` or ``_``; an on/off flag's ``no-`` form too)."""
    keys: dict[str, tuple[Option, bool]] = {o.name: (o, False) for o in OPTIONS}
    for o in OPTIONS:
        if o.flag is None:
            continue
        words = [(o.flag[2:], o.negated)]
        if o.kind.parse is None and not o.negated:  # --grow / --no-grow
            words.append(("no-" + o.flag[2:], True))
        for word, negated in words:
            for key in {word, word.replace("-", "_")}:
                keys.setdefault(key, (o, negated))
    return keys


def _parse(path: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read()
    if path.lower().endswith(".toml"):
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: not a readable TOML file ({e})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e}); a TOML file's name ends "
                         "in .toml") from None


def _table(path: str, data: Any) -> dict:
    """The settings table of a file: the file itself, or a summary.json's ``"config"``."""
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings, got {type(data).__name__}")
    if "config" not in data:
        return data
    if not isinstance(data["config"], dict):
        raise ValueError(f"{path}: its \"config\" must be a table of settings")
    given = data.get("given") or {}
    if given:  # the run had objects no setting can describe
        what = "; ".join(f"{k}: {v}" for k, v in given.items())
        raise ValueError(f"{path}: that run was given objects from Python ({what}); a "
                         "settings file cannot give them: rerun it from Python")
    return {k: v for k, v in data["config"].items() if k not in NOT_RERUN}


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in the file at ``path``, checked: ``{setting name: value}``.

    Raises:
      ValueError, TypeError: the file is missing or unreadable, a key is unknown or given
        twice (as a name and as a flag), or a value is not what its setting takes; the
        message names the file and the key.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such settings file")
    table, keys, values, spelled = _table(path, _parse(path)), _keys(), {}, {}
    for key, value in table.items():
        if key not in keys:
            raise ValueError(f"{path}: unknown setting {key!r}; settings: "
                             f"{', '.join(o.name for o in OPTIONS)}")
        option, negated = keys[key]
        if option.name in values:
            raise ValueError(f"{path}: {option.name!r} is given twice (as {spelled[option.name]!r}"
                             f" and as {key!r})")
        if option.kind.many is not None and isinstance(value, list):
            value = tuple(value)
        try:
            value = check_value(option, value, key)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{path}: {e}") from None
        values[option.name], spelled[option.name] = (not value) if negated else value, key
    return values


def load_config(path: str | os.PathLike, **overrides) -> DistillConfig:
    """The :class:`~ev3evo.distillation.options.DistillConfig` of a settings file (the other
    settings at their defaults), with ``overrides`` replacing its values."""
    return configure(None, **{**read_settings(path), **overrides})


__all__ = ["load_config", "read_settings"]
