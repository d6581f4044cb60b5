"""A short EV3 run on scikit-learn's digits: a tanh MLP, assessed by held-out accuracy.

The problem (the data splits, the MLP and its population rule) is importable by path, e.g.
from a benchmark or a test::

    sys.path.insert(0, "examples")
    from digits_mlp import digits_splits, mlp_apply, mlp_init

Run it as a script for the EV3 run (``--steps``, ``--hidden``, ``--seed``)::

    python examples/digits_mlp.py --steps 60
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ev3evo
from ev3evo.assess.population import dense_population_logits, with_population_rule


def digits_splits(seed: int = 0):
    """Digits scaled to [0, 1], split 60/20/20 into train/validation/test with ``seed``."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(x))
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    pick = lambda idx: {"x": jnp.asarray(x[idx]), "y": jnp.asarray(y[idx], jnp.int32)}
    return pick(perm[:a]), pick(perm[a:b]), pick(perm[b:])


def mlp_forward(params, x):
    """One tanh MLP ``{"w1", "b1", "w2", "b2"}`` on inputs ``x`` ``(N, D)``: logits ``(N, C)``."""
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def mlp_population_forward(params, x):
    """:func:`mlp_forward` of a stacked population on shared ``x``: logits ``(P, N, C)``."""
    layers = [(params["w1"], params["b1"]), (params["w2"], params["b2"])]
    return dense_population_logits(layers, x, jnp.tanh)


#: :func:`mlp_forward`, evaluated feature-major when vmapped over a population (same values
#: and gradients; see :mod:`ev3evo.assess.population`).
mlp_apply = with_population_rule(mlp_forward, mlp_population_forward)


def mlp_init(key, sizes=(64, 8, 10)):
    """Initial parameters of a ``sizes = (inputs, hidden, classes)`` MLP."""
    k1, k2 = jax.random.split(key)
    d, h, c = sizes
    return {
        "w1": jax.random.normal(k1, (d, h)) / np.sqrt(d),
        "b1": jnp.zeros(h),
        "w2": jax.random.normal(k2, (h, c)) / np.sqrt(h),
        "b2": jnp.zeros(c),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="EV3 steps (default 60)")
    p.add_argument("--hidden", type=int, default=8, help="hidden units of the MLP (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    if args.steps <= 0 or args.hidden <= 0:
        p.error("--steps and --hidden must be positive")
    train, val, test = digits_splits(args.seed)
    key = jax.random.key(args.seed)
    params = mlp_init(key, (64, args.hidden, 10))
    ce = ev3evo.losses.cross_entropy
    engine = ev3evo.EV3(
        sources=[
            ev3evo.gradient_rollouts(
                [ce(mlp_apply), ce(mlp_apply, label_smoothing=0.1)],
                [optax.sgd(0.3, momentum=0.9), optax.adam(0.01)],
                steps=10,
                batch_size=128,
            ),
            ev3evo.gaussian(8, sigma=0.02),
            ev3evo.cauchy(8, scale=0.005),
        ],
        metrics=[ev3evo.metrics.accuracy(mlp_apply), ev3evo.metrics.macro_f1(mlp_apply, 10)],
        allocation=ev3evo.Allocation(population_size=12),
    )
    result = ev3evo.run(engine, key, params, train, val, args.steps,
                        callbacks=[ev3evo.ProgressBar(args.steps)])
    acc = ev3evo.metrics.accuracy(mlp_apply)
    test_acc = float(ev3evo.metrics.value(acc, acc.stats(result.stable, test)))
    first, last = result.history[0]["stable"], result.history[-1]["stable"]
    print(f"steps {result.steps} in {result.seconds:.1f}s, status {result.status}")
    print(f"validation accuracy (stable): {first['accuracy']:.4f} -> {last['accuracy']:.4f}")
    print(f"test accuracy (stable): {test_acc:.4f}")
    wins = {n: int(w) for n, w in zip(engine.source_names, result.state.allocation.wins)}
    print(f"accepted winners per source: {wins}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
