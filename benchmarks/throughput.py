"""Throughput benchmarks: ev3evo's compiled, vectorized phases against the reference style.

    python benchmarks/throughput.py [--quick] [--json PATH] [--only assess_cnn ...]

Four measurements, each printed as a ratio measured side by side in this one run:

1. **Explore**: K gradient-rollout candidates (10 inner steps each, a 64-32-10 MLP on
   digits, minibatches of 128) from ``ev3evo.gradient_rollouts`` (one compiled call, ``vmap``
   over candidates, ``lax.scan`` over steps) against the reference style: a Python loop over
   candidates and steps calling a jitted single optimizer step. Next to it, two upper bounds on
   the speed-up of *any* XLA:CPU rollout, measured in the same run: the reference time over
   the time of the step's matrix products alone, and over a minimal rollout (window, forward,
   backward of a trivial loss, SGD: strictly less work than the real step).
2. **Assess**: ``evaluate_population`` (accuracy of P students on B examples, one call) as
   achieved FLOP/s against this machine's dense matmul FLOP/s (a large ``jnp.dot`` measured in
   the same run). FLOPs counted: ``2·P·B·Σ(in·out)`` over the layers' matmuls only. Measured
   twice: on one CPU device (XLA runs the small per-member products largely on one thread),
   and with the population split over one CPU device per core (``shard_map``, what
   ``EV3(mesh=population_mesh())`` does on such a machine), in a subprocess.
3. **Wrapper overhead**: an evosax algorithm driven through ``ev3evo.evosax_source`` against
   the raw evosax ask/tell loop, for the same generations and fitness function.
4. **Scaling**: time per full EV3 step against population size and student width, and peak
   memory (``ru_maxrss`` of a fresh subprocess per configuration); growth exponents are the
   least-squares log-log slopes.

Compile time is excluded everywhere (every function runs once before timing); each figure is
the median of several repeats. Set ``OPENBLAS_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The digits MLP problem lives in examples/digits_mlp.py.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from digits_mlp import digits_splits, mlp_apply, mlp_forward, mlp_init

import ev3evo
from ev3evo.assess.evaluate import evaluate_population
from ev3evo.explore import sampling


# ----------------------------------------------------------------------------- helpers
def timeit(fn, *args, repeats: int = 5, min_time: float = 0.05) -> float:
    """Median seconds per call of ``fn(*args)`` after one warm-up call (compilation)."""
    jax.block_until_ready(fn(*args))
    # calls per repeat so that one repeat lasts at least min_time (short calls are noisy)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = time.perf_counter() - t0
    number = max(1, int(min_time / max(one, 1e-6)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def compare(fa, fb, repeats: int = 5, min_time: float = 0.05) -> tuple[float, float, float]:
    """Times ``fa()`` and ``fb()`` alternately; returns (median a, median b, median of b/a).

    The machine is shared: alternating the two within each repeat exposes both to the same
    load, and the median of the per-repeat ratios is far steadier than a ratio of medians.
    """
    na, nb = (_calls(f, min_time) for f in (fa, fb))
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_clock(fa, na))
        tb.append(_clock(fb, nb))
    ratios = [b / a for a, b in zip(ta, tb)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def _calls(fn, min_time):
    jax.block_until_ready(fn())  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))


def _clock(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / number


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "load_average_start": list(os.getloadavg()),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def mlp_flops(sizes) -> int:
    """Multiply-adds ×2 of one example through the MLP's matmuls."""
    return 2 * sum(a * b for a, b in itertools.pairwise(sizes))


def population(key, params, size, scale=0.05):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [x + scale * jax.random.normal(k, (size, *x.shape)) for x, k in zip(leaves, keys)],
    )


def slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


