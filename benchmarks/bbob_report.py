"""The BBOB report, from the COCO data folders: our anytime table, cocopp's ECDFs, best 2009.

* **Anytime table.** COCO's data of every solver is read back with ``cocopp.load``; for each
  (problem, target) pair (51 targets ``f_opt + 10^k``, ``k = 2, 1.8, ..., -8``) the first
  evaluation whose best-so-far value reaches the target (``DataSet.detEvals``). The table gives
  the fraction of pairs reached within ``B · D`` evaluations at several budgets ``B``, over all
  problems, per function group and per dimension. A problem a solver left no data for (it
  crashed before its first evaluation) counts as reaching nothing.
* **best 2009.** The same fractions for cocopp's shipped reference (``best2009-bbob``,
  ``best2009-bbob-noisy``: the best algorithm of BBOB-2009 per problem and target), counting a
  pair as reached when the reference's expected running time (ERT) is at most ``B · D``.
* **ECDFs.** ``cocopp.main`` on every solver's folder, offline, in a subprocess; its
  aggregated ECDF pictures (``pprldmany_*.png``: every function and every group per dimension,
  the best 2009 curve included) are copied next to the table.

Example (with ``benchmarks/`` on ``sys.path``)::

    import bbob_report
    row = {"all": {"100": 0.5}, "groups": {}, "dims": {}}
    assert bbob_report.cell(row["all"], "100") == "0.500"
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence

import bbob_problems as bp
import numpy as np

#: cocopp's shipped reference data of each suite.
REFERENCE = {"bbob": "best2009-bbob.tar.gz", "bbob-noisy": "best2009-bbob-noisy.tar.gz"}
REFERENCE_NAME = "best 2009"


def _quiet_cocopp():
    """``cocopp`` imported without its warnings about unreachable online archives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import cocopp
    return cocopp


def first_hits(folder: str) -> dict[tuple[int, int, int], np.ndarray]:
    """``(function, dim, instance) -> (51,)`` first evaluation reaching each target (NaN: never),
    read from the COCO data under ``folder``."""
    cocopp = _quiet_cocopp()
    hits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cocopp warns about fewer than 15 instances
        datasets = cocopp.load(folder) if os.path.isdir(folder) else []
        for ds in datasets:
            evals = np.array(ds.detEvals(list(bp.TARGETS)), dtype=float)  # (targets, runs)
            for run, instance in enumerate(ds.instancenumbers):
                hits[(int(ds.funcId), int(ds.dim), int(instance))] = evals[:, run]
    return hits


def _fractions(hits: dict, keys: Sequence[tuple], budgets: Sequence[int]) -> dict[str, float]:
    """Fraction of (problem, target) pairs of ``keys`` reached within ``B · D``, per budget."""
    out = {}
    for b in budgets:
        reached = sum(int(np.sum(hits[k] <= b * k[1])) for k in keys if k in hits)
        out[str(b)] = reached / (len(keys) * len(bp.TARGETS)) if keys else float("nan")
    return out


def anytime(hits: dict, suite: str, keys: Sequence[tuple], budgets: Sequence[int]) -> dict:
    """The anytime fractions over ``keys``: ``{"all", "groups", "dims"}``."""
    groups = {g: [k for k in keys if k[0] in ids] for g, ids in bp.GROUPS[suite].items()}
    dims = sorted({k[1] for k in keys})
    return {
        "all": _fractions(hits, keys, budgets),
        "groups": {g: _fractions(hits, ks, budgets) for g, ks in groups.items() if ks},
        "dims": {str(d): _fractions(hits, [k for k in keys if k[1] == d], budgets) for d in dims},
    }


def reference_hits(suite: str, keys: Sequence[tuple]) -> dict:
    """best 2009's ERT per target, as the ``first_hits`` of every key (instance-independent)."""
    cocopp = _quiet_cocopp()
    from cocopp import bestalg

    path = os.path.join(os.path.dirname(cocopp.__file__), "refalgs", REFERENCE[suite])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            ref = bestalg.load_reference_algorithm(path, force=True)
    out = {}
    for fid, dim, inst in keys:
        entry = ref.get((dim, fid))
        if entry is not None:
            out[(fid, dim, inst)] = np.array(entry.detERT(list(bp.TARGETS)), dtype=float)
    return out


def run_cocopp(folders: Sequence[str], out_dir: str, log_path: str) -> list[str]:
    """``cocopp.main`` on ``folders`` (offline, PNG figures); returns its aggregated ECDFs."""
    code = ("import sys, warnings; warnings.simplefilter('ignore'); import cocopp; "
            "cocopp.genericsettings.figure_file_formats = ['png']; "
            "cocopp.main(sys.argv[1:])")  # fmt: skip
    shutil.rmtree(out_dir, ignore_errors=True)
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, "-c", code, "-o", out_dir, *folders], stdout=log,
                       stderr=subprocess.STDOUT, check=False, timeout=3600)  # fmt: skip
    return sorted(glob.glob(os.path.join(out_dir, "*", "pprldmany_*D_*.png")))


def cell(fractions: dict, budget: str) -> str:
    value = fractions.get(budget, float("nan"))
    return "n/a" if value != value else f"{value:.3f}"


def table(report: dict) -> str:
    """Markdown: every solver (and best 2009) × all / group / dimension × budget."""
    budgets = [str(b) for b in report["budgets_per_dim"]]
    head = "| solver | problems | " + " | ".join(f"{b}·D" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (2 + len(budgets))]
    for name, entry in report["anytime"].items():
        rows = [("**all**", entry["all"]), *entry["groups"].items(),
                *((f"D = {d}", v) for d, v in entry["dims"].items())]  # fmt: skip
        for label, fr in rows:
            lines.append(f"| {name} | {label} | " + " | ".join(cell(fr, b) for b in budgets) + " |")
    return "\n".join(lines)


def wall_table(report: dict) -> str:
    lines = ["| solver | wall s (sum over runs) | runs | final target hit | failed runs | errors |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, w in report["solvers"].items():
        err = "; ".join(w["errors"])[:300]
        lines.append(f"| {name} | {w['wall_s']:.1f} | {w['runs']} | {w['target_hits']} | "
                     f"{w['failed_runs']} | {err} |")  # fmt: skip
    return "\n".join(lines)


def build(config, runs: list[dict], budgets: Sequence[int]) -> dict:
    """The report of ``runs`` (the runner's) from the COCO data of ``config``'s folders."""
    keys = [(f, d, i) for f in config.functions for d in config.dims for i in config.instances]
    report: dict = {"suite": config.suite, "budgets_per_dim": list(budgets), "anytime": {},
                    "solvers": {}}  # fmt: skip
    for solver in config.solvers:
        mine = [r for r in runs if r["solver"] == solver]
        hits = first_hits(config.folder(solver))
        report["anytime"][solver] = anytime(hits, config.suite, keys, budgets)
        report["solvers"][solver] = {
            "wall_s": sum(r["wall_s"] for r in mine),
            "runs": len(mine),
            "target_hits": sum(r["target_hit"] for r in mine),
            "failed_runs": sum(r["error"] is not None for r in mine),
            "errors": sorted({r["error"] for r in mine if r["error"]}),
            "folder": os.path.relpath(config.folder(solver), os.path.abspath(config.out)),
        }
    ref = reference_hits(config.suite, keys)
    report["anytime"][REFERENCE_NAME] = anytime(ref, config.suite, keys, budgets)
    return report
