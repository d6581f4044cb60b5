"""The one description of the distillation settings: the dataclass, the checks, the command
line and the resume fingerprint all come from it, and agree with the engine's registries."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import ev3evo
from ev3evo.adapt.acceptance import ACCEPTANCE
from ev3evo.adapt.certification import CERTIFICATION
from ev3evo.distillation import command
from ev3evo.distillation.engine import engine_settings
from ev3evo.distillation.options import OPTIONS, DistillConfig, checked, configure
from ev3evo.distillation.resume import run_config

FLAGGED = [o for o in OPTIONS if o.flag is not None]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill")
    command.add_arguments(parser)
    return parser


def test_options_are_the_dataclass_fields():
    fields = dataclasses.fields(DistillConfig)
    assert [o.name for o in OPTIONS] == [f.name for f in fields]
    assert all(o.default == f.default for o, f in zip(OPTIONS, fields))
    assert len({o.flag for o in FLAGGED}) == len(FLAGGED)
    # every setting is documented in the class docstring, with its flag
    for o in OPTIONS:
        assert f"      {o.name}: " in DistillConfig.__doc__
        if o.flag:
            assert f"``{o.flag}``" in DistillConfig.__doc__


def test_the_parser_has_every_flag_once_with_its_default_once():
    text = _parser().format_help()
    for o in FLAGGED:
        assert o.flag in text, o.flag
    assert "(default: None)" not in text and "(default: [" not in text
    for action in _parser()._actions:
        assert (action.help or "").count("(default:") <= 1, action.help


def test_defaults_of_the_command_line_are_the_python_defaults():
    config = command.config_from_args(_parser().parse_args([]))
    for o in OPTIONS:
        want = o.cli_default if o.cli_default is not None else o.default
        assert getattr(config, o.name) == want, o.name


# One non-default command-line value per flag, and the setting it must produce.
VALUES = {
    "data": (["hard:500"], "hard:500"), "label": (["y"], "y"),
    "metrics": (["macro_f1", "ece:0.01"], ("macro_f1", "ece:0.01")),
    "constraints": (["agreement>=0.9"], ("agreement>=0.9",)),
    "constraint_margin": (["0"], 0.0),
    "steps": (["7"], 7), "time_budget": (["2.5"], 2.5), "student": (["cnn:4,3"], "cnn:4,3"),
    "grow": ([None], True), "grow_kind": (["deepen"], "deepen"), "patience": (["5"], 5),
    "population_size": (["9"], 9), "alpha": (["0.1"], 0.1), "correction": (["none"], "none"),
    "transfer": (["512"], 512), "gate_period": (["4"], 4),
    "select_on": (["transfer"], "transfer"), "thresholdout_examples": (["5"], 5.0),
    "accept": (["better"], "better"), "certify": (["primary"], "primary"),
    "rollout_steps": (["3"], 3), "kd_chain": (["40"], 40), "kd_chain_average": (["0.99"], 0.99),
    "tie_examples": (["1.5"], 1.5), "seed": (["7"], 7),
    "out": (["runs/x"], "runs/x"), "baselines": (["no"], False),
    "baseline_seconds": (["3"], 3.0), "es_algorithm": (["CMA_ES"], "CMA_ES"),
    "kd_loss": (["ce"], "ce"), "teacher": (["t.msgpack"], "t.msgpack"),
    "teacher_arch": (["mlp:16"], "mlp:16"), "teacher_epochs": (["4"], 4),
    "teacher_lr": (["0.01"], 0.01), "progress": ([None], False),
    "checkpoint_every": (["2"], 2), "checkpoint_seconds": (["5"], 5.0),
    "resume": (["runs/y"], "runs/y"),
    "tensorboard": ([None], True),
}


# Flags that only make sense with another one.
NEEDS = {"kd_chain_average": ["--kd-chain", "40"]}


def _words(option, given) -> list[str]:
    if given == [None]:  # an on/off flag
        return [option.flag]
    if given == ["no"]:
        return ["--no-" + option.flag[2:]]
    if option.kind.many == "append":
        return [w for v in given for w in (option.flag, v)]
    return [option.flag, *given[0].split()]


@pytest.mark.parametrize("option", FLAGGED, ids=lambda o: o.flag)
def test_every_flag_sets_its_setting(option):
    given, want = VALUES[option.name]
    words = _words(option, given) + NEEDS.get(option.name, [])
    config = command.config_from_args(_parser().parse_args(words))
    assert getattr(config, option.name) == want
    assert checked(config) == config  # what the command line makes passes the checks


def test_the_chain_average_needs_a_chain():
    config = command.config_from_args(_parser().parse_args(["--kd-chain-average", "0.99"]))
    with pytest.raises(ValueError, match=r"--kd-chain-average averages .* give --kd-chain N"):
        checked(config, flags=True)
    with pytest.raises(ValueError, match=r"kd_chain_average must be a decay in \[0, 1\)"):
        checked(DistillConfig(kd_chain=40, kd_chain_average=1.0))


def test_the_constraint_margin_reaches_the_gate():
    assert engine_settings(DistillConfig()).gate.constraint_margin == 1.645
    assert engine_settings(DistillConfig(constraint_margin=0.0)).gate.constraint_margin == 0.0
    for bad in (-1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match="constraint_margin must be a finite number >= 0"):
            checked(DistillConfig(constraint_margin=bad))


def test_flag_errors_are_argparse_one_liners(capsys):
    for words, needle in ((["--steps", "0"], "expected a positive integer"),
                          (["--tie-examples", "x"], "expected a number"),
                          (["--correction", "sidak"], "invalid choice: 'sidak'")):
        with pytest.raises(SystemExit):
            _parser().parse_args(words)
        assert needle in capsys.readouterr().err


def test_choices_are_the_engine_registries():
    by_name = {o.name: o for o in OPTIONS}
    assert set(by_name["correction"].choices) == {"auto", *CERTIFICATION}
    assert set(by_name["accept"].choices) == set(ACCEPTANCE)
    # "none" is the engine's, so the distillation takes it too (and the gate refuses others)
    assert engine_settings(DistillConfig(correction="none")).gate.correction == "none"
    with pytest.raises(ValueError, match=r"correction must be .*'split'.*, got 'sidak'"):
        engine_settings(DistillConfig(correction="sidak"))
    with pytest.raises(ValueError, match='certify="lexicographic" needs correction="split"'):
        engine_settings(DistillConfig(correction="holm", certify="lexicographic"))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        engine_settings(DistillConfig(alpha=1.5))


@pytest.mark.parametrize(
    "name, value, error, needle",
    [("steps", 0, ValueError, "steps must be a positive integer"),
     ("steps", "5", TypeError, "steps must be a positive integer"),
     ("max_growths", -1, ValueError, "max_growths must be >= 0"),
     ("time_budget", 0.0, ValueError, "time_budget must be a positive number"),
     ("student", "mlp:4,0", ValueError, "cannot read the model spec 'mlp:4,0'"),
     ("student", "rnn:8", ValueError, r"write mlp:H\[,H...\].* or cnn:C"),
     ("student", 8, TypeError, "student must be a model spec"),
     ("teacher_arch", "cnn:", ValueError, "a CNN needs at least one stage"),
     ("standardize", "yes", TypeError, "standardize must be True or False"),
     ("grow", "yes", TypeError, "grow must be True or False"),
     ("grow_kind", "shrink", ValueError, "grow_kind must be 'widen' or 'deepen' or 'residual'"),
     ("kd_loss", "kl_t9", ValueError, "unknown KD loss 'kl_t9'"),
     ("es_algorithm", "Open-ES", ValueError, "unknown evosax algorithm 'Open-ES'"),
     ("es_algorithm", "SimpleGA", ValueError, "SimpleGA is population-based"),
     ("checkpoint_seconds", 0, ValueError, "checkpoint_seconds must be a positive number"),
     ("metrics", [1], TypeError, "metrics must be a string or a sequence of strings"),
     ("seed", 1.5, TypeError, "seed must be an integer"),
     ("data", 3, TypeError, "data must be a string or a path")],
)
def test_python_checks_name_the_setting(name, value, error, needle):
    with pytest.raises(error, match=needle):
        checked(DistillConfig(**{name: value}))


def test_checks_normalize_and_unknown_settings_are_named(tmp_path):
    c = checked(DistillConfig(metrics="ece", student="mlp:6", data=tmp_path / "d.npz"))
    assert c.metrics == ("ece",) and c.student == "mlp:6" and c.data == str(tmp_path / "d.npz")
    with pytest.raises(TypeError, match="unknown setting 'stepz'; settings: data, label"):
        configure(stepz=3)
    with pytest.raises(TypeError, match="unknown setting 'stepz'"):
        ev3evo.distill(stepz=3)


def test_the_resume_fingerprint_is_the_marked_settings():
    fingerprint = run_config(DistillConfig())
    assert list(fingerprint) == [o.name for o in OPTIONS if o.same_on_resume]
    assert {"data", "seed", "metrics", "correction", "teacher_arch"} <= set(fingerprint)
    assert not {"steps", "time_budget", "out", "progress", "resume"} & set(fingerprint)
    assert fingerprint["student"] == "mlp:8"
