"""Shared fixtures: tiny problems that compile fast (a digits MLP, a linear toy problem).

OpenBLAS's threads collapse when the CPU is shared (pytest-xdist workers, CLI subprocesses:
numpy and pycma steps become 30-100x slower), so one thread is forced before numpy or jax is
imported. The tests are dominated by XLA compilation, not by running the programs, so LLVM's
backend optimizations are turned off. Set the level in ``XLA_FLAGS`` to override (``make test``
runs the gate's simulations, which run longer than they compile, with level 2).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import signal

# A shell starts background jobs with SIGINT ignored, and children inherit it: the signal tests
# (and the CLI subprocesses they start) expect Python's default handler, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _registry import example_problem


def mlp_apply(params, x):
    """A one-hidden-layer tanh MLP."""
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def mlp_params(sizes=(64, 4, 10), seed=0):
    """Initial MLP parameters drawn with numpy (building them compiles nothing)."""
    rng = np.random.default_rng(seed)
    d, h, c = sizes
    return {
        "w1": jnp.asarray(rng.normal(size=(d, h)) / np.sqrt(d), jnp.float32),
        "b1": jnp.zeros(h, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(h, c)) / np.sqrt(h), jnp.float32),
        "b2": jnp.zeros(c, jnp.float32),
    }


@pytest.fixture(scope="session")
def digits():
    """Digits in [0, 1] split into ``train`` (1000), ``val`` (400) and ``test`` (rest) dicts."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    pick = lambda idx: {"x": jnp.asarray(x[idx]), "y": jnp.asarray(y[idx], jnp.int32)}
    return {"train": pick(perm[:1000]), "val": pick(perm[1000:1400]), "test": pick(perm[1400:])}


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """``(apply, params, train, val)`` for a 64-4-10 tanh MLP on digits."""
    return mlp_apply, mlp_params(), digits["train"], digits["val"]


@pytest.fixture(scope="session")
def toy():
    """The registry's toy linear problem (:func:`_registry.example_problem`)."""
    return example_problem()


def finite_tree(tree) -> bool:
    """True when every inexact leaf of ``tree`` is finite."""
    return all(
        bool(np.all(np.isfinite(np.asarray(x))))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    )


def no_nan_tree(tree) -> bool:
    """True when no inexact leaf of ``tree`` holds a NaN (infinities are allowed)."""
    return not any(
        bool(np.any(np.isnan(np.asarray(x))))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    )


def same_structure(a, b) -> bool:
    """Same treedef and the same shape and dtype at every leaf."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        jnp.shape(x) == jnp.shape(y) and jnp.result_type(x) == jnp.result_type(y)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def pytest_terminal_summary(terminalreporter):
    """Prints the false-certification rate of every gate configuration simulated in the run
    (``tests/adapt/test_gate.py`` records them), beside alpha and the power it measured."""
    rows = [value for reports in terminalreporter.stats.values() for r in reports
            if getattr(r, "when", None) == "call"
            for name, value in getattr(r, "user_properties", ()) if name == "false_certification"]
    if not rows:
        return
    terminalreporter.section("simulated false-certification rates")
    width = max(len(row["gate"]) for row in rows)
    terminalreporter.write_line(f"{'gate':<{width}}  false cert.  alpha  power  (gain)")
    for row in sorted(rows, key=lambda row: row["gate"]):
        terminalreporter.write_line(
            f"{row['gate']:<{width}}  {row['rate']:11.4f}  {row['alpha']:5.2f}  "
            f"{row['power']:5.3f}  ({row['gain']})")
    terminalreporter.write_line("(each rate is a Monte-Carlo estimate; a test fails when it "
                                "exceeds alpha by more than 3 of its standard deviations)")