# ----------------------------------------------------------------------------- 1. explore
def bench_explore(ks, repeats, steps=10, hidden=32, batch_size=128) -> dict:
    train, _, _ = digits_splits(0)
    params = mlp_init(jax.random.key(0), (64, hidden, 10))
    loss = ev3evo.losses.cross_entropy(mlp_apply)
    opt = optax.adam(1e-2)
    grad = jax.grad(loss)
    # matmul FLOPs of one candidate-step: forward (2 layers), dW2, dh, dW1
    step_flops = 2 * batch_size * (2 * 64 * hidden + 3 * hidden * 10)

    @jax.jit
    def ref_step(key, i, params, opt_state, data):
        # the same work as one step of ev3evo's rollout: a minibatch (the same sampler: a window
        # of one shared shuffle), a gradient, an update
        mb = sampling.draw(jax.random.fold_in(key, i), data, batch_size)
        updates, opt_state = opt.update(grad(params, mb), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    prepare = jax.jit(lambda key, batch: sampling.prepare(key, batch, batch_size))

    def reference(key, params, batch, k):
        s0 = opt.init(params)
        data = prepare(key, batch)  # once for all candidates, as ev3evo does
        out = []
        for c in range(k):  # the reference EV3 style: candidates one after another
            p, s = params, s0
            for t in range(steps):
                p, s = ref_step(key, c * steps + t, p, s, data)
            out.append(p)
        return jax.tree.map(lambda *xs: jnp.stack(xs), *out)

    def matmul_floor(k):
        # Only the matrix products every rollout step must compute (forward through both
        # layers, the two weight gradients and the hidden-layer gradient), for k candidates
        # with their own minibatches, scanned over the steps like the real rollout: no
        # activation, loss, optimizer, sampling or checks. Its time is a lower bound on any
        # XLA:CPU implementation of the K rollouts, so t_reference / t_floor bounds the
        # speed-up any such implementation can reach on this machine.
        x = jax.random.normal(jax.random.key(0), (k, batch_size, 64))
        w = (jax.random.normal(jax.random.key(1), (k, 64, hidden)),
             jax.random.normal(jax.random.key(2), (k, hidden, 10)))

        @jax.jit
        def run(x, w):
            def body(w, _):
                w1, w2 = w
                h = jnp.einsum("kbi,kih->kbh", x, w1)
                o = jnp.einsum("kbh,kho->kbo", h, w2)
                dw2 = jnp.einsum("kbh,kbo->kho", h, o)
                dh = jnp.einsum("kbo,kho->kbh", o, w2)
                dw1 = jnp.einsum("kbi,kbh->kih", x, dh)
                return (w1 - 1e-9 * dw1, w2 - 1e-9 * dw2), None

            return jax.lax.scan(body, w, None, length=steps)[0]

        return lambda: run(x, w)

    def minimal_rollout(k):
        # The least work a rollout step can do with this student: a minibatch window, the
        # forward pass through both layers, the backward pass of a trivial loss (the mean
        # logit) and a plain SGD update, vmapped over k candidates and scanned over the steps.
        # The real step does all of this plus a cross-entropy and Adam, so t_reference /
        # t_minimal bounds the speed-up of any XLA:CPU implementation from above.
        data = sampling.prepare(jax.random.key(5), train, batch_size)

        def loss_min(p, mb):
            return jnp.mean(mlp_apply(p, mb["x"]))

        g_min = jax.grad(loss_min)

        @jax.jit
        def run(keys):
            def one(key):
                def body(p, k):
                    g = g_min(p, sampling.draw(k, data, batch_size))
                    return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), None

                return jax.lax.scan(body, params, jax.random.split(key, steps))[0]

            return jax.vmap(one)(keys)

        keys = jax.random.split(jax.random.key(6), k)
        return lambda: run(keys)

    rows = []
    key = jax.random.key(2)
    for k in ks:
        src = ev3evo.gradient_rollouts([loss], [opt], steps=steps, batch_size=batch_size, repeats=k)
        state = src.init(jax.random.key(1), params)
        ask = jax.jit(src.ask)
        active = jnp.ones(k, bool)
        t_ev3, t_ref, speedup = compare(
            lambda a=ask, s=state, m=active: a(key, s, params, train, m)[0],
            lambda k=k: reference(key, params, train, k),
            repeats=repeats,
        )
        t_floor, _, bound = compare(matmul_floor(k), lambda k=k: reference(key, params, train, k),
                                    repeats=repeats)
        t_min, _, min_bound = compare(minimal_rollout(k),
                                      lambda k=k: reference(key, params, train, k), repeats=repeats)
        rows.append({"K": k, "ev3evo_s": t_ev3, "reference_s": t_ref, "speedup": speedup,
                     "per_candidate_step_us": 1e6 * t_ev3 / (k * steps),
                     "reference_per_step_us": 1e6 * t_ref / (k * steps),
                     "matmul_floor_s": t_floor, "speedup_bound": bound,
                     "matmul_floor_gflops": k * steps * step_flops / t_floor / 1e9,
                     "fraction_of_bound": speedup / bound,
                     "minimal_rollout_s": t_min, "speedup_bound_minimal": min_bound})
        print(f"  explore K={k:3d}: ev3evo {t_ev3 * 1e3:8.2f} ms   reference loop "
              f"{t_ref * 1e3:8.2f} ms   speed-up {speedup:6.1f}x   (matmuls alone "
              f"{t_floor * 1e3:.2f} ms, bound {bound:.1f}x; minimal rollout {t_min * 1e3:.2f} "
              f"ms, bound {min_bound:.1f}x)", flush=True)
    return {"rows": rows, "steps": steps, "hidden": hidden, "batch_size": batch_size,
            "step_flops": step_flops}


