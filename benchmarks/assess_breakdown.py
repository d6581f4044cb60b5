"""Where the time of assess goes: P = 64 students (64-32-10 MLPs) on B = 1024 shared examples.

    OPENBLAS_NUM_THREADS=1 python benchmarks/assess_breakdown.py

Times the accuracy of the whole population, then the same with parts removed (the nonlinearity,
the output layer and argmax), each next to the same 2048² matmul as ``throughput.py`` (its
``compare``), all in one ``vmap`` (no chunks), and prints every variant as a fraction of that
peak counted with the *full* MLP's FLOPs, i.e. the fraction the full evaluation would reach if
the removed parts cost nothing. That bounds what any evaluation of this model can reach on this
machine. "plain vmap" is what ``vmap`` of any model gets; "population rule" is
``mlp_apply`` of ``examples/digits_mlp.py``, evaluated feature-major (``ev3evo.assess.population``).
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The digits MLP problem lives in examples/digits_mlp.py.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

import jax
import jax.numpy as jnp
import numpy as np
import throughput as T
from digits_mlp import digits_splits, mlp_apply, mlp_init


def main(p=64, b=1024, hidden=32, n=2048, repeats=7):
    _, val, _ = digits_splits(0)
    pop = T.population(jax.random.key(1), mlp_init(jax.random.key(0), (64, hidden, 10)), p)
    idx = np.random.default_rng(0).integers(0, val["x"].shape[0], b)
    x, y = jnp.asarray(val["x"][idx]), jnp.asarray(val["y"][idx])
    a = jax.random.normal(jax.random.key(0), (n, n))
    dot = jax.jit(jnp.dot)
    flops = p * b * T.mlp_flops((64, hidden, 10))

    def accuracy(act):
        def one(q):
            h = act(x @ q["w1"] + q["b1"])
            return (jnp.argmax(h @ q["w2"] + q["b2"], -1) == y).astype(jnp.float32)

        return jax.jit(jax.vmap(one))

    rule = jax.jit(jax.vmap(lambda q: (jnp.argmax(mlp_apply(q, x), -1) == y).astype(jnp.float32)))
    variants = {
        "accuracy, tanh, plain vmap": accuracy(jnp.tanh),
        "accuracy, tanh, population rule": rule,
        "accuracy, no nonlinearity": accuracy(lambda h: h),
        "layer 1 and tanh only": jax.jit(jax.vmap(lambda q: jnp.tanh(x @ q["w1"] + q["b1"]))),
        "layer 1 matmul only": jax.jit(jax.vmap(lambda q: x @ q["w1"])),
    }
    print(f"P={p} B={b} hidden={hidden}: {flops / 1e6:.0f} MFLOP per evaluation")
    for name, f in variants.items():
        _, t, ratio = T.compare(lambda: dot(a, a), lambda f=f: f(pop), repeats=repeats)
        print(f"  {name:42s} {t * 1e3:7.2f} ms  {100 * flops / (2 * n**3) / ratio:5.1f}% of peak")


if __name__ == "__main__":
    main()
