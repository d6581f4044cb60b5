"""``ev3evo distill``: distill a teacher into a small student with EV3, against baselines.

Usage (shell)::

    ev3evo distill --steps 200 --student-hidden 8 --out runs/digits
    ev3evo distill --data my.csv --label target --metric macro_f1 \\
        --constraint "agreement>=0.9" --time-budget 60 --no-baselines

Bad input (a missing file, a wrong column, an unknown metric, ...) exits with code 2 and a
one-line message; the argument parsing lives here, the run in :mod:`ev3evo.distill.pipeline`.
"""

from __future__ import annotations

import argparse

from .pipeline import MIXTURES, DistillConfig, distill

_DEFAULTS = DistillConfig()


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Distill a teacher into a small student with EV3 (explore with gradient, biased, "
        "evolutionary and mutation sources; assess on the validation split; adapt with a "
        "statistical gate), and compare with plain KD and a pure evolution strategy given the "
        "same wall time. Writes summary.json, history.jsonl and PNG plots to --out and prints "
        "a table of test metrics."
    )
    g = p.add_argument_group("data and teacher")
    g.add_argument("--data", metavar="PATH", default=None,
                   help="'digits' (built in, the default), 'hard' or 'hard:N' (a generated harder "
                        "problem with N examples, 3000 by default), or a .npz (arrays x, y; or "
                        "x_train, y_train, [x_val, y_val,] x_test, y_test) or .csv file (header row; numeric features)")
    g.add_argument("--label", metavar="COL", default=None,
                   help="label column of a .csv (default: the column named 'label', else the "
                        "last column)")
    g.add_argument("--teacher", metavar="CKPT", default=None,
                   help="a teacher checkpoint (.msgpack from ev3evo.distill.models.save); "
                        "default: train one and cache it under OUT/teacher")
    g.add_argument("--teacher-epochs", type=_positive_int, default=None, metavar="N",
                   help="training epochs of the teacher when one is trained")
    g = p.add_argument_group("what to optimize")
    g.add_argument("--metric", action="append", metavar="NAME[:TOL]", default=None,
                   help="objective on the validation split: accuracy, macro_f1, agreement, ece "
                        "(lower is better), neg_loss, top2_accuracy...; repeat for lexicographic "
                        "priorities, ':TOL' makes values within TOL of the best count as ties "
                        "(default: accuracy)")
    g.add_argument("--constraint", action="append", metavar="EXPR", default=[],
                   help="a requirement such as 'agreement>=0.95' or 'ece<=0.05'; repeatable")
    g = p.add_argument_group("the EV3 run")
    g.add_argument("--steps", type=_positive_int, default=_DEFAULTS.steps,
                   help="maximum number of EV3 steps")
    g.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="maximum wall time of the EV3 run (compilation included); each baseline "
                        "then gets EV3's actual wall time")
    g.add_argument("--student-hidden", type=_positive_int, nargs="+", metavar="H",
                   default=list(_DEFAULTS.student_hidden),
                   help="hidden widths of the student MLP (capacity-limited on purpose)")
    g.add_argument("--population", type=_positive_int, default=_DEFAULTS.population_size,
                   metavar="P", help="candidates assessed per step (the allocation shares them "
                                     "among the sources)")
    g.add_argument("--alpha", type=float, default=_DEFAULTS.alpha,
                   help="error level of the gate's confidence bounds")
    g.add_argument("--correction", choices=("split", "holm", "bonferroni"),
                   default=_DEFAULTS.correction,
                   help="how the gate controls errors over the candidates of a step: 'split' "
                        "selects the winner on half of the validation split and tests it alone "
                        "on the other half; 'holm'/'bonferroni' test every candidate on all of "
                        "it with that correction")
    g.add_argument("--accept", choices=("lexicographic", "not_worse", "better"),
                   default=_DEFAULTS.accept,
                   help="when a step's winner replaces the current model: 'lexicographic' "
                        "(better beyond the tie tolerance, or tied and significantly closer to "
                        "the teacher), 'not_worse' (not reliably worse), 'better' (higher)")
    g.add_argument("--certify", choices=("primary", "lexicographic"), default=None,
                   help="certify a new stable model on a significant gain in the first metric "
                        "only ('primary'), or also when it ties on it and is significantly "
                        "closer to the teacher ('lexicographic'; the default with "
                        "--correction split)")
    g.add_argument("--tie-examples", type=_positive_float, default=_DEFAULTS.tie_examples,
                   metavar="N", help="candidates within N validation examples of the best on "
                                     "the first metric count as tied; the one closest to the "
                                     "teacher wins")
    g.add_argument("--rollout-steps", type=_positive_int, default=_DEFAULTS.rollout_steps,
                   metavar="N", help="optimizer steps per gradient candidate")
    g.add_argument("--patience", type=_positive_int, default=_DEFAULTS.patience,
                   help="steps without certified improvement that count as a stall (growth)")
    g.add_argument("--grow", action=argparse.BooleanOptionalAction, default=_DEFAULTS.grow,
                   help="grow the student function-preservingly when progress stalls "
                        "(the baselines keep the initial size)")
    g.add_argument("--grow-kind", choices=("widen", "deepen"), default=_DEFAULTS.grow_kind,
                   help="how to grow the student")
    g.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                   help="seeds the data split, the models and the run")
    g = p.add_argument_group("outputs and comparison")
    g.add_argument("--out", metavar="DIR", default="ev3evo-distill",
                   help="output folder: summary.json, history.jsonl, *.png, the cached teacher")
    g.add_argument("--baselines", action=argparse.BooleanOptionalAction,
                   default=_DEFAULTS.baselines,
                   help="also run plain KD (each optimizer of the grid) and a pure evosax ES, "
                        "each with EV3's wall time")
    g.add_argument("--baseline-seconds", type=_positive_float, default=None, metavar="SECONDS",
                   help="wall time of each baseline; default: EV3's own wall time (the fair "
                        "comparison; set it only for quick checks)")
    g.add_argument("--es", default=_DEFAULTS.es_algorithm, metavar="ALGO",
                   help="evosax algorithm of the ES baseline (Open_ES, CMA_ES, SNES, ...)")
    g.add_argument("--kd-loss", default=_DEFAULTS.kd_loss, choices=list(MIXTURES),
                   help="loss of the KD baselines (EV3's own gradient sources use all of "
                        "them): KL at T=4 (kl_t4, the best on digits), KL at T=1, reverse KL at "
                        "T=2 (the best on hard:20000), logit MSE, cross-entropy, or KL+CE")
    g.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="save the EV3 state every N steps under OUT")
    g.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the EV3 run checkpointed in DIR")


def main(args: argparse.Namespace) -> int:
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1), got {args.alpha}")
    config = DistillConfig(
        data=args.data,
        label=args.label,
        metrics=tuple(args.metric or ("accuracy",)),
        constraints=tuple(args.constraint),
        steps=args.steps,
        time_budget=args.time_budget,
        student_hidden=tuple(args.student_hidden),
        grow=args.grow,
        grow_kind=args.grow_kind,
        patience=args.patience,
        population_size=args.population,
        alpha=args.alpha,
        correction=args.correction,
        accept=args.accept,
        certify=args.certify,
        tie_examples=args.tie_examples,
        rollout_steps=args.rollout_steps,
        seed=args.seed,
        out=args.out,
        baselines=args.baselines,
        baseline_seconds=args.baseline_seconds,
        es_algorithm=args.es,
        kd_loss=args.kd_loss,
        teacher=args.teacher,
        teacher_epochs=args.teacher_epochs,
        progress=not args.quiet,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    distill(config)
    return 0