# ----------------------------------------------------------------------------- 2. assess
def peak_size() -> int:
    """Side of the square matmul that measures the peak: 2048 saturates a CPU; an accelerator
    needs a larger one, or kernel launch time would count against the peak."""
    return 2048 if jax.default_backend() == "cpu" else 8192


def bench_matmul_peak(repeats, n=None) -> dict:
    n = n or peak_size()
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    t = timeit(dot, a, b, repeats=repeats)
    flops = 2 * n**3 / t
    print(f"  matmul peak ({n}x{n} f32 jnp.dot): {flops / 1e9:.1f} GFLOP/s", flush=True)
    return {"n": n, "seconds": t, "flops_per_s": flops}


def bench_assess(ps, bs, repeats, hidden=32, n=None, sharded=False) -> dict:
    """Population evaluation against the matmul peak; ``sharded``: the population split over
    every device (``shard_map``), what ``EV3(mesh=ev3evo.parallel.population_mesh())`` does
    (:func:`ev3evo.parallel.sharded_evaluate`); run in a subprocess with one CPU device per
    core (``--xla_force_host_platform_device_count``). The peak is the same large ``jnp.dot``.
    """
    from ev3evo import parallel

    n = n or peak_size()
    _, val, _ = digits_splits(0)
    params = mlp_init(jax.random.key(0), (64, hidden, 10))
    # the student's apply has a population rule (ev3evo.assess.population); the same MLP as a
    # plain function (mlp_forward) is what a plain vmap of any model gets: timed alongside
    acc = ev3evo.metrics.accuracy(mlp_apply)
    acc_plain = ev3evo.metrics.accuracy(mlp_forward)
    if sharded:
        mesh = parallel.population_mesh()
        compile_eval = lambda m: jax.jit(
            lambda pop, batch: parallel.sharded_evaluate([m], pop, batch, mesh)[0])
        place_batch = lambda b: parallel.replicate(b, mesh)
        place_pop = lambda p: jax.device_put(p, parallel.population_sharding(mesh))
        where = f" on {len(jax.devices())} CPU devices"
    else:
        compile_eval = lambda m: jax.jit(lambda pop, batch: evaluate_population([m], pop, batch)[0])
        place_batch = place_pop = lambda x: x
        where = ""
    evaluate, evaluate_plain = compile_eval(acc), compile_eval(acc_plain)
    rng = np.random.default_rng(0)
    per_example = mlp_flops((64, hidden, 10))
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    rows = []
    for b in bs:
        # digits has 1797 examples: larger batches resample them (the cost is the same)
        idx = rng.integers(0, val["x"].shape[0], b)
        batch = place_batch({"x": val["x"][idx], "y": val["y"][idx]})
        for p in ps:
            pop = place_pop(population(jax.random.key(p), params, p))
            # the peak is re-measured next to every configuration (alternating), so that
            # both see the same load; fraction = (flops/t_eval) / (2n³/t_dot) = ratio · f/2n³
            t_dot, t, ratio = compare(lambda: dot(a, a), lambda p=pop, b=batch: evaluate(p, b),
                                      repeats=repeats)
            flops = p * b * per_example / t
            fraction = (p * b * per_example) / (2 * n**3) / ratio
            # the same predictions (logits agree to float rounding: a near-tie may flip)
            differ = np.mean(np.asarray(evaluate(pop, batch) != evaluate_plain(pop, batch)))
            assert differ < 1e-4, f"population rule disagrees on {differ:.2%} of P={p} B={b}"
            t_plain, _, rel = compare(lambda p=pop, b=batch: evaluate_plain(p, b),
                                      lambda p=pop, b=batch: evaluate(p, b), repeats=repeats)
            speedup = 1.0 / rel  # plain-vmap time / population-rule time
            rows.append({"P": p, "B": b, "seconds": t, "flops_per_s": flops,
                         "peak_flops_per_s": 2 * n**3 / t_dot, "roofline_fraction": fraction,
                         "seconds_plain_vmap": t_plain,
                         "roofline_fraction_plain_vmap": fraction / speedup,
                         "population_rule_speedup": speedup})
            print(f"  assess P={p:4d} B={b:5d}{where}: {t * 1e3:8.2f} ms  {flops / 1e9:6.1f} "
                  f"GFLOP/s  (peak alongside {2 * n**3 / t_dot / 1e9:5.1f})  "
                  f"{100 * fraction:5.1f}% of peak (plain vmap {100 * fraction / speedup:5.1f}%: "
                  f"{speedup:.2f}x)", flush=True)
    return {"rows": rows, "hidden": hidden, "flops_per_example": per_example,
            "devices": len(jax.devices())}


