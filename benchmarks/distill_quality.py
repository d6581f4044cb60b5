"""Distillation quality: EV3's student against KD and ES baselines at equal wall time.

For each configuration (dataset, metric) and seed, one :func:`ev3evo.distill`
run: EV3 optimizes the metric on the validation split for ``--time-budget`` seconds (its step
compiled before the clock starts), then every baseline (KD with each optimizer of the grid,
OpenES) gets EV3's wall time. Reported: the **test** metric of EV3's stable model, of the best
baseline (chosen on test, the strongest possible comparison), and of the best KD baseline.

Run::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/distill_quality.py --seeds 3

Writes ``benchmarks/results/distill_quality.{md,json}`` (after every run, so a partial run
keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

CONFIGS = ("digits:accuracy", "mnist1d:accuracy", "imbalanced:macro_f1",
           "digits:ece@accuracy>=0.94")
LOWER = {"ece"}


def _folder(data: str, label: str, seed: int) -> str:
    return "".join(c if c.isalnum() else "_" for c in f"{data}_{label}_s{seed}")


def _pick(methods: dict, names, metric: str, split: str, constraints) -> str:
    """The best of ``names`` on ``split`` under ``constraints`` (the run's own report rule)."""
    from ev3evo.distillation import report

    chosen = {k: methods[k] for k in names}
    return report.best_method({"methods": chosen, "constraints": constraints}, metric, split)


def _stats(values):
    import numpy as np

    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _accuracies(row) -> str:
    """Test accuracy of EV3, the best and the val-selected baseline ("–" for a row that did
    not record the baselines' other metrics)."""
    every = row.get("baselines_all")
    if not every:
        return "–"
    acc = lambda name: every[name].get("accuracy", float("nan"))
    return (f"{row['ev3_test_all'].get('accuracy', float('nan')):.3f} / "
            f"{acc(row['best_baseline_name']):.3f} / {acc(row['val_baseline_name']):.3f}")


def _write(rows, path_md, path_json, args):
    import numpy as np

    with open(path_json, "w") as f:
        json.dump({"args": vars(args), "runs": rows}, f, indent=2)
    lines = [
        "# Distillation quality: EV3 vs baselines at equal wall time",
        "",
        f"Command: `OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/distill_quality.py "
        f"--seeds {args.seeds} --time-budget {args.time_budget:g} --hidden {args.hidden} "
        f"--rollout-steps {args.rollout_steps} --correction {args.correction} "
        f"--accept {args.accept} " + (f"--certify {args.certify} " if args.certify else "") +
        f"--tie-examples {args.tie_examples:g} --configs {' '.join(args.configs)}"
        + (f" --kd-loss {args.kd_loss}" if args.kd_loss != "kl_t4" else "")
        + (f" --select-on {args.select_on}" if args.select_on != "validation" else "")
        + (f" --kd-chain {args.kd_chain}" if args.kd_chain else "")
        + (f" --kd-chain-average {args.kd_chain_average:g}" if args.kd_chain_average else "")
        + (f" --population {args.population}" if args.population is not None else "")
        + (f" --constraint-margin {args.constraint_margin:g}"
           if args.constraint_margin is not None else "")
        + (f" --name {args.name}" if args.name != "distill_quality" else "") + "`",
        "",
        f"Student: MLP with {args.hidden} hidden units; EV3 runs {args.time_budget:g} s (step "
        "compiled before the clock), each baseline gets EV3's wall time. Test split, mean ± "
        "standard deviation over seeds (each seed also changes the data split and the teacher). "
        "'best baseline' is the best of all baselines *on test* (an oracle choice, the "
        "strongest comparison); 'baseline (val-selected)' the baseline a user would pick, the "
        "best on *validation*; 'best KD' the best KD optimizer on test. ECE: lower is better. "
        "Under a constraint (`METRIC s.t. ...`) a baseline competes only where it meets it (on "
        "test for the oracle choice, on validation for the val-selected one; when none does, "
        "the one closest to meeting it).",
        "",
        "| data | metric | seeds | teacher | EV3 (stable) | best baseline | baseline "
        "(val-selected) | best KD | OpenES | EV3 − best baseline | EV3 − val-selected |"
        " EV3 ≥ best (seeds) | EV3 ≥ val-selected (seeds) | certifications / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {}
    for r in rows:
        by.setdefault((r["data"], r["metric"]), []).append(r)
    for (data, metric), rs in by.items():
        sign = -1.0 if metric.split()[0] in LOWER else 1.0
        cols = {k: _stats([r[k] for r in rs]) for k in ("teacher", "ev3", "best_baseline",
                                                          "val_baseline", "best_kd", "es")}
        diff = _stats([r["ev3"] - r["best_baseline"] for r in rs])
        vdiff = _stats([r["ev3"] - r["val_baseline"] for r in rs])
        wins = sum(sign * (r["ev3"] - r["best_baseline"]) >= 0 for r in rs)
        vwins = sum(sign * (r["ev3"] - r["val_baseline"]) >= 0 for r in rs)
        fmt = lambda ms: f"{ms[0]:.4f} ± {ms[1]:.4f}"
        lines.append(
            f"| {data} | {metric} | {len(rs)} | {fmt(cols['teacher'])} | {fmt(cols['ev3'])} | "
            f"{fmt(cols['best_baseline'])} | {fmt(cols['val_baseline'])} | "
            f"{fmt(cols['best_kd'])} | {fmt(cols['es'])} | "
            f"{diff[0]:+.4f} ± {diff[1]:.4f} | {vdiff[0]:+.4f} ± {vdiff[1]:.4f} | "
            f"{wins}/{len(rs)} | {vwins}/{len(rs)} | "
            f"{np.mean([r['certified'] for r in rs]):.1f} |"
        )
    lines += ["", "Per run (test metric; seconds = EV3's wall time, steps taken):", "",
              "| data | metric | seed | EV3 | EV3 current | best baseline (name) | "
              "val-selected baseline (name) | accuracy: EV3 / best / val-selected | EV3 steps | "
              "certified | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['metric']} | {r['seed']} | {r['ev3']:.4f} | "
                     f"{r['ev3_current']:.4f} | "
                     f"{r['best_baseline']:.4f} ({r['best_baseline_name']}) | "
                     f"{r['val_baseline']:.4f} ({r['val_baseline_name']}) | "
                     f"{_accuracies(r)} | {r['ev3_steps']} | "
                     f"{r['certified']} {r.get('certified_steps', '')} | {r['seconds']:.1f} |")
    if args.notes and os.path.exists(args.notes):
        lines += ["", open(args.notes).read().rstrip()]
    del np
    with open(path_md, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--time-budget", type=float, default=30.0, help="EV3 seconds per run")
    p.add_argument("--steps", type=int, default=2000, help="EV3 step cap (the budget binds)")
    p.add_argument("--hidden", type=int, default=8)
    p.add_argument("--rollout-steps", type=int, default=1000, help="optimizer steps per candidate")
    p.add_argument("--population", type=int, default=None,
                   help="EV3's candidates per step (default: distill's)")
    p.add_argument("--correction", default="auto", help="the gate's correction")
    p.add_argument("--accept", default="lexicographic", help="the gate's acceptance rule")
    p.add_argument("--certify", default=None, help="the gate's certification rule")
    p.add_argument("--tie-examples", type=float, default=4.0,
                   help="primary ties within this many selection examples go to fidelity")
    p.add_argument("--select-on", default="validation",
                   choices=("validation", "transfer", "thresholdout"),
                   help="where EV3 selects its candidates with the fresh-data gates")
    p.add_argument("--kd-chain", type=int, default=0,
                   help="EV3's KD chain: steps it is continued every EV3 step (0: none)")
    p.add_argument("--kd-chain-average", type=float, default=0.0,
                   help="with --kd-chain: the decay of the chain's averaged iterates (0: none)")
    p.add_argument("--constraint-margin", type=float, default=None,
                   help="the gate's constraint margin in standard errors (default: distill's)")
    p.add_argument("--kd-loss", default="kl_t4",
                   help="the KD baselines' loss (a name of ev3evo.distillation.grid.MIXTURES)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS),
                   help="DATA:METRIC[@CONSTRAINT], e.g. digits:ece@accuracy>=0.94")
    p.add_argument("--notes", default=None,
                   help="a markdown file appended to the results (what was tried)")
    p.add_argument("--work", default="/tmp/ev3evo-distill-quality")
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--name", default="distill_quality",
                   help="results file stem: RESULTS/NAME.md and RESULTS/NAME.json")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    # Seeds of one dataset share shapes: the persistent cache compiles each step program once.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.work, "jax-cache"))
    from ev3evo import distill
    from ev3evo.distillation import data as D
    from ev3evo.distillation import report
    from ev3evo.distillation import teacher as T

    os.makedirs(args.results, exist_ok=True)
    md = os.path.join(args.results, f"{args.name}.md")
    js = os.path.join(args.results, f"{args.name}.json")
    rows = []
    teachers = {}
    for cfg in args.configs:
        cfg, _, constraint = cfg.partition("@")  # DATA:METRIC[@CONSTRAINT]
        data, _, metric = cfg.rpartition(":")  # DATA may hold a colon itself ("hard:20000")
        label = f"{metric} s.t. {constraint}" if constraint else metric
        for seed in range(args.seeds):
            if (data, seed) not in teachers:
                ds = D.load(data, seed=seed)
                teachers[(data, seed)] = T.load_or_train_teacher(
                    ds, os.path.join(args.work, "teachers"), seed=seed).path
            out = os.path.join(args.work, _folder(data, label, seed))
            shutil.rmtree(out, ignore_errors=True)  # a run's folder from an earlier invocation
            t0 = time.time()
            res = distill(data=data, metrics=(metric,), steps=args.steps,
                          constraints=(constraint,) if constraint else (),
                          time_budget=args.time_budget, student=f"mlp:{args.hidden}",
                          seed=seed, out=out,
                          teacher=teachers[(data, seed)], baselines=True, progress=False,
                          warmup=True, rollout_steps=args.rollout_steps,
                          correction=args.correction, tie_examples=args.tie_examples,
                          accept=args.accept, certify=args.certify, kd_loss=args.kd_loss,
                          select_on=args.select_on, kd_chain=args.kd_chain,
                          kd_chain_average=args.kd_chain_average,
                          **({} if args.population is None else
                             {"population_size": args.population}),
                          **({} if args.constraint_margin is None else
                             {"constraint_margin": args.constraint_margin}))
            m = res.methods
            needs = [constraint] if constraint else []
            # under a constraint a baseline competes only where it meets it: on test for the
            # oracle choice, on validation for the choice a user would make (the same rule as
            # the run's own report)
            others = [k for k in m if k != "ev3"]
            base = {k: m[k]["test"][metric] for k in others}
            kd = {k: v for k, v in base.items() if k.startswith("kd_")}
            best = _pick(m, others, metric, "test", needs)
            best_kd = _pick(m, kd, metric, "test", needs)
            val_pick = _pick(m, others, metric, "validation", needs)
            meets = {k: report.shortfall(m[k], "test", needs) == 0 for k in m}
            row = {
                "data": data, "metric": label, "seed": seed,
                "ev3_meets": meets["ev3"], "val_baseline_meets": meets[val_pick],
                "teacher": res.teacher["test"][metric],
                "ev3": m["ev3"]["test"][metric],
                "ev3_current": m["ev3"]["current_test"][metric],
                "best_baseline": base[best], "best_baseline_name": best,
                "val_baseline": base[val_pick], "val_baseline_name": val_pick,
                "best_kd": kd[best_kd], "best_kd_name": best_kd,
                "certified": sum(bool(h.get("certified")) for h in res.history
                                 if "event" not in h),
                "certified_steps": [h["step"] for h in res.history
                                    if "event" not in h and h.get("certified")],
                "es": base.get("es_open_es", float("nan")),
                "baselines": base,
                # every metric of every method: a low ECE from a model that is rarely right
                # (an early checkpoint, an ES that only calibrates) is worth knowing about
                "baselines_all": {k: v["test"] for k, v in m.items() if k != "ev3"},
                "ev3_steps": m["ev3"]["steps"], "seconds": m["ev3"]["seconds"],
                "ev3_test_all": m["ev3"]["test"],
                "wall": time.time() - t0,
            }
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("data", "metric", "seed", "ev3",
                                                  "best_baseline", "best_baseline_name",
                                                  "ev3_steps")}), flush=True)
            _write(rows, md, js, args)
    print(open(md).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
