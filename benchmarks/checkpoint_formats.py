"""ev3evo's single-file checkpoints against orbax-checkpoint's StandardCheckpointer.

    OPENBLAS_NUM_THREADS=1 python benchmarks/checkpoint_formats.py

Two states: a small EV3 state (gradient rollouts with adam, an evosax SNES source, gaussian
mutations: optax, evosax and allocation states, typed keys) and a 4 MiB pytree of float32
matrices. For each, the mean wall time of a save (orbax: ``save`` + ``wait_until_finished``, so
both are durable when the call returns) and of a restore, and the files and bytes one
checkpoint takes. orbax gets the state with its keys as raw key data (it has no field for the
run's history, metadata, fingerprint or host data, which ev3evo's file also carries).
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ev3evo
from ev3evo.explore.evosax import evosax_source
from ev3evo.io import load_checkpoint, save_checkpoint


def ev3_state():
    x = jax.random.normal(jax.random.key(0), (64, 3))
    batch = {"x": x, "y": (x[:, 0] > 0).astype(jnp.int32)}
    apply = lambda p, x: jnp.stack([x @ p["w"], -(x @ p["w"])], -1) + p["b"]
    engine = ev3evo.EV3(
        [ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)], [optax.adam(0.05)],
                                  steps=2, batch_size=16),
         evosax_source("SNES", 4, init_std=0.1), ev3evo.gaussian(3, sigma=0.1)],
        [ev3evo.metrics.neg_loss(apply)], allocation=ev3evo.Allocation(population_size=6))
    params = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    return engine, ev3evo.run(engine, jax.random.key(5), params, batch, batch, 2).state


def big_state():
    rng = np.random.default_rng(0)
    tree = {f"l{i}": jnp.asarray(rng.normal(size=(256, 256)), jnp.float32) for i in range(16)}
    return None, {**tree, "step": jnp.int32(0)}


def _folder_size(path: str) -> tuple[int, int]:
    files = [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
    return len(files), sum(os.path.getsize(f) for f in files)


def measure(engine, state, repeats: int = 10) -> dict:
    import orbax.checkpoint as ocp

    ours = tempfile.mkdtemp()
    t = time.perf_counter()
    for _ in range(repeats):
        path = save_checkpoint(ours, state, engine=engine, keep=1)
    save = (time.perf_counter() - t) / repeats
    t = time.perf_counter()
    for _ in range(repeats):
        load_checkpoint(ours, state, engine=engine)
    load = (time.perf_counter() - t) / repeats
    raw = jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x, state)
    orbax_dir, saver = tempfile.mkdtemp(), ocp.StandardCheckpointer()
    t = time.perf_counter()
    for i in range(repeats):
        saver.save(os.path.join(orbax_dir, f"s{i}"), raw)
        saver.wait_until_finished()
    o_save = (time.perf_counter() - t) / repeats
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, raw)
    t = time.perf_counter()
    for i in range(repeats):
        saver.restore(os.path.join(orbax_dir, f"s{i}"), abstract)
    o_load = (time.perf_counter() - t) / repeats
    saver.close()
    files, size = _folder_size(os.path.join(orbax_dir, "s0"))
    return {"ev3evo": (save, load, 1, os.path.getsize(path)), "orbax": (o_save, o_load, files, size)}


def main():
    for label, make in (("EV3 state", ev3_state), ("4 MiB pytree", big_state)):
        engine, state = make()
        rows = measure(engine, state)
        print(f"{label} ({len(jax.tree.leaves(state))} leaves)")
        for name, (save, load, files, size) in rows.items():
            print(f"  {name:7s} save {save * 1e3:7.1f} ms  restore {load * 1e3:7.1f} ms  "
                  f"{files:3d} file(s) {size:>10,d} bytes")
        ratio = rows["orbax"][0] / rows["ev3evo"][0]
        print(f"  orbax save / ev3evo save: {ratio:.1f}x")


if __name__ == "__main__":
    main()
