"""The population axis sharded over 4 CPU devices gives the single-device results exactly.

``--xla_force_host_platform_device_count`` must be set before JAX initializes, so the sharded
run happens in a subprocess; the main pytest process keeps its single device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo
from ev3evo import parallel

WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np, optax
    import ev3evo
    from ev3evo import parallel

    def apply(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

    k = jax.random.key(0)
    x = jax.random.normal(k, (96, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32) + (x[:, 2] > 1).astype(jnp.int32)
    train, val = {"x": x[:64], "y": y[:64]}, {"x": x[64:], "y": y[64:]}
    params = {"w1": 0.3 * jax.random.normal(jax.random.key(1), (6, 5)), "b1": jnp.zeros(5),
              "w2": 0.3 * jax.random.normal(jax.random.key(2), (5, 3))}

    def engine(mesh):
        return ev3evo.EV3(
            sources=[ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)],
                                              [optax.sgd(0.3)], steps=2, repeats=4,
                                              batch_size=8),
                     ev3evo.gaussian(4, sigma=0.05)],
            metrics=[ev3evo.metrics.accuracy(apply), ev3evo.metrics.neg_loss(apply)], mesh=mesh,
            allocation=ev3evo.Allocation(population_size=7))

    out = {"devices": len(jax.devices())}
    mesh = parallel.population_mesh()
    for label, m in (("single", None), ("sharded", mesh)):
        e = engine(m)
        r = ev3evo.run(e, jax.random.key(7), params, train, val, steps=4)
        leaves = [np.asarray(a).tolist() for a in jax.tree.leaves(r.state)]
        out[label] = {"history": [{k: v for k, v in h.items() if k != "seconds"}
                                  for h in r.history], "leaves": leaves}
        if m is not None:
            leaf = jax.tree.leaves(r.state)[0]
            out["out_devices"] = len(leaf.sharding.device_set)
            out["replicated"] = bool(leaf.sharding.is_fully_replicated)
            st = e.init(jax.random.key(3), params)
            hlo = e.step.lower(jax.random.key(1), st, train, val).as_text()
            out["hlo_split"] = 'sharding_constraint' in hlo and '{"population"}' in hlo
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded_result(tmp_path_factory):
    script = tmp_path_factory.mktemp("sharding") / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_four_devices_and_population_split(sharded_result):
    assert sharded_result["devices"] == 4
    assert sharded_result["out_devices"] == 4  # outputs live on all 4 devices...
    assert sharded_result["replicated"]  # ...as full copies
    assert sharded_result["hlo_split"]  # and the step splits the population 4 ways


def _values(record):
    return [record[k][m] for k in ("current", "stable", "winner") for m in sorted(record[k])]


def test_sharded_run_equals_single_device_run(sharded_result):
    """Same decisions and bit-identical models; metric means equal up to float32 rounding.

    Each candidate's scores are computed by the same operations on one device as on four,
    and the parameters come out bit for bit the same. A metric's *mean* over the examples is
    a float32 sum whose order XLA picks per layout: with the arms split 4 ways the order
    differs, so a non-integer mean (``neg_loss``) can move by an ulp. Counts (accuracy) are
    exact. The gate's decisions are identical.
    """
    single, sharded = sharded_result["single"], sharded_result["sharded"]
    assert len(single["history"]) == len(sharded["history"]) == 5  # the start and 4 steps
    start1, start2 = single["history"][0], sharded["history"][0]  # the models a run starts from
    assert start1["allocation"] == start2["allocation"]
    for k in ("current", "stable"):
        np.testing.assert_allclose(list(start1[k].values()), list(start2[k].values()), rtol=1e-6)
    assert any(h["accepted"] for h in single["history"])  # the comparison is not vacuous
    for h1, h2 in zip(single["history"][1:], sharded["history"][1:]):
        for k in ("step", "accepted", "certified", "rolled_back", "winner_source",
                  "allocation", "num_valid", "num_invalid"):
            assert h1[k] == h2[k], (h1["step"], k)
        for k in ("current", "stable", "winner"):
            assert h1[k]["accuracy"] == h2[k]["accuracy"]
        np.testing.assert_allclose(_values(h1), _values(h2), rtol=1e-6, atol=0)
        np.testing.assert_allclose(h1["pvalue"], h2["pvalue"], rtol=1e-5, atol=1e-7)
    assert sharded["leaves"] == single["leaves"]  # every parameter and state leaf, exactly


def test_mesh_argument_errors():
    apply = lambda p, x: x @ p["w"]
    metric = ev3evo.metrics.accuracy(apply)
    with pytest.raises(TypeError, match="Mesh"):
        ev3evo.EV3([ev3evo.gaussian(2, 0.1)], [metric], mesh="cpu")
    two_axes = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, -1), ("a", "b"))
    with pytest.raises(ValueError, match="exactly one axis"):
        ev3evo.EV3([ev3evo.gaussian(2, 0.1)], [metric], mesh=two_axes)
    with pytest.raises(ValueError, match="at least one device"):
        parallel.population_mesh([])


def test_one_device_mesh_runs_in_process():
    apply = lambda p, x: x @ p["w"]
    batch = {"x": jnp.eye(4), "y": jnp.arange(4) % 2}
    mesh = parallel.population_mesh()
    engine = ev3evo.EV3([ev3evo.gaussian(4, sigma=0.5)], [ev3evo.metrics.accuracy(apply)], mesh=mesh)
    state = parallel.replicate(engine.init(jax.random.key(0), {"w": jnp.zeros((4, 2))}), mesh)
    state, info = engine.step(jax.random.key(1), state, batch, batch)
    assert int(info.step) == 1
    assert state.current["w"].sharding.is_fully_replicated