def cnn_flops(arch: dict) -> int:
    """Multiply-adds ×2 of one example through a CNN's convolutions and head (``SAME``
    padding: every output position of a stage costs ``k^d · c_in · c_out``)."""
    shape = arch["in_shape"]
    spatial, c_in = (list(shape), 1) if len(shape) == 1 else (list(shape[:-1]), shape[-1])
    taps = arch["kernel_size"] ** len(spatial)
    flops = 0
    for c, pool, blocks in zip(arch["channels"], arch["pool"], arch["blocks"]):
        positions = int(np.prod(spatial))
        flops += 2 * positions * taps * c_in * c * (1 + 2 * blocks)
        spatial = [d // 2 for d in spatial] if pool else spatial
        c_in = c
    return flops + 2 * int(np.prod(spatial)) * c_in * arch["num_classes"]


def bench_assess_cnn(ps, bs, repeats, channels=(8, 16), n=None,
                     chunk_sizes=("auto", 1, 4, None)) -> dict:
    """Population evaluation of CNN students on digits as 8×8×1 images: any nnx student,
    vmapped through ``nnx.merge`` (no population rule), against the same matmul peak.

    ``chunk_sizes``: the members evaluated together (``evaluate_population``'s
    ``chunk_size``; ``"auto"`` is what the engine uses, the first row per configuration).
    """
    from ev3evo.distillation.student import Student

    n = n or peak_size()
    _, val, _ = digits_splits(0)
    student = Student.build(f"cnn:{','.join(map(str, channels))}", (8, 8, 1), 10, seed=0)
    acc = ev3evo.metrics.accuracy(student.apply)
    per_example = cnn_flops(student.arch)
    rng = np.random.default_rng(0)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    rows = []
    for b in bs:
        idx = rng.integers(0, val["x"].shape[0], b)
        batch = {"x": val["x"][idx].reshape(b, 8, 8, 1), "y": val["y"][idx]}
        for p in ps:
            pop = population(jax.random.key(p), student.initial, p)
            for chunk in chunk_sizes:
                evaluate = jax.jit(lambda pop, batch, chunk=chunk: evaluate_population(
                    [acc], pop, batch, chunk_size=chunk)[0])
                t_dot, t, ratio = compare(lambda: dot(a, a),
                                          lambda p=pop, b=batch, e=evaluate: e(p, b),
                                          repeats=repeats)
                flops = p * b * per_example / t
                fraction = (p * b * per_example) / (2 * n**3) / ratio
                rows.append({"P": p, "B": b, "chunk_size": chunk, "seconds": t,
                             "flops_per_s": flops, "peak_flops_per_s": 2 * n**3 / t_dot,
                             "roofline_fraction": fraction})
                print(f"  assess CNN {student.describe()} P={p:4d} B={b:5d} images, chunks "
                      f"{chunk!s:>4}: {t * 1e3:8.2f} ms  {flops / 1e9:6.1f} GFLOP/s  (peak "
                      f"alongside {2 * n**3 / t_dot / 1e9:5.1f})  {100 * fraction:5.1f}% of peak",
                      flush=True)
    return {"rows": rows, "arch": student.arch, "flops_per_example": per_example}


def run_assess_devices(ps, bs, repeats, hidden=32) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                        f"{os.cpu_count()}").strip()
    cmd = [sys.executable, __file__, "--_assess_devices", json.dumps([ps, bs, repeats, hidden])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"assess across devices failed:\n{proc.stderr[-2000:]}")
    *lines, last = proc.stdout.rstrip().splitlines()
    print("\n".join(lines), flush=True)
    out = json.loads(last)
    return out


