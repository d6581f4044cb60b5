"""Host metrics on executors: serial, threads, the default process pool and a Dask cluster.

The scoring functions are module-level so that spawned worker processes can unpickle them.
"""

from __future__ import annotations

import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo
from ev3evo.assess.evaluate import evaluate_population


def apply(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]


def np_correct(params, batch):
    """The accuracy metric in plain numpy (what a scikit-learn scorer would compute)."""
    logits = np.tanh(batch["x"] @ params["w1"]) @ params["w2"]
    return np.argmax(logits, axis=-1) == batch["y"]


CALLS: list[str] = []  # thread names of the calls of counted_correct (in-process executors)


def counted_correct(params, batch):
    CALLS.append(threading.current_thread().name)
    return np_correct(params, batch)


def worker_pid(params, batch):
    return np.full(len(batch["y"]), os.getpid(), np.float32)


def fails(params, batch):
    raise OSError("external scorer crashed")


def wrong_shape(params, batch):
    return np.zeros(3)


@pytest.fixture(scope="module")
def problem():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (80, 5))
    y = (x[:, 0] - x[:, 1] > 0).astype(jnp.int32) + (x[:, 2] > 0.8).astype(jnp.int32)
    params = {"w1": 0.5 * jax.random.normal(k2, (5, 4)), "w2": 0.5 * jax.random.normal(k3, (4, 3))}
    population = jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.key(9), (6, *a.shape)), params
    )
    return {"train": {"x": x[:48], "y": y[:48]}, "val": {"x": x[48:], "y": y[48:]},
            "params": params, "population": population}


def _jit_eval(metric, population, batch):
    return jax.jit(lambda p, b: evaluate_population([metric], p, b)[0])(population, batch)


def test_serial_and_thread_match_jax_metric_under_vmap(problem):
    ref = _jit_eval(ev3evo.metrics.accuracy(apply), problem["population"], problem["val"])
    for executor in ("serial", "thread"):
        host = ev3evo.host_metric(np_correct, "acc", executor=executor, chunks=4)
        assert host.host and host.decomposable
        got = _jit_eval(host, problem["population"], problem["val"])
        assert got.shape == ref.shape == (6, 32, 1)
        np.testing.assert_array_equal(got, ref)


def test_nested_vmap_and_single_member(problem):
    host = ev3evo.host_metric(np_correct, "acc", executor="serial")
    jax_acc = ev3evo.metrics.accuracy(apply)
    pops = jax.tree.map(lambda a: jnp.stack([a, a[::-1]]), problem["population"])  # (2, 6, ...)
    nested = lambda m: jax.jit(jax.vmap(jax.vmap(m.stats, (0, None)), (0, None)))
    got = nested(host)(pops, problem["val"])
    assert got.shape == (2, 6, 32, 1)
    np.testing.assert_array_equal(got, nested(jax_acc)(pops, problem["val"]))
    one = host.stats(problem["params"], problem["val"])  # outside vmap: one member
    np.testing.assert_array_equal(one, jax_acc.stats(problem["params"], problem["val"]))


def test_default_executor_is_a_spawned_process_pool(problem):
    host = ev3evo.host_metric(worker_pid, "pid")  # executor=None: the local process pool
    pids = np.asarray(_jit_eval(host, problem["population"], problem["val"]))[:, 0, 0]
    assert len(pids) == 6
    assert os.getpid() not in set(pids.astype(int).tolist())  # scored in other processes
    pool = ev3evo.assess.host.default_executor()
    assert pool._mp_context.get_start_method() == "spawn"  # never fork a JAX process


def test_errors_name_the_metric(problem):
    with pytest.raises(Exception, match="host metric 'ext' failed: OSError: external scorer"):
        jax.block_until_ready(
            _jit_eval(ev3evo.host_metric(fails, "ext", executor="serial"),
                      problem["population"], problem["val"])
        )
    with pytest.raises(Exception, match=r"host metric 'bad' returned shape \(3,\) for 32"):
        jax.block_until_ready(
            _jit_eval(ev3evo.host_metric(wrong_shape, "bad", executor="serial"),
                      problem["population"], problem["val"])
        )
    with pytest.raises(TypeError, match="executor must be"):
        ev3evo.host_metric(np_correct, "acc", executor=42)
    with pytest.raises(ValueError, match="aggregate"):
        ev3evo.host_metric(np_correct, "acc", num_stats=2)
    with pytest.raises(TypeError, match="callable"):
        ev3evo.host_metric("accuracy", "acc")


def _run(metric, problem):
    engine = ev3evo.EV3(
        sources=[ev3evo.gaussian(6, sigma=0.3)], metrics=[metric],
        gate=ev3evo.Gate(alpha=0.3, correction="none"))
    r = ev3evo.run(engine, jax.random.key(3), problem["params"], problem["train"],
                   problem["val"], steps=4)
    return [{k: v for k, v in h.items() if k not in ("seconds", "current", "stable", "winner")}
            | {"values": [h[k] and list(h[k].values()) for k in ("current", "stable", "winner")]}
            for h in r.history], r.state


def test_dask_cluster_gives_the_same_decisions_as_the_jax_metric(problem):
    distributed = pytest.importorskip("distributed")
    jax_hist, jax_state = _run(ev3evo.metrics.accuracy(apply), problem)
    # An in-process cluster (no ports opened, nothing left behind); a real cluster differs
    # only in the address given to Client.
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        executor = client.get_executor()
        CALLS.clear()
        metric = ev3evo.host_metric(counted_correct, "accuracy", executor)
        host_hist, host_state = _run(metric, problem)
    # 6 candidates + current + stable per step; Dask runs a task whose inputs it has already
    # seen once (pure tasks are keyed by a hash of their inputs), hence the range.
    assert 4 * 6 <= len(CALLS) <= 4 * (6 + 2)
    assert threading.main_thread().name not in CALLS  # all of them on the Dask worker
    assert any(h["accepted"] for h in jax_hist)
    assert host_hist == jax_hist  # every decision and every metric value
    for a, b in zip(jax.tree.leaves(jax_state.current), jax.tree.leaves(host_state.current)):
        np.testing.assert_array_equal(a, b)


def test_functions_a_process_pool_cannot_send_are_refused_when_built():
    """A lambda or a nested function would fail at the first step, deep inside JAX's callback
    (a PicklingError in a worker); refused at construction with the two ways out."""
    import functools

    def nested(params, batch):
        return np_correct(params, batch)

    for fn in (lambda p, b: np_correct(p, b), nested, functools.partial(lambda p, b: 0, 1)):
        with pytest.raises(TypeError, match=r"cannot be sent to the process pool's workers .*"
                                            r"module level.*executor='thread'"):
            ev3evo.host_metric(fn, "acc")
    ev3evo.host_metric(np_correct, "acc")  # module-level: fine
    ev3evo.host_metric(functools.partial(np_correct), "acc")
    ev3evo.host_metric(lambda p, b: np_correct(p, b), "acc", executor="thread")  # no pickling


def test_a_function_typed_into_an_interactive_session_is_refused_for_the_process_pool():
    import subprocess
    import sys

    code = ("import ev3evo\n"
            "def score(params, batch):\n    return batch['y']\n"
            "try:\n    ev3evo.host_metric(score, 'acc')\n"
            "except TypeError as e:\n    print(e)\n"
            "ev3evo.host_metric(score, 'acc', executor='thread')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}).stdout
    assert out.startswith("host metric 'acc': its function 'score' is defined in a main "
                          "program without a file"), out
