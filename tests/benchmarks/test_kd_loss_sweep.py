"""The KD loss sweep benchmark at toy size: every loss of the grid trains, and the printed pick
is the best on validation."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import kd_loss_sweep as S  # noqa: E402

from ev3evo.distillation.grid import MIXTURES  # noqa: E402


@pytest.mark.slow  # trains a teacher and every loss of the grid
def test_sweep_runs_every_loss_and_picks_on_validation(tmp_path, capsys):
    assert S.main(["--data", "hard:300", "--seeds", "1", "--budget", "1", "--hidden", "4",
                   "--optimizers", "adam_0.01", "--work", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(s) for s in lines if s.startswith("{")]
    assert [r["loss"] for r in rows] == list(MIXTURES)
    assert all(r["optimizer"] == "adam_0.01" and 0.0 <= r["test"] <= 1.0 and r["steps"] > 0
               for r in rows)
    best = max(rows, key=lambda r: r["val"])
    assert f"picked on validation {best['loss']} + adam_0.01" in lines[-1]


def test_sweep_rejects_unknown_optimizers(tmp_path):
    with pytest.raises(SystemExit):
        S.main(["--optimizers", "adamw_1", "--work", str(tmp_path)])