# ----------------------------------------------------------------------------- 3. evosax
def bench_evosax(repeats, generations=20) -> dict:
    from evosax.algorithms import algorithms

    out = {}
    _, val, _ = digits_splits(0)
    params = mlp_init(jax.random.key(0), (64, 16, 10))
    acc = jax.vmap(lambda p: jnp.mean(jnp.argmax(mlp_apply(p, val["x"]), -1) == val["y"]))
    cases = {
        # name: (algorithm, population, solution, loss of a population (lower is better))
        "Open_ES_digits_mlp": ("Open_ES", 32, params, lambda pop: -acc(pop)),
        "CMA_ES_sphere_d32": ("CMA_ES", 16, jnp.ones(32),
                              lambda pop: jnp.sum(pop**2, axis=-1)),
    }
    for label, (name, lam, solution, f) in cases.items():
        es = algorithms[name](population_size=lam, solution=solution)
        esp = es.default_params
        f = jax.jit(f)

        def raw(key, es=es, esp=esp, f=f, solution=solution, generations=generations):
            state = es.init(jax.random.fold_in(key, 0), solution, esp)
            for g in range(generations):
                k_ask, k_tell = jax.random.split(jax.random.fold_in(key, g + 1))
                pop, state = es.ask(k_ask, state, esp)
                state, _ = es.tell(k_tell, pop, f(pop), state, esp)
            return state.mean

        src = ev3evo.evosax_source(name, lam, recenter=False)
        ask, tell = jax.jit(src.ask), jax.jit(src.tell)
        active = jnp.ones(src.size, bool)
        no = jnp.zeros(src.size, bool)
        false = jnp.array(False)
        # EV3 fitness is higher-is-better: the negation is compiled with the fitness function,
        # as it is inside an EV3 step (an eager negation would time one more dispatch, which is
        # this loop's cost, not the wrapper's)
        neg_f = jax.jit(lambda pop, f=f: -f(pop))

        def wrapped(key, src=src, ask=ask, tell=tell, neg_f=neg_f, solution=solution,
                    active=active, no=no, false=false, generations=generations):
            state = src.init(jax.random.fold_in(key, 0), solution)
            for g in range(generations):
                k_ask, k_tell = jax.random.split(jax.random.fold_in(key, g + 1))
                pop, state = ask(k_ask, state, solution, None, active)
                state = tell(k_tell, state, pop, ev3evo.Feedback(neg_f(pop), no, solution, false))
            return state.es.mean

        key = jax.random.key(3)
        # the same generations: identical means after 3 generations (over 20, float32
        # rounding differences between the two compiled programs grow chaotically in CMA-ES)
        same = bool(np.allclose(raw(key, generations=3), wrapped(key, generations=3),
                                rtol=1e-5, atol=1e-6))
        t_raw, t_ev3, ratio = compare(lambda r=raw, k=key: r(k), lambda w=wrapped, k=key: w(k),
                                      repeats=repeats)
        out[label] = {"algorithm": name, "population": lam, "generations": generations,
                      "raw_s": t_raw, "ev3evo_s": t_ev3, "ratio": ratio, "same_result": same}
        print(f"  evosax {label}: raw {t_raw * 1e3:8.2f} ms  ev3evo {t_ev3 * 1e3:8.2f} ms  "
              f"ratio {ratio:5.3f}  (same mean after 3 generations: {same})", flush=True)
    return out


