"""``ev3evo demo``: a short EV3 run on scikit-learn's digits, assessed by held-out accuracy."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import losses, metrics
from .adapt.allocation import Allocation
from .assess.population import dense_population_logits, with_population_rule
from .callbacks import ProgressBar
from .explore.gradient import gradient_rollouts
from .explore.mutation import cauchy, gaussian
from .loop import EV3
from .run import run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=60, help="EV3 steps (default 60)")
    p.add_argument("--hidden", type=int, default=8, help="hidden units of the MLP (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


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
    k1, k2 = jax.random.split(key)
    d, h, c = sizes
    return {
        "w1": jax.random.normal(k1, (d, h)) / np.sqrt(d),
        "b1": jnp.zeros(h),
        "w2": jax.random.normal(k2, (h, c)) / np.sqrt(h),
        "b2": jnp.zeros(c),
    }


def main(args) -> int:
    if args.steps <= 0 or args.hidden <= 0:
        raise ValueError("--steps and --hidden must be positive")
    train, val, test = digits_splits(args.seed)
    key = jax.random.key(args.seed)
    params = mlp_init(key, (64, args.hidden, 10))
    engine = EV3(
        sources=[
            gradient_rollouts(
                [losses.cross_entropy(mlp_apply), losses.cross_entropy(mlp_apply, label_smoothing=0.1)],
                [optax.sgd(0.3, momentum=0.9), optax.adam(0.01)],
                steps=10,
                batch_size=128,
            ),
            gaussian(8, sigma=0.02),
            cauchy(8, scale=0.005),
        ],
        metrics=[metrics.accuracy(mlp_apply), metrics.macro_f1(mlp_apply, 10)],
        allocation=Allocation(population_size=12),
    )
    result = run(engine, key, params, train, val, args.steps, callbacks=[ProgressBar(args.steps)])
    acc = metrics.accuracy(mlp_apply)
    test_acc = float(metrics.value(acc, acc.stats(result.stable, test)))
    first, last = result.history[0]["stable"], result.history[-1]["stable"]
    print(f"steps {result.steps} in {result.seconds:.1f}s, status {result.status}")
    print(f"validation accuracy (stable): {first['accuracy']:.4f} -> {last['accuracy']:.4f}")
    print(f"test accuracy (stable): {test_acc:.4f}")
    wins = {n: int(w) for n, w in zip(engine.source_names, result.state.allocation.wins)}
    print(f"accepted winners per source: {wins}")
    return 0
