"""The throughput benchmark's measuring functions, at toy sizes: they run, their figures are
consistent with what they time, and the accelerator-only choices stay off on CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import throughput as T  # noqa: E402


def test_slope_recovers_a_power_law():
    xs = [8, 32, 128, 512]
    assert T.slope(xs, [3.0 * x**0.8 for x in xs]) == pytest.approx(0.8, abs=1e-9)


def test_machine_description_and_cpu_peak_size():
    m = T.machine()
    assert m["backend"] == "cpu" and m["device_kind"] == "cpu" and m["cores"] >= 1
    assert T.peak_size() == 2048  # an accelerator measures its peak on 8192² instead


def test_assess_fraction_is_flops_over_peak():
    out = T.bench_assess([2, 4], [16], repeats=1, hidden=8, n=256)
    assert [(r["P"], r["B"]) for r in out["rows"]] == [(2, 16), (4, 16)]
    for r in out["rows"]:
        assert r["seconds"] > 0 and r["peak_flops_per_s"] > 0
        assert r["flops_per_s"] == pytest.approx(r["P"] * r["B"] * out["flops_per_example"]
                                                 / r["seconds"])
        # the fraction is a median of per-repeat ratios: same order as flops / peak
        assert 0 < r["roofline_fraction"] < 10 * r["flops_per_s"] / r["peak_flops_per_s"]
        # the plain-vmap figure is the same fraction scaled by the measured speed-up
        assert r["seconds_plain_vmap"] > 0 and r["population_rule_speedup"] > 0
        assert r["roofline_fraction_plain_vmap"] == pytest.approx(
            r["roofline_fraction"] / r["population_rule_speedup"])


def test_assess_cnn_row_counts_the_convolutions_flops():
    out = T.bench_assess_cnn([2], [16], repeats=1, channels=(4,), n=256,
                             chunk_sizes=("auto",))
    arch = out["arch"]
    assert arch["channels"] == [4] and arch["pool"] == [True]
    # 8×8 positions × 3×3 taps × 1 → 4 channels, then a 4·4·4 → 10 head; ×2 (multiply-add)
    assert out["flops_per_example"] == 2 * (64 * 9 * 1 * 4 + 64 * 10)
    (r,) = out["rows"]
    assert r["flops_per_s"] == pytest.approx(2 * 16 * out["flops_per_example"] / r["seconds"])
    assert 0 < r["roofline_fraction"] < 10 * r["flops_per_s"] / r["peak_flops_per_s"]


@pytest.mark.slow  # a process of its own; the other configurations run in-process here
def test_scaling_config_runs_in_its_own_process_and_reports_memory():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "throughput.py"),
           "--_config", "4", "8", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["P"] == 4 and r["hidden"] == 8 and r["params"] == 64 * 8 + 8 + 8 * 10 + 10
    assert r["step_s"] > 0 and r["peak_rss_mb"] > 0
    assert r["peak_device_mb"] is None  # the CPU client reports no device memory
    assert np.isfinite(r["first_step_s"])
