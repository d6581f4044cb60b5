"""The built-in teacher trainer on mnist1d, beside the published table (Greydanus 2020).

    python benchmarks/mnist1d_teachers.py [--samples N] [--seeds 0 1 2] [--lr 0.001 0.01]
                                          [--json PATH] [--md PATH]

mnist1d is generated offline by the ``mnist1d`` package's ``make_dataset`` (its published
settings) and split 60/20/20 like every dataset of ``ev3evo distill``; the default
``--samples 6670`` gives 4002 training examples, the 4000 of the published protocol (which
had no validation split: here 1334 validation examples select the epoch, 1334 are the test).
Every row is :func:`ev3evo.distillation.teacher.train_teacher` (AdamW, cross-entropy, best
validation epoch, early stopping) with the architecture of the row, at each learning rate of
``--lr`` (the trainer's default 1e-3, and 1e-2, the published training's), mean and spread
of the test accuracy over ``--seeds`` (the seed draws the split, the initialization and the
minibatches; the data themselves are the package's fixed generation).

Published test accuracy (the mnist1d README): logistic regression 32 %, MLP 68 %, CNN 94 %,
GRU 91 % (no GRU is built in here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

#: (row, architecture spec, published test accuracy)
ROWS = (("logistic regression", "mlp:", 0.32), ("MLP", "mlp:128,128", 0.68),
        ("CNN", "cnn:32,32,32", 0.94), ("GRU", None, 0.91))


def measure(samples: int, seeds, lrs, epochs: int = 200) -> list[dict]:
    """Every row × learning rate × seed: test, validation and train accuracy, epochs, seconds."""
    from ev3evo.distillation import data, teacher

    runs = []
    for seed in seeds:
        ds = data.load_mnist1d(seed=seed, n_samples=samples)
        for name, spec, published in ROWS:
            if spec is None:
                continue
            for lr in lrs:
                t0 = time.perf_counter()
                t = teacher.train_teacher(ds, spec, epochs=epochs, seed=seed, lr=lr)
                runs.append({"row": name, "arch": spec, "lr": lr, "seed": seed,
                             "test": t.metrics["test"]["accuracy"],
                             "validation": t.metrics["val"]["accuracy"],
                             "train": t.metrics["train"]["accuracy"], "epochs": t.epochs,
                             "seconds": time.perf_counter() - t0, "published": published,
                             "sizes": {s: len(getattr(ds, s)["y"]) for s in ("train", "val",
                                                                            "test")}})
                print(f"  {name:20s} {spec:14s} lr={lr:g} seed={seed}: test "
                      f"{runs[-1]['test']:.3f} ({t.epochs} epochs, "
                      f"{runs[-1]['seconds']:.0f}s)", flush=True)
    return runs


def table(runs: list[dict], lrs) -> str:
    """The markdown table: one row per architecture, one column per learning rate."""
    head = ["model", "spec", "published", *[f"ours, lr {lr:g}" for lr in lrs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, spec, published in ROWS:
        cells = [name, f"`{spec}`" if spec else "(not built in)", f"{published:.0%}"]
        for lr in lrs:
            acc = [r["test"] for r in runs if r["row"] == name and r["lr"] == lr]
            if not acc:
                cells.append("–")
            elif len(acc) == 1:
                cells.append(f"{acc[0]:.1%}")
            else:
                cells.append(f"{statistics.mean(acc):.1%} ± {statistics.stdev(acc):.1%} "
                             f"(n={len(acc)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6670)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--md", metavar="PATH")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    runs = measure(args.samples, args.seeds, args.lr, args.epochs)
    text = table(runs, args.lr)
    print(text)
    command = " ".join(["python", *sys.argv])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "samples": args.samples, "runs": runs,
                       "seconds": time.perf_counter() - start}, f, indent=1)
    if args.md:
        sizes = runs[0]["sizes"]
        with open(args.md, "w") as f:
            f.write(f"# mnist1d: the built-in teacher trainer beside the published table\n\n"
                    f"`{command}` ({time.perf_counter() - start:.0f} s on this machine)\n\n"
                    f"mnist1d:{args.samples}, split {sizes['train']} / {sizes['val']} / "
                    f"{sizes['test']} (train / validation / test); test accuracy, mean ± "
                    f"standard deviation over seeds {', '.join(map(str, args.seeds))}.\n\n"
                    f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
