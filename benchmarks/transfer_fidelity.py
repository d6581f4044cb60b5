"""How faithfully agreement on the transfer set measures a student's agreement on real inputs.

    OPENBLAS_NUM_THREADS=1 python benchmarks/transfer_fidelity.py [--data mnist1d]

The fresh-data gate certifies gains in agreement with the teacher on teacher-labelled transfer
inputs (:mod:`ev3evo.distillation.transfer`). Those gains count only if they are gains on the
inputs a student will meet: this trains a teacher and students of several sizes and training
lengths (a range of qualities), then compares each student's agreement with the teacher on
the test split with its agreement on transfer inputs made with several settings (mixup
weight, noise, shift). Reported per setting: the mean absolute gap to the test agreement, the
slope of transfer agreement against test agreement over the students (1: a gain on the
transfer set is the same gain on test; below 1: gains look smaller than they are) and the rank
correlation. Written to ``benchmarks/results/transfer_fidelity_<data>.md``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from ev3evo.distillation import data
from ev3evo.distillation import teacher as T
from ev3evo.distillation.transfer import transfer_inputs

SETTINGS = {
    "training inputs": dict(mix=0.0, noise=0.0, shift=0),
    "noise 0.1": dict(mix=0.0, noise=0.1, shift=0),
    "noise 0.1, shift 1": dict(mix=0.0, noise=0.1, shift=1),
    "mixup 0.1, noise 0.1, shift 1 (default)": dict(mix=0.1, noise=0.1, shift=1),
    "mixup 0.25, noise 0.1, shift 1": dict(mix=0.25, noise=0.1, shift=1),
    "mixup 0.5, noise 0.1, shift 1": dict(mix=0.5, noise=0.1, shift=1),
}


def _agreement(student, x, labels) -> float:
    """The fraction of ``x`` on which ``student`` predicts ``labels`` (the teacher's)."""
    return float(jnp.mean(jnp.argmax(student.apply(student.params, x), -1) == labels))


def _command(args, parser) -> str:
    """The command line that reproduces this run (the settings that differ from the defaults)."""
    words = ["OPENBLAS_NUM_THREADS=1 python benchmarks/transfer_fidelity.py", "--data", args.data]
    for name in ("size", "students", "epochs", "teacher_epochs"):
        value = getattr(args, name)
        if value != parser.get_default(name):
            values = value if isinstance(value, list) else [value]
            words += [f"--{name.replace('_', '-')}", *map(str, values)]
    return " ".join(words)


def main(argv=None) -> np.ndarray:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist1d")
    p.add_argument("--size", type=int, default=8192, help="transfer inputs per setting")
    p.add_argument("--students", nargs="+", default=["mlp:16", "cnn:4"])
    p.add_argument("--epochs", nargs="+", type=int, default=[1, 3, 10, 30],
                   help="training epochs of each student (one student per value)")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args(argv)
    ds = data.load(args.data)
    teacher = T.train_teacher(ds, None, epochs=args.teacher_epochs, patience=args.teacher_epochs)
    label = lambda x: jnp.argmax(teacher.apply(teacher.params, x), -1)
    x_train = jnp.asarray(ds.train["x"])
    inputs = {k: transfer_inputs(jax.random.key(0), x_train, args.size, **v)
              for k, v in SETTINGS.items()}
    labels = {k: label(x) for k, x in inputs.items()}
    test_labels = label(ds.test["x"])
    rows = []  # per student: test agreement, then transfer agreement per setting
    for arch in args.students:
        for epochs in args.epochs:
            s = T.train_teacher(ds, arch, epochs=epochs, patience=100, seed=epochs)
            rows.append([_agreement(s, ds.test["x"], test_labels),
                         *(_agreement(s, inputs[k], labels[k]) for k in SETTINGS)])
            print(f"{arch} after {epochs} epochs: test agreement {rows[-1][0]:.3f}", flush=True)
    r = np.array(rows)
    lines = [f"# Transfer-set agreement against test agreement ({args.data})", "",
             f"Command: `{_command(args, p)}`", "",
             f"Teacher: built-in, {args.teacher_epochs} epochs (test accuracy "
             f"{teacher.metrics['test']['accuracy']:.3f}); students: {', '.join(args.students)} "
             f"after {', '.join(map(str, args.epochs))} epochs (test agreement "
             f"{r[:, 0].min():.3f} to {r[:, 0].max():.3f}); {args.size} transfer inputs per "
             "setting.", "",
             "| transfer inputs | mean abs gap to test agreement | slope vs test agreement | "
             "rank correlation |", "|---|---|---|---|"]
    for i, name in enumerate(SETTINGS):
        col = r[:, 1 + i]
        slope = float(np.polyfit(r[:, 0], col, 1)[0])
        rho = spearmanr(r[:, 0], col).correlation
        lines.append(f"| {name} | {np.mean(np.abs(col - r[:, 0])):.3f} | {slope:.2f} | "
                     f"{rho:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, f"transfer_fidelity_{args.data.replace(':', '_')}.md")
    with open(path, "w") as f:
        f.write(text)
    return r


if __name__ == "__main__":
    main()
