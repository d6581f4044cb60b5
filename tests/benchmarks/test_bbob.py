"""The BBOB benchmark on COCO (benchmarks/bbob*.py): real cocoex problems and observers, COCO
data read back by cocopp, tiny configurations."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

cocoex = pytest.importorskip("cocoex")
pytest.importorskip("cocopp")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bbob as bbob_script  # noqa: E402  (benchmarks/bbob.py, the command line)
import bbob_problems as bp  # noqa: E402
import bbob_report  # noqa: E402
import bbob_runner  # noqa: E402
import bbob_solvers  # noqa: E402

_SUITES = []  # keeps the suites of one_problem alive (a suite frees its problems)


def one_problem(suite, fid, dim, instance):
    """One COCO problem (not observed)."""
    s = cocoex.Suite(suite, "", bp.suite_options(suite, (fid,), (dim,), (instance,)))
    _SUITES.append(s)
    return next(iter(s))


def test_budgeted_stops_at_the_budget_and_at_the_final_target(tmp_path):
    problem = one_problem("bbob", 1, 2, 1)
    f = bp.Budgeted(problem, budget=3)
    for _ in range(3):
        f(np.zeros(2))
    with pytest.raises(bp.BudgetExhausted):
        f(np.zeros(2))
    assert problem.evaluations == 3  # no call beyond the budget
    # f1's optimum is found by minimizing COCO's own problem; the final target stops it
    from ev3evo import minimize

    problem = one_problem("bbob", 1, 5, 2)
    f = bp.Budgeted(problem, budget=5000)
    with pytest.raises(bp.FinalTargetHit):
        minimize(f, problem.initial_solution, budget=5000, seed=1, sigma0=2.0)
    assert problem.final_target_hit and f.evaluations < 5000


def test_suite_filters_and_bad_input():
    assert bp.suite_options("bbob-noisy", (101, 130), (2,), (1,)).endswith("function_indices:1,30")
    ids = [p.id for p in bp.problems("bbob-noisy", (101, 130), (2,), (1,))]
    assert ids == ["bbob_noisy_f101_i01_d02", "bbob_noisy_f130_i01_d02"]
    with pytest.raises(ValueError, match=r"bbob function ids must be in 1\.\.24"):
        bp.check("bbob", (0, 3), (2,), (1,))
    with pytest.raises(ValueError, match="dimensions"):
        bp.check("bbob", (1,), (4,), (1,))
    with pytest.raises(ValueError, match="unknown suite"):
        bp.check("bbob-mixed", (1,), (2,), (1,))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bbob")
    config = bbob_runner.Config(
        functions=(1, 15),
        dims=(2,),
        instances=(1, 2),
        budget_per_dim=60,
        solvers=("pycma-ipop", "ev3evo"),
        processes=1,
        out=str(out),
    )
    return config, bbob_runner.run(config)


def test_every_run_is_observed_and_read_back_from_coco_data(tiny_run):
    config, runs = tiny_run
    assert len(runs) == 2 * 2 * 2
    for solver in config.solvers:
        hits = bbob_report.first_hits(config.folder(solver))
        assert set(hits) == {(f, 2, i) for f in (1, 15) for i in (1, 2)}
        for r in (r for r in runs if r["solver"] == solver):
            assert r["error"] is None and 0 < r["evaluations"] <= r["budget"] == 120
            h = hits[(r["function"], 2, r["instance"])]
            reached = h[np.isfinite(h)]
            assert np.all(np.diff(reached) >= 0) and np.all(reached <= r["evaluations"])
            # COCO's final target (1e-8) was hit exactly when the run says so, at its last call
            assert np.isfinite(h[-1]) == r["target_hit"]
            if r["target_hit"]:
                assert h[-1] == r["evaluations"]


def test_anytime_fractions_and_the_best_2009_reference(tiny_run):
    config, runs = tiny_run
    report = bbob_report.build(config, runs, (10, 30, 60))
    for name, entry in report["anytime"].items():
        values = [entry["all"][b] for b in ("10", "30", "60")]
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values), name
        assert set(entry["groups"]) == {"separable", "multimodal, global structure"}
    ref = report["anytime"]["best 2009"]
    assert ref["groups"]["separable"]["60"] == 1.0  # best 2009 solves f1 in 2-D within 60·D
    table = bbob_report.table(report)
    assert "| best 2009 | **all** |" in table and "| ev3evo | D = 2 |" in table


def test_a_crashing_solver_is_reported_not_hidden(tmp_path, monkeypatch):
    """A solver that raises after a few evaluations: a failed run, with why, its evaluations
    counted."""

    def crashing(f, x0, seed):
        f(x0)
        f(x0 + 1.0)
        raise TypeError("only 0-dimensional arrays can be converted to Python scalars")

    monkeypatch.setitem(bbob_solvers.SOLVERS, "crashing", crashing)
    config = bbob_runner.Config(
        functions=(1,),
        dims=(2,),
        instances=(1,),
        budget_per_dim=20,
        solvers=("crashing",),
        processes=1,
        out=str(tmp_path),
    )
    (run,) = bbob_runner.run(config)
    assert run["error"] == "TypeError: only 0-dimensional arrays can be converted to Python scalars"
    assert run["evaluations"] == 2 and not run["target_hit"]


def test_ngopt_runs_its_metamodel_to_the_budget(tmp_path):
    """NGOpt picks its MetaModel on small continuous problems (the benchmark pins numpy < 2.4,
    under which it works): the run ends at the final target or the budget, not in a crash."""
    config = bbob_runner.Config(
        functions=(1,),
        dims=(2,),
        instances=(1,),
        budget_per_dim=100,
        solvers=("ng-ngopt",),
        processes=1,
        out=str(tmp_path),
    )
    (run,) = bbob_runner.run(config)
    assert run["error"] is None and (run["target_hit"] or run["evaluations"] == 200)


def test_nevergrad_cma_by_generation_proposes_the_same_points():
    def points(generation):
        problem = one_problem("bbob", 8, 2, 1)
        seen = []

        class Recorded(bp.Budgeted):
            def __call__(self, x):
                seen.append(np.array(x))
                return super().__call__(x)

        with pytest.raises(bp.BudgetExhausted):
            bbob_solvers._nevergrad(
                Recorded(problem, 60), np.zeros(2), 3,
                lambda ng, p, b: ng.families.ParametrizedCMA(scale=1.0)(parametrization=p,
                                                                         budget=b),
                generation=generation,
            )  # fmt: skip
        return np.array(seen)

    np.testing.assert_array_equal(points(True), points(False))


def test_smoke_run_writes_tables_coco_data_and_cocopp_pictures(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bbob.py"), "--tiny",
           "--solvers", "pycma-ipop,lq-cma", "--data", str(tmp_path / "data"),
           "--out", str(tmp_path / "res")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "res" / "bbob_tiny.json").read_text())
    assert set(result["anytime"]) == {"pycma-ipop", "lq-cma", "best 2009"}
    assert len(result["runs"]) == 2 * 2 and all(r["error"] is None for r in result["runs"])
    assert (tmp_path / "data" / "exdata" / "lq-cma" / "bbob_d2").is_dir()
    png = (tmp_path / "res" / "bbob_tiny_ecdf" / "pprldmany_02D_noiselessall.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (tmp_path / "res" / "bbob_tiny.md").read_text()
    assert "| lq-cma | **all** |" in md and "| best 2009 | separable |" in md
    assert (tmp_path / "res" / "bbob_tiny_exdata.tar.gz").is_file()


def test_script_rejects_bad_input(capsys):
    assert bbob_script.main(["--tiny", "--solvers", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown solver(s) ['nope']" in err and len(err.strip().splitlines()) == 1
    assert bbob_script.main(["--tiny", "--functions", "0,3"]) == 2
    assert "must be in 1..24" in capsys.readouterr().err
    assert bbob_script.main(["--tiny", "--dims", "2,x"]) == 2
    assert "--dims must be comma-separated integers" in capsys.readouterr().err
    assert bbob_script.main(["--tiny", "--budget-per-dim", "0"]) == 2
    assert "budget per dimension must be positive" in capsys.readouterr().err


def test_the_library_command_line_has_no_benchmarks(capsys):
    from ev3evo import cli

    assert "bench" not in cli.COMMANDS
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "bbob"])
    assert e.value.code == 2 and "invalid choice: 'bench'" in capsys.readouterr().err
