"""Settings files (``--config FILE``, :func:`load_config`) and the rules of ``out`` and
``resume``: what a run records in ``summary.json`` reruns it, unknown keys and bad values are
named, flags override the file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import pytest

import ev3evo
from ev3evo.distillation import command, report
from ev3evo.distillation.config_file import load_config, read_settings
from ev3evo.distillation.options import DistillConfig, checked


def _parse(*words) -> DistillConfig:
    parser = argparse.ArgumentParser(prog="distill")
    command.add_arguments(parser)
    return checked(command.config_from_args(parser.parse_args(list(map(str, words)))),
                   flags=True)


def _summary(tmp_path, config: DistillConfig, given=None):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"config": report.jsonable(dataclasses.asdict(config)),
                                "given": given or {}}))
    return path


def test_a_summary_config_reruns_the_same_configuration(tmp_path):
    c = checked(DistillConfig(metrics=("macro_f1", "ece:0.01"), constraints=("agreement>=0.9",),
                              steps=7, time_budget=2.5, student="cnn:4,3", grow=True, seed=5,
                              out=str(tmp_path / "a"), baselines=False, kd_loss="ce"))
    path = _summary(tmp_path, c)
    again = load_config(path)
    assert again.out is None  # where the run wrote is not taken over
    assert dataclasses.replace(again, out=c.out) == c
    # on the command line: the defaults' output folder, or the one given, and flags win
    assert _parse("--config", path) == dataclasses.replace(c, out="ev3evo-distill")
    flagged = _parse("--config", path, "--steps", 3, "--out", tmp_path / "b", "--metric", "ece")
    assert flagged == dataclasses.replace(c, steps=3, out=str(tmp_path / "b"),
                                          metrics=("ece",))


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'steps = 9\npopulation = 12\ntime-budget = 3.5\nquiet = true\nno-baselines = true\n'
              'metric = ["macro_f1"]\n'),
    (".json", '{"steps": 9, "population_size": 12, "time_budget": 3.5, "progress": false, '
              '"baselines": false, "metrics": ["macro_f1"]}'),
])
def test_toml_and_json_take_the_names_or_the_flags(tmp_path, suffix, text):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    assert read_settings(path) == {"steps": 9, "population_size": 12, "time_budget": 3.5,
                                   "progress": False, "baselines": False,
                                   "metrics": ("macro_f1",)}
    assert load_config(path, seed=4) == DistillConfig(
        steps=9, population_size=12, time_budget=3.5, progress=False, baselines=False,
        metrics=("macro_f1",), seed=4)


@pytest.mark.parametrize("text, error, needle", [
    ('stepz = 3\n', ValueError, "unknown setting 'stepz'; settings: data, label"),
    ('steps = 0\n', ValueError, "steps must be a positive integer"),
    ('seed = -1\n', ValueError, "seed must be an integer from 0 to"),
    ('steps = 3\nmetric = ["nope"]\n', ValueError, "unknown metric 'nope'"),
    ('population = 8\npopulation_size = 9\n', ValueError,
     "'population_size' is given twice"),
    ('steps = \n', ValueError, "not a readable TOML file"),
])
def test_bad_settings_files_are_named(tmp_path, text, error, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(error, match=needle) as e:
        read_settings(path)
    assert str(path) in str(e.value)


def test_a_summary_of_a_run_given_python_objects_is_refused(tmp_path):
    path = _summary(tmp_path, DistillConfig(), {"student": "MyNet, an nnx Module"})
    with pytest.raises(ValueError, match=r"given objects from Python \(student: MyNet"):
        read_settings(path)
    with pytest.raises(ValueError, match="no such settings file"):
        read_settings(tmp_path / "missing.toml")


def test_out_and_resume_rules(tmp_path):
    run = tmp_path / "run"
    # --resume DIR without --out writes into DIR (also when given its checkpoints folder)
    assert _parse("--resume", run).out == str(run)
    assert _parse("--resume", run / "checkpoints").out == str(run)
    assert _parse("--resume", run, "--out", run).out == str(run)
    with pytest.raises(ValueError, match=f"--resume {run} writes its outputs into {run}, but "
                                         f"--out names {tmp_path / 'x'}"):
        _parse("--resume", run, "--out", tmp_path / "x")
    with pytest.raises(ValueError, match="--out must name a folder, got an empty string"):
        _parse("--out", "")
    with pytest.raises(ValueError, match=r"^out must name a folder.*out=None keeps nothing"):
        checked(DistillConfig(out=""))
    with pytest.raises(ValueError, match="checkpoint_every needs out"):
        checked(DistillConfig(checkpoint_every=2))


def test_out_none_leaves_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # the configuration of the other short digits runs (CLI, kill-and-resume): one compilation
    result = ev3evo.distill(data="digits", student="mlp:3", steps=2, teacher_epochs=1,
                            rollout_steps=50, population_size=8, baselines=False, progress=False)
    assert result.out is None and os.listdir(tmp_path) == []
    saved = result.save(tmp_path / "kept")
    assert sorted(os.listdir(saved)) == sorted(["summary.json", "history.jsonl",
                                               "metric_vs_step.png", "metric_vs_time.png",
                                               "allocation.png", "comparison.png"])
    assert json.loads((tmp_path / "kept" / "summary.json").read_text())["config"]["out"] is None
