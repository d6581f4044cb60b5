"""The transfer-fidelity benchmark at toy size: one row per transfer setting, agreements that
are fractions, and the table written where asked."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import transfer_fidelity as F  # noqa: E402


@pytest.mark.slow  # trains a teacher and two students
def test_every_setting_is_compared_with_the_test_agreement(tmp_path):
    r = F.main(["--data", "digits:images", "--students", "mlp:4", "--epochs", "1", "4",
                "--teacher-epochs", "3", "--size", "256", "--results", str(tmp_path)])
    assert r.shape == (2, 1 + len(F.SETTINGS)) and np.all((r >= 0) & (r <= 1))
    text = (tmp_path / "transfer_fidelity_digits_images.md").read_text()
    assert all(f"| {name} |" in text for name in F.SETTINGS)
    assert ("--data digits:images --size 256 --students mlp:4 --epochs 1 4 --teacher-epochs 3`"
            in text)
