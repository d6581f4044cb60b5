"""Which KD loss is best for a dataset? Plain KD with every loss of EV3's grid × optimizers.

The KD baselines of :mod:`benchmarks.distill_quality` train with one loss (``--kd-loss``, KL at
T=4 by default, the best on digits). Which loss is best depends on the data: a baseline with the
wrong one is a weak baseline. This sweep trains the same 8-unit student as the quality benchmark
(same seed, split, teacher cache and initial parameters) with each loss of
:data:`ev3evo.distillation.grid.MIXTURES` and each optimizer, ``--budget`` seconds each, and
prints validation and test accuracy of every best-on-validation checkpoint, then the loss a user
would pick (best on validation).

Run::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/kd_loss_sweep.py --data hard:20000 \\
        --seeds 1 --budget 35 --optimizers adam_0.01 sgdm_0.05
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="hard:20000")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=float, default=35.0, help="seconds per KD run")
    p.add_argument("--hidden", type=int, default=8)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--optimizers", nargs="+", default=None,
                   help="names from ev3evo.distillation.grid.optimizer_grid() (default: all)")
    p.add_argument("--work", default="/tmp/ev3evo-distill-quality",
                   help="the quality benchmark's folder: its cached teachers are reused")
    args = p.parse_args(argv)

    from ev3evo.assess import metrics as M
    from ev3evo.distillation import baselines as B
    from ev3evo.distillation import data as D
    from ev3evo.distillation import grid as G
    from ev3evo.distillation import teacher as T
    from ev3evo.distillation.pipeline import run_keys
    from ev3evo.distillation.student import Student

    grid = G.optimizer_grid()
    names = args.optimizers or list(grid)
    unknown = sorted(set(names) - set(grid))
    if unknown:
        p.error(f"unknown optimizers {unknown}; known: {', '.join(grid)}")
    rows = []
    for seed in args.seeds:
        ds = D.load(args.data, seed=seed)
        teacher = T.load_or_train_teacher(ds, os.path.join(args.work, "teachers"), seed=seed)
        splits = T.teacher_splits(ds, teacher)
        _, k_kd, _ = run_keys(seed)  # the key and initial student of distill's KD baselines
        student = Student.build(f"mlp:{args.hidden}", ds.feature_shape, ds.num_classes, seed)
        params0 = student.initial
        metric = M.get(args.metric, student.apply, ds.num_classes)
        for loss_name in G.MIXTURES:
            loss = G.named_loss(student, loss_name)
            for opt in names:
                r = B.kd_train(k_kd, student.apply, params0, splits["train"], splits["val"],
                               loss, grid[opt], metric, time_budget=args.budget)
                row = {"seed": seed, "loss": loss_name, "optimizer": opt,
                       "seconds": round(r.seconds, 1), "steps": r.steps}
                for s in ("val", "test"):
                    row[s] = student.evaluate(r.params, splits[s], [args.metric])[args.metric]
                rows.append(row)
                print(json.dumps(row), flush=True)
        mine = [r for r in rows if r["seed"] == seed]
        sign = -1.0 if args.metric == "ece" else 1.0
        pick = max(mine, key=lambda r: sign * r["val"])
        best = max(mine, key=lambda r: sign * r["test"])
        print(f"seed {seed}: picked on validation {pick['loss']} + {pick['optimizer']} "
              f"(test {pick['test']:.4f}); best on test {best['loss']} + {best['optimizer']} "
              f"(test {best['test']:.4f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