# ----------------------------------------------------------------------------- 4. scaling
def scaling_config(pop: int, hidden: int, steps: int) -> dict:
    """One configuration, run in a fresh process (so ru_maxrss is its own peak)."""
    train, val, _ = digits_splits(0)
    params = mlp_init(jax.random.key(0), (64, hidden, 10))
    half = max(1, pop // 2)
    engine = ev3evo.EV3(
        sources=[
            ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(mlp_apply)], [optax.adam(1e-2)],
                                     steps=10, batch_size=128, repeats=half),
            ev3evo.gaussian(pop - half, sigma=0.02),
        ],
        metrics=[ev3evo.metrics.accuracy(mlp_apply)],
    )
    state = engine.init(jax.random.key(1), params)
    t0 = time.perf_counter()
    state, _ = engine.step(jax.random.key(2), state, train, val)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for t in range(steps):
        t0 = time.perf_counter()
        state, _ = engine.step(jax.random.key(3 + t), state, train, val)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    # accelerator memory, where the runtime reports it (GPU/TPU; the CPU client reports none)
    stats = jax.devices()[0].memory_stats() or {}
    device_peak = stats.get("peak_bytes_in_use")
    return {"P": pop, "hidden": hidden, "params": int(n_params), "step_s": statistics.median(times),
            "first_step_s": compile_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_mb": None if device_peak is None else device_peak / 2**20}


def run_config(pop, hidden, steps) -> dict:
    cmd = [sys.executable, __file__, "--_config", str(pop), str(hidden), str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"scaling config P={pop} hidden={hidden} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _device_mb(r) -> str:
    return "" if r["peak_device_mb"] is None else f"  device peak {r['peak_device_mb']:7.1f} MB"


def bench_scaling(pops, hiddens, steps, base_pop=32, base_hidden=32) -> dict:
    by_pop, by_hidden = [], []
    for p in pops:
        r = run_config(p, base_hidden, steps)
        by_pop.append(r)
        print(f"  step P={p:4d} hidden={base_hidden}: {r['step_s'] * 1e3:8.2f} ms/step  "
              f"peak RSS {r['peak_rss_mb']:7.1f} MB{_device_mb(r)}", flush=True)
    for h in hiddens:
        r = run_config(base_pop, h, steps)
        by_hidden.append(r)
        print(f"  step P={base_pop} hidden={h:4d} ({r['params']} params): "
              f"{r['step_s'] * 1e3:8.2f} ms/step  peak RSS {r['peak_rss_mb']:7.1f} MB{_device_mb(r)}",
              flush=True)
    out = {"by_population": by_pop, "by_hidden": by_hidden,
           "exponent_population": slope(pops, [r["step_s"] for r in by_pop]),
           "exponent_params": slope([r["params"] for r in by_hidden],
                                    [r["step_s"] for r in by_hidden])}
    # the exponent over the upper half only (fixed costs weigh less there)
    upper = by_pop[len(by_pop) // 2 - 1:] if len(by_pop) >= 3 else by_pop
    out["exponent_population_upper"] = slope([r["P"] for r in upper], [r["step_s"] for r in upper])
    print(f"  growth: time ∝ P^{out['exponent_population']:.2f} "
          f"(upper range P^{out['exponent_population_upper']:.2f}), "
          f"∝ params^{out['exponent_params']:.2f}", flush=True)
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--only", nargs="*",
                        choices=["explore", "assess", "assess_cnn", "evosax", "scaling"])
    parser.add_argument("--assess-hidden", type=int, default=32, metavar="H",
                        help="hidden width of the assessed students (default 32, the digits "
                        "student; a wider one shows the fraction at higher arithmetic intensity)")
    parser.add_argument("--_config", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_assess_devices", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._config:
        print(json.dumps(scaling_config(*args._config)))
        return 0
    if args._assess_devices:
        ps, bs, repeats, hidden = json.loads(args._assess_devices)
        print(json.dumps(bench_assess(ps, bs, repeats, hidden=hidden, sharded=True)))
        return 0
    only = set(args.only or ["explore", "assess", "assess_cnn", "evosax", "scaling"])
    repeats = 3 if args.quick else 5
    result: dict = {"machine": machine(), "quick": args.quick,
                    "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
    start = time.perf_counter()
    if "explore" in only:
        print("1. explore: gradient rollouts, ev3evo vs a Python loop of jitted steps", flush=True)
        ex = bench_explore([4, 16] if args.quick else [4, 16, 64], repeats)
        result["explore"] = ex
        for r in ex["rows"]:
            result[f"explore_speedup_k{r['K']}"] = r["speedup"]
            result[f"explore_speedup_bound_k{r['K']}"] = r["speedup_bound"]
            result[f"explore_speedup_bound_minimal_k{r['K']}"] = r["speedup_bound_minimal"]
    if "assess" in only:
        print("2. assess: population evaluation against the measured matmul peak", flush=True)
        peak = bench_matmul_peak(repeats)
        ps = [8, 64, 512]
        bs = [256, 1024, 4096]
        if args.quick:
            ps, bs = [8, 64], [256, 1024]
        ev = bench_assess(ps, bs, repeats, hidden=args.assess_hidden)
        result["matmul_peak"] = peak
        result["assess"] = ev
        for r in ev["rows"]:
            result[f"assess_roofline_fraction_p{r['P']}_b{r['B']}"] = r["roofline_fraction"]
        # one CPU device per core; on an accelerator the population already runs on its device
        if jax.default_backend() == "cpu" and (os.cpu_count() or 1) > 1:
            print(f"   ... the population split over {os.cpu_count()} CPU devices (one per core, "
                  "shard_map), as EV3(mesh=population_mesh()) runs there", flush=True)
            dv = run_assess_devices(ps, bs, repeats, args.assess_hidden)
            result["assess_devices"] = dv
            for r in dv["rows"]:
                result[f"assess_devices_roofline_fraction_p{r['P']}_b{r['B']}"] = (
                    r["roofline_fraction"])
    if "assess_cnn" in only:
        print("2b. assess: CNN students (any nnx model: vmapped through nnx.merge) against the "
              "measured matmul peak", flush=True)
        if "matmul_peak" not in result:
            result["matmul_peak"] = bench_matmul_peak(repeats)
        cnn = bench_assess_cnn([64], [1024], repeats)
        result["assess_cnn"] = cnn
        for r in cnn["rows"]:
            if r["chunk_size"] == "auto":
                result[f"assess_cnn_roofline_fraction_p{r['P']}_b{r['B']}"] = (
                    r["roofline_fraction"])
    if "evosax" in only:
        print("3. wrapper overhead: evosax through ev3evo.evosax_source vs raw", flush=True)
        es = bench_evosax(repeats)
        result["evosax"] = es
        result["evosax_overhead_ratio"] = es["Open_ES_digits_mlp"]["ratio"]
        result["evosax_overhead_ratio_max"] = max(v["ratio"] for v in es.values())
    if "scaling" in only:
        print("4. scaling: full EV3 step vs population and student size", flush=True)
        pops = [8, 32, 128] if args.quick else [8, 32, 128, 256]
        hiddens = [8, 64, 512] if args.quick else [8, 64, 512, 2048]
        sc = bench_scaling(pops, hiddens, steps=3 if args.quick else 5)
        result["scaling"] = sc
        result["step_time_exponent_population"] = sc["exponent_population"]
        result["step_time_exponent_params"] = sc["exponent_params"]
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["seconds"] = time.perf_counter() - start
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
