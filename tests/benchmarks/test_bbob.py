"""BBOB definitions against Hansen et al. (2009) and a smoke run of the benchmark harness.

Reference: N. Hansen, S. Finck, R. Ros, A. Auger, "Real-parameter black-box optimization
benchmarking 2009: noiseless functions definitions", INRIA RR-6829 (the formulas cited below).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bbob as bbob_script  # noqa: E402  (benchmarks/bbob.py, the command line)
import bbob_lib as bbob  # noqa: E402  (benchmarks/bbob_lib.py, the harness)

D = 5


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def t_osz(x):
    """T_osz (RR-6829, section 0.2)."""
    x = np.asarray(x, float)
    xh = np.where(x == 0, 0.0, np.log(np.abs(x) + (x == 0)))
    c1 = np.where(x > 0, 10.0, 5.5)
    c2 = np.where(x > 0, 7.9, 3.1)
    return np.sign(x) * np.exp(xh + 0.049 * (np.sin(c1 * xh) + np.sin(c2 * xh)))


def t_asy(x, beta):
    d = x.size
    i = np.arange(d)
    pos = np.maximum(x, 0)
    return np.where(x > 0, pos ** (1 + beta * i / (d - 1) * np.sqrt(pos)), x)


def lam(alpha, d):
    return np.diag(alpha ** (0.5 * np.arange(d) / (d - 1)))


def f_pen(x):
    return np.sum(np.maximum(0.0, np.abs(x) - 5) ** 2)


# The published formulas, written from the paper (x_opt, f_opt, R, Q from the instance).
def ref_f2(x, p):
    z = t_osz(x - p["x_opt"])
    return np.sum(10 ** (6 * np.arange(D) / (D - 1)) * z**2) + p["f_opt"]


def ref_f3(x, p):
    z = lam(10, D) @ t_asy(t_osz(x - p["x_opt"]), 0.2)
    return 10 * (D - np.sum(np.cos(2 * np.pi * z))) + np.sum(z**2) + p["f_opt"]


def ref_f4(x, p):
    z = t_osz(x - p["x_opt"])
    i = np.arange(D)
    s = np.where((z > 0) & (i % 2 == 0), 10 * 10 ** (0.5 * i / (D - 1)), 10 ** (0.5 * i / (D - 1)))
    z = s * z
    return 10 * (D - np.sum(np.cos(2 * np.pi * z))) + np.sum(z**2) + 100 * f_pen(x) + p["f_opt"]


def ref_f7(x, p):
    zh = lam(10, D) @ p["R"] @ (x - p["x_opt"])
    zt = np.where(np.abs(zh) > 0.5, np.floor(0.5 + zh), np.floor(0.5 + 10 * zh) / 10)
    z = p["Q"] @ zt
    total = np.sum(10 ** (2 * np.arange(D) / (D - 1)) * z**2)
    return 0.1 * max(abs(zh[0]) / 1e4, total) + f_pen(x) + p["f_opt"]


def ref_f10(x, p):
    z = t_osz(p["R"] @ (x - p["x_opt"]))
    return np.sum(10 ** (6 * np.arange(D) / (D - 1)) * z**2) + p["f_opt"]


def ref_f15(x, p):
    z = p["R"] @ lam(10, D) @ p["Q"] @ t_asy(t_osz(p["R"] @ (x - p["x_opt"])), 0.2)
    return 10 * (D - np.sum(np.cos(2 * np.pi * z))) + np.sum(z**2) + p["f_opt"]


def ref_f8(x, p):
    z = max(1, np.sqrt(D) / 8) * (x - p["x_opt"]) + 1
    return np.sum(100 * (z[:-1] ** 2 - z[1:]) ** 2 + (z[:-1] - 1) ** 2) + p["f_opt"]


REFERENCES = {2: ref_f2, 3: ref_f3, 4: ref_f4, 7: ref_f7, 8: ref_f8, 10: ref_f10, 15: ref_f15}

# f(x_opt) = f_opt for the functions whose optimum is x_opt itself (RR-6829).
# (A sample of them, one from each group plus the corrected f4, f7: each evaluation compiles.)
AT_X_OPT = (1, 4, 7, 11, 13, 16, 17, 21, 23)


def test_optimum_value_at_x_opt():
    for fid in AT_X_OPT:
        f, f_opt = bbob.bbob_function(fid, D, 1)
        p = bbob.instance_params(fid, D, 1)
        # x_opt first, then random points nearby, which must be worse: one batched call
        rng = np.random.default_rng(fid)
        xs = np.vstack([p["x_opt"], p["x_opt"] + rng.normal(0, 0.5, (8, D))])
        values = np.asarray(jax.vmap(f)(xs))
        assert values[0] == pytest.approx(f_opt, abs=1e-8), bbob.FUNCTIONS[fid - 1]
        assert np.all(values[1:] > f_opt), bbob.FUNCTIONS[fid - 1]


def test_optimum_of_functions_with_a_shifted_optimum():
    # f5: x_opt = 5 sign(x_opt); f9, f19: z = c R x + 1/2 = 1; f24: x = sign(x_opt) mu0 / 2.
    c = max(1.0, np.sqrt(D) / 8)
    for fid, point in (
        (5, lambda p: 5 * np.sign(p["x_opt"])),
        (9, lambda p: p["R"].T @ np.full(D, 0.5 / c)),
        (19, lambda p: p["R"].T @ np.full(D, 0.5 / c)),
        (24, lambda p: np.sign(p["x_opt"]) * 1.25),
    ):
        f, f_opt = bbob.bbob_function(fid, D, 2)
        p = bbob.instance_params(fid, D, 2)
        assert float(f(point(p))) == pytest.approx(f_opt, abs=1e-8), fid


def test_closed_forms():
    p = bbob.instance_params(1, D, 1)
    f1, f_opt = bbob.bbob_function(1, D, 1)
    e = np.eye(D)
    assert float(f1(p["x_opt"] + 2 * e[0])) == pytest.approx(f_opt + 4.0)
    # ellipsoid: T_osz(1) = 1, so a unit step on the last axis costs 10^6
    p2 = bbob.instance_params(2, D, 1)
    f2, f2_opt = bbob.bbob_function(2, D, 1)
    assert float(f2(p2["x_opt"] + e[-1])) == pytest.approx(f2_opt + 1e6, rel=1e-12)
    # rastrigin: a unit step on the first axis lands on a local optimum of value 1
    p3 = bbob.instance_params(3, D, 1)
    f3, f3_opt = bbob.bbob_function(3, D, 1)
    assert float(f3(p3["x_opt"] + e[0])) == pytest.approx(f3_opt + 1.0, abs=1e-9)


def test_definitions_match_the_paper_at_random_points():
    rng = np.random.default_rng(0)
    for fid, ref in REFERENCES.items():
        f, _ = bbob.bbob_function(fid, D, 3)
        p = bbob.instance_params(fid, D, 3)
        for x in rng.uniform(-5.5, 5.5, (6, D)):
            assert float(f(x)) == pytest.approx(ref(x, p), rel=1e-9, abs=1e-9), fid


def test_evosax_deviations_are_the_documented_ones():
    """evosax 0.3.2's f4 and f7 differ from the paper; the harness uses the paper's."""
    from evosax.problems.bbob.bbob_fns import bbob_fns

    p = bbob.instance_params(7, D, 1)
    x = p["x_opt"] + np.array([0.3, -0.2, 0.4, 0.1, -0.3])
    raw, pen = bbob_fns["step_ellipsoidal"](x, p["x_opt"], p["R"], p["Q"], D)
    assert float(raw + pen + p["f_opt"]) - p["f_opt"] == pytest.approx(
        100 * (ref_f7(x, p) - p["f_opt"]), rel=1e-9
    )
    p4 = bbob.instance_params(4, D, 1)
    x4 = p4["x_opt"] + 0.3  # all z_i > 0: the factor 10 lands on different coordinates
    raw4, pen4 = bbob_fns["bueche_rastrigin"](x4, p4["x_opt"], p4["R"], p4["Q"], D)
    assert abs(float(raw4 + pen4 + p4["f_opt"]) - ref_f4(x4, p4)) > 1.0
    assert set(bbob.CORRECTED) == {4, 7}


def test_evaluator_enforces_budget_and_records_hits():
    ev = bbob.Evaluator(1, 2, 1, budget=5)
    p = bbob.instance_params(1, 2, 1)
    values = ev(np.stack([p["x_opt"] + 1.0, p["x_opt"]]))
    assert values.shape == (2,) and ev.nfev == 2
    with pytest.raises(bbob.BudgetExhausted):
        ev(np.zeros((4, 2)))
    assert ev.nfev == 5  # evaluated what remained, then stopped
    hits = ev.hits()
    assert hits[0] == 1  # f_opt + 2 (<= 1e2) reached by the first point
    assert hits[-1] == 2  # 1e-8 reached by x_opt itself, the second evaluation


@pytest.mark.slow
def test_smoke_run_writes_json_table_and_png(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bbob.py"), "--tiny",
           "--solvers", "pycma-ipop,ng-cma", "--json", str(tmp_path / "r.json"),
           "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["summary"]) == {"pycma-ipop", "ng-cma"}
    assert len(result["runs"]) == 2 * 2  # 2 solvers x 2 functions x D=2 x 1 instance
    for run in result["runs"]:
        assert run["nfev"] <= run["budget"] == 60 and run["error"] is None
        assert len(run["hits"]) == 51
    frac = result["summary"]["pycma-ipop"]["all"]
    assert 0.0 < frac["30"] <= 1.0 and frac["10"] <= frac["30"]
    png = (tmp_path / "bbob_ecdf.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "| pycma-ipop | **all** |" in (tmp_path / "bbob_table.md").read_text()


def test_script_rejects_bad_input(capsys):
    assert bbob_script.main(["--tiny", "--solvers", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown solver(s) ['nope']" in err and len(err.strip().splitlines()) == 1
    assert bbob_script.main(["--tiny", "--functions", "0,3"]) == 2
    assert "must be in 1..24" in capsys.readouterr().err
    assert bbob_script.main(["--tiny", "--dims", "2,x"]) == 2
    assert "--dims must be comma-separated integers" in capsys.readouterr().err


def test_the_library_command_line_has_no_benchmarks(capsys):
    from ev3evo import cli

    assert "bench" not in cli.COMMANDS
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "bbob"])
    assert e.value.code == 2 and "invalid choice: 'bench'" in capsys.readouterr().err


def test_nevergrad_cma_by_generation_proposes_the_same_points():
    """The harness asks nevergrad's CMA a whole generation at a time: same points, same trace."""

    def run(generation):
        ev = bbob.Evaluator(8, 2, 1, budget=60)
        x0 = np.array([1.0, -2.0])
        with pytest.raises(bbob.BudgetExhausted):
            bbob._nevergrad_loop(
                ev, x0, 3,
                lambda ng, p, b: ng.families.ParametrizedCMA(scale=1.0)(parametrization=p, budget=b),
                generation=generation,
            )  # fmt: skip
        return ev.nfev, ev.trace_n, ev.trace_f

    assert run(True) == run(False)


def test_evaluator_single_row_and_batch_agree():
    ev = bbob.Evaluator(10, 3, 1, budget=100)
    x = np.random.default_rng(0).uniform(-4, 4, (9, 3))
    batch = ev(x)
    singles = [ev(row) for row in x]
    np.testing.assert_allclose(batch, singles, rtol=1e-12)
    assert ev.nfev == 18
