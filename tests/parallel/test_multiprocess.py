"""Multi-controller JAX: two local processes run one EV3 program with the population sharded
over the devices of both, and agree on every step.

Each process has 2 CPU devices (4 in all), joins over loopback with
``ev3evo.parallel.initialize`` and runs the same seeded run; the test compares their per-step
records and a digest of the models after every step. Bounded in time; both processes are
killed if anything hangs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

# two processes joined by jax.distributed, each compiling the run: `make test-all` (in-process
# sharding over four devices, tests/parallel/test_sharding.py, stays in `make test`)
pytestmark = pytest.mark.slow

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp, numpy as np, optax
    import ev3evo
    from ev3evo import parallel

    # `import ev3evo` joined the run already (EV3EVO_* are set); a second call is a no-op
    parallel.initialize()

    def apply(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

    k = jax.random.key(0)
    x = jax.random.normal(k, (96, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32) + (x[:, 2] > 1).astype(jnp.int32)
    train, val = {"x": x[:64], "y": y[:64]}, {"x": x[64:], "y": y[64:]}
    params = {"w1": 0.3 * jax.random.normal(jax.random.key(1), (6, 5)), "b1": jnp.zeros(5),
              "w2": 0.3 * jax.random.normal(jax.random.key(2), (5, 3))}
    mesh = parallel.population_mesh()
    engine = ev3evo.EV3(
        sources=[ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)],
                                          [optax.sgd(0.3)], steps=2, repeats=4,
                                          batch_size=8),
                 ev3evo.gaussian(4, sigma=0.05)],
        metrics=[ev3evo.metrics.accuracy(apply), ev3evo.metrics.neg_loss(apply)], mesh=mesh,
        allocation=ev3evo.Allocation(population_size=7))

    def digest(tree):
        h = hashlib.sha256()
        for leaf in jax.tree.leaves(tree):
            h.update(np.asarray(leaf).tobytes())
        return h.hexdigest()

    class Digests(ev3evo.Callback):
        def on_step(self, record, state, engine):
            record["params_sha"] = digest(state.current)
            record["stable_sha"] = digest(state.stable)

    result = ev3evo.run(engine, jax.random.key(7), params, train, val, steps=4,
                        callbacks=[Digests()])
    out = {"info": parallel.describe(),
           "history": [{k: v for k, v in h.items() if k != "seconds"} for h in result.history],
           "sharded_over": len(jax.tree.leaves(result.state)[0].sharding.device_set)}
    print("RESULT" + json.dumps(out), flush=True)
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    script = tmp_path_factory.mktemp("multiprocess") / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(
            os.environ,
            OPENBLAS_NUM_THREADS="1",
            EV3EVO_COORDINATOR=f"127.0.0.1:{port}",
            EV3EVO_NUM_PROCESSES="2",
            EV3EVO_PROCESS_ID=str(i),
        )
        env.pop("XLA_FLAGS", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:  # never leave a process behind (a hung peer waits forever)
            if p.poll() is None:
                p.kill()
                p.communicate()
    results = []
    for i, (rc, out, err) in enumerate(outputs):
        assert rc == 0, f"process {i} failed:\n{err[-3000:]}"
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
        results.append(json.loads(line[len("RESULT") :]))
    return results


def test_both_processes_see_all_four_devices(two_processes):
    for i, r in enumerate(two_processes):
        assert r["info"]["process_index"] == i
        assert r["info"]["process_count"] == 2
        assert len(r["info"]["local_devices"]) == 2
        assert len(r["info"]["devices"]) == 4
        assert r["sharded_over"] == 4  # the state lives on the devices of both processes


def test_processes_agree_on_every_step(two_processes):
    a, b = (r["history"] for r in two_processes)
    assert len(a) == len(b) == 5  # the models a run starts from, then 4 steps
    assert any(h["accepted"] for h in a)  # there are accepted updates to agree on
    assert a == b  # records, decisions, metric values and model digests, step by step
    assert len({h["params_sha"] for h in a}) > 1  # the digests do track the model
