"""Kill-and-resume: SIGKILL a run at random moments, resume each time, compare exactly.

A run with a checkpoint after every step is started in a child process, killed with SIGKILL
at a random moment after it signals readiness (imports and compilation done), and started
again with ``resume=True`` on the same directory, more than 20 times (fixed seed). Some kills
are aimed at the checkpoint write itself: after the temporary file is complete but before the
rename, after a torn (half-written) temporary file, and after the rename but before the
directory ``fsync`` and the pruning of old checkpoints. After every kill the newest checkpoint
must be intact and its history must be a prefix of the uninterrupted run's; at the end the
resumed run's final state and history must equal the uninterrupted run's bit for bit.

Child processes come from a ``forkserver`` that imported jax once (a fork taken before JAX
starts its threads), and they share a persistent compilation cache, so a restart costs
importing ev3evo, tracing and a cache hit rather than a Python start-up and an XLA compilation.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import time

import numpy as np
import pytest
from _history import untimed

SEED = 3
STEPS = 200
KILLS = 21
MODES = ("random", "before_replace", "random", "torn", "random", "after_replace")


# ----------------------------------------------------------------------------- the child
def _configure_jax(cache_dir: str) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _drift_source(size: int):
    """A small stateful source: its own typed PRNG key, a momentum and a counter in its state.

    Any state that was not restored exactly (the key above all) would change every later
    candidate, so the final comparison checks the restore of source states too.
    """
    import jax
    import jax.numpy as jnp

    import ev3evo

    def init(key, params):
        return {"key": key, "momentum": jnp.zeros_like(params["w"]), "count": jnp.int32(0)}

    def ask(key, state, params, batch, active):
        del key, batch, active  # the source draws from the key in its own state
        k_next, k_draw = jax.random.split(state["key"])
        w = params["w"] + state["momentum"] + 0.2 * jax.random.normal(k_draw, (size, 3))
        population = {"w": w, "b": jnp.broadcast_to(params["b"], (size, *params["b"].shape))}
        return population, {**state, "key": k_next}

    def tell(key, state, population, feedback):
        best = jnp.argmax(feedback.fitness)
        step = population["w"][best] - feedback.params["w"]
        ok = jnp.isfinite(feedback.fitness[best])
        momentum = jnp.where(ok, 0.5 * state["momentum"] + 0.1 * step, state["momentum"])
        return {**state, "momentum": momentum, "count": state["count"] + 1}

    return ev3evo.Source(init, ask, tell, size, "drift")


def _problem():
    """A tiny problem: 3 weights; a stateful source and gaussian mutations."""
    import jax
    import jax.numpy as jnp
    from _problems import linear_two_class

    import ev3evo

    batch, apply = linear_two_class()

    engine = ev3evo.EV3(
        [_drift_source(3), ev3evo.gaussian(3, sigma=0.1)],
        [ev3evo.metrics.neg_loss(apply)],
        allocation=ev3evo.Allocation(population_size=4),
    )
    params = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    return engine, params, batch, jax.random.key(SEED)


def _patch(mode: str, hit, nth: int) -> None:
    """Makes the ``nth`` checkpoint write of this process stop at a chosen point (and wait)."""

    calls = {"n": 0}

    def stop_here():
        hit.set()
        time.sleep(600)  # the parent kills us here

    if mode == "before_replace":  # the temporary file is complete and fsync'ed, not renamed
        real_replace = os.replace

        def replace(src, dst, **kwargs):
            calls["n"] += 1
            if calls["n"] == nth:
                stop_here()
            return real_replace(src, dst, **kwargs)

        os.replace = replace
    elif mode == "torn":  # half of the temporary file reached the disk
        real_fsync = os.fsync

        def fsync(fd):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                calls["n"] += 1
                if calls["n"] == nth:
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    stop_here()
            return real_fsync(fd)

        os.fsync = fsync
    elif mode == "after_replace":  # renamed, directory not yet fsync'ed, old ones not pruned
        from ev3evo.io import atomic

        real_fsync_dir = atomic.fsync_dir

        def fsync_dir(directory):
            calls["n"] += 1
            if calls["n"] == nth:
                stop_here()
            return real_fsync_dir(directory)

        atomic.fsync_dir = fsync_dir


def _life(directory, cache_dir, steps, ready, hit, mode, nth, out):
    """One process lifetime: resume (or start) the run and go on until done or killed."""
    _configure_jax(cache_dir)
    import jax

    import ev3evo

    engine, params, batch, key = _problem()
    ev3evo.run(engine, key, params, batch, batch, 1)  # compile (a cache hit after the first)
    _patch(mode, hit, nth)
    ready.set()
    t0 = time.perf_counter()
    result = ev3evo.run(
        engine, key, params, batch, batch, steps, checkpoint_dir=directory, resume=True
    )
    seconds = time.perf_counter() - t0
    if out:
        leaves = [
            np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                       else x)
            for x in jax.tree.leaves(jax.device_get(result.state))
        ]
        np.savez(out + ".npz", *leaves)
        with open(out + ".json", "w") as f:
            json.dump({"history": result.history, "seconds": seconds,
                       "steps": result.steps, "status": result.status}, f)


# ----------------------------------------------------------------------------- the test
def _context():
    ctx = multiprocessing.get_context("forkserver")
    # Preload only modules that do not start JAX's runtime: a fork taken after the backend is
    # up (it starts threads) can deadlock. ``import ev3evo`` does start it (evosax creates
    # arrays at import time), so each child imports ev3evo itself.
    ctx.set_forkserver_preload(["jax", "jax.numpy", "optax", "flax.serialization", __name__])
    return ctx


def _start(ctx, directory, cache, mode="random", nth=1, out=None, steps=STEPS):
    ready, hit = ctx.Event(), ctx.Event()
    p = ctx.Process(
        target=_life, args=(directory, cache, steps, ready, hit, mode, nth, out), daemon=True
    )
    p.start()
    return p, ready, hit


def _wait(event, p, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not event.wait(0.05):
        if not p.is_alive():
            return False
        if time.monotonic() > deadline:
            p.kill()
            raise AssertionError("child did not signal in time")
    return True


@pytest.mark.slow  # 21 lives; the real command's kill-and-resume below stays in `make test`
@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    from ev3evo.io import read_checkpoint

    ctx = _context()
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path / "jax-cache")
    rng = np.random.default_rng(SEED)

    # The uninterrupted run (it also fills the compilation cache).
    base_dir = str(tmp_path / "base")
    p, ready, _ = _start(ctx, base_dir, cache, mode="none", out=str(tmp_path / "base"))
    p.join(600)
    assert p.exitcode == 0, "the uninterrupted run failed"
    base = json.load(open(tmp_path / "base.json"))
    assert base["status"] == "finished" and len(base["history"]) == STEPS + 1  # + the start
    base_history = untimed(base["history"])
    base_fp = read_checkpoint(base_dir).fingerprint
    step_time = base["seconds"] / STEPS
    spread = float(np.clip(8 * step_time, 0.01, 1.0))  # ~4 steps per life on average

    run_dir = str(tmp_path / "killed")
    kills, last_step, leftovers, aimed, restarts = 0, 0, 0, 0, []
    while kills < KILLS:
        mode = MODES[kills % len(MODES)]
        nth = int(rng.integers(1, 4))
        t_start = time.monotonic()
        p, ready, hit = _start(ctx, run_dir, cache, mode=mode, nth=nth)
        assert _wait(ready, p), f"life {kills} died before it was ready (exit {p.exitcode})"
        restarts.append(time.monotonic() - t_start)
        if mode == "random":
            time.sleep(float(rng.uniform(0.0, spread)))
        else:
            assert _wait(hit, p), f"life {kills} ({mode}) ended before the aimed moment"
            aimed += 1
        p.kill()  # SIGKILL
        p.join(60)
        assert p.exitcode in (-signal.SIGKILL, 0), p.exitcode
        if p.exitcode == 0:
            pytest.fail("the run finished before enough kills; lower STEPS' pace")
        kills += 1
        leftovers += any(".tmp-" in n for n in os.listdir(run_dir)) if os.path.isdir(run_dir) else 0
        ckpt = read_checkpoint(run_dir)  # intact (no CheckpointWarning: warnings are errors)
        if ckpt is None:
            continue
        assert ckpt.fingerprint == base_fp
        assert ckpt.step >= last_step, "a kill lost a checkpoint that was already complete"
        assert untimed(ckpt.history) == base_history[: ckpt.step + 1]  # the start, then steps
        last_step = ckpt.step
        assert last_step < STEPS - 5, "the run nearly finished during the kill phase"

    # The last life runs to the end.
    p, ready, _ = _start(ctx, run_dir, cache, mode="none", out=str(tmp_path / "resumed"))
    p.join(600)
    assert p.exitcode == 0
    resumed = json.load(open(tmp_path / "resumed.json"))
    assert resumed["status"] == "finished"
    assert untimed(resumed["history"]) == base_history
    a, b = np.load(tmp_path / "base.npz"), np.load(tmp_path / "resumed.npz")
    assert a.files == b.files
    for name in a.files:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])
    final = read_checkpoint(run_dir)
    assert final.step == STEPS and untimed(final.history) == base_history
    print(
        f"\n{kills} SIGKILLs ({aimed} aimed inside checkpoint writes, {leftovers} left a "
        f"temporary file); median restart {np.median(restarts):.2f}s; step {step_time * 1e3:.1f}ms"
    )


# ----------------------------------------------------------------------------- the command line
def _distill(out, *extra, env):
    import subprocess
    import sys

    args = ["distill", "--steps", "4", "--student", "mlp:3", "--population", "8",
            "--teacher-epochs", "1", "--no-baselines", "--quiet", "--seed", "1",
            "--rollout-steps", "50"]
    return subprocess.Popen(
        [sys.executable, "-m", "ev3evo.cli", *args, "--out", str(out), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.timeout(900)
def test_distill_cli_killed_and_resumed_matches_the_uninterrupted_run(tmp_path):
    """``ev3evo distill`` SIGKILLed after a checkpoint, then ``--resume``: identical outcome."""
    from ev3evo.io import checkpoint as ck

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path / "jax-cache")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    # The uninterrupted run and the run to kill start together (two cores).
    a = _distill(a_dir, "--checkpoint-every", "1", env=env)
    b = _distill(b_dir, "--checkpoint-every", "1", env=env)
    deadline = time.monotonic() + 600
    while not ck.list_checkpoints(b_dir / "checkpoints"):
        assert b.poll() is None, b.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(float(np.random.default_rng(SEED).uniform(0.0, 0.2)))
    b.kill()
    b.wait()
    assert b.returncode == -signal.SIGKILL, "the run finished before the kill"
    killed_at = ck.read_checkpoint(b_dir / "checkpoints").step
    out_a = a.communicate(timeout=600)[0]
    assert a.returncode == 0, out_a
    resumed = _distill(b_dir, "--resume", str(b_dir), env=env)
    out_b = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out_b
    final_a = ck.read_document(a_dir / "checkpoints")
    final_b = ck.read_document(b_dir / "checkpoints")
    assert final_a["step"] == final_b["step"] == 4 and killed_at < 4
    assert untimed(final_a["history"]) == untimed(final_b["history"])
    assert final_a["fingerprint"] == final_b["fingerprint"]
    # Every leaf of the run's state, except the gradient sources' "pending" rollout states: a
    # scratch value that the next step's ask overwrites before anything reads it.
    compared = 0
    for i, (name, _, _) in enumerate(final_a["summary"]["tree"]):
        if "pending" in name:
            continue
        np.testing.assert_array_equal(final_a["leaves"][str(i)]["data"],
                                      final_b["leaves"][str(i)]["data"], err_msg=name)
        compared += 1
    assert compared > 30
    summary_a = json.load(open(a_dir / "summary.json"))["methods"]["ev3"]
    summary_b = json.load(open(b_dir / "summary.json"))["methods"]["ev3"]
    assert summary_a["test"] == summary_b["test"]
    history_lines = [json.loads(x) for x in open(b_dir / "history.jsonl")]
    assert [r["step"] for r in history_lines if "step" in r and "event" not in r] == [0, 1, 2, 3, 4]
