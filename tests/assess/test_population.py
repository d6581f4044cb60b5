"""Population rules (ev3evo.assess.population): same values and gradients as the plain model,
and the rule really runs when a population is evaluated."""

import sys
from pathlib import Path

# The tanh MLP of examples/digits_mlp.py (with its population rule).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from digits_mlp import mlp_apply, mlp_forward, mlp_init
from flax import nnx

import ev3evo
from ev3evo.assess.evaluate import evaluate_population
from ev3evo.assess.population import dense_population_logits, with_population_rule
from ev3evo.distillation.models import MLP, functional

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
P, N = 5, 17


def _digits_mlp():
    params = jax.vmap(lambda k: mlp_init(k, (12, 6, 4)))(jax.random.split(jax.random.key(0), P))
    return mlp_apply, mlp_forward, params, (N, 12)


def _nnx(hidden, activation, shape=(N, 12)):
    def make():
        model = MLP(int(np.prod(shape[1:])), hidden, 4, rngs=nnx.Rngs(0), activation=activation)
        f = functional(model)
        pop = jax.tree.map(lambda a: jnp.stack([a * (1 + 0.3 * i) for i in range(P)]), f.params)
        plain = lambda p, x: nnx.merge(f.graphdef, p, f.rest)(x)
        return f.apply, plain, pop, shape

    return make


MODELS = {
    "digits_tanh_mlp": _digits_mlp,
    "nnx_relu_one_hidden": _nnx([7], "relu"),
    "nnx_gelu_two_hidden": _nnx([7, 5], "gelu"),
    "nnx_linear": _nnx([], "relu"),
    "nnx_image_inputs": _nnx([6], "tanh", shape=(N, 3, 4)),
}


def _counting(apply_plain):
    calls = []

    def population(p, x):
        calls.append(jax.tree.map(jnp.shape, p))
        return jax.vmap(apply_plain, in_axes=(0, None))(p, x)

    return with_population_rule(apply_plain, population), calls


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_population_values_match_plain_vmap(model):
    fast, plain, pop, shape = model
    x = jax.random.normal(jax.random.key(1), shape)
    want = jax.vmap(plain, in_axes=(0, None))(pop, x)
    _close(jax.jit(jax.vmap(fast, in_axes=(0, None)))(pop, x), want)
    one = jax.tree.map(lambda a: a[2], pop)
    np.testing.assert_array_equal(fast(one, x), plain(one, x))


def test_gradients_are_the_plain_models(model):
    fast, plain, pop, shape = model
    x = jax.random.normal(jax.random.key(1), shape)
    y = jnp.arange(shape[0]) % 4

    def loss(apply):
        return lambda p, x: -jnp.mean(jax.nn.log_softmax(apply(p, x))[jnp.arange(shape[0]), y])

    for a, b in zip(
        jax.tree.leaves(jax.vmap(jax.grad(loss(fast)), in_axes=(0, None))(pop, x)),
        jax.tree.leaves(jax.vmap(jax.grad(loss(plain)), in_axes=(0, None))(pop, x)),
    ):
        np.testing.assert_array_equal(a, b)


def test_rule_runs_only_for_shared_inputs():
    fast, calls = _counting(mlp_forward)
    pop = jax.vmap(lambda k: mlp_init(k, (12, 6, 4)))(jax.random.split(jax.random.key(0), P))
    x = jax.random.normal(jax.random.key(1), (N, 12))
    want = jax.vmap(mlp_forward, in_axes=(0, None))(pop, x)
    np.testing.assert_array_equal(jax.vmap(fast, in_axes=(0, None))(pop, x), want)
    assert len(calls) == 1 and calls[0]["w1"] == (P, 12, 6)
    # inputs batched too: plain vmap of the model
    xs = jnp.stack([x] * P)
    np.testing.assert_array_equal(jax.vmap(fast)(pop, xs), jax.vmap(mlp_forward)(pop, xs))
    # some parameters shared: plain vmap as well
    axes = ({"w1": 0, "b1": 0, "w2": 0, "b2": None}, None)
    mixed = dict(pop, b2=pop["b2"][0])
    np.testing.assert_array_equal(
        jax.vmap(fast, in_axes=axes)(mixed, x), jax.vmap(mlp_forward, in_axes=axes)(mixed, x)
    )
    assert len(calls) == 1
    # gradients never go through the rule
    jax.vmap(jax.grad(lambda p, x: fast(p, x).sum()), in_axes=(0, None))(pop, x)
    assert len(calls) == 1
    # chunks of the population (evaluate_population's lax.map): the rule, once per chunk shape
    _close(jax.lax.map(lambda p: fast(p, x), pop, batch_size=2), want)
    assert len(calls) >= 2 and calls[-1]["w1"][0] in (1, 2)


def test_evaluate_population_with_the_rule_equals_without(model):
    fast, plain, pop, shape = model
    batch = {"x": jax.random.normal(jax.random.key(2), shape), "y": jnp.arange(shape[0]) % 4}
    batch["teacher"] = jax.random.normal(jax.random.key(3), (shape[0], 4))
    names = ["accuracy", "macro_f1", "ece", "agreement"]
    for chunk in ["auto", 2, None]:
        got = evaluate_population(
            [ev3evo.metrics.get(n, fast, 4) for n in names], pop, batch, chunk_size=chunk
        )
        want = evaluate_population(
            [ev3evo.metrics.get(n, plain, 4) for n in names], pop, batch, chunk_size=chunk
        )
        for g, w in zip(got, want):
            _close(g, w)


def test_dense_population_logits_is_the_stacked_networks():
    k = jax.random.split(jax.random.key(0), 4)
    layers = [
        (jax.random.normal(k[0], (3, 6, 5)), jax.random.normal(k[1], (3, 5))),
        (jax.random.normal(k[2], (3, 5, 2)), jax.random.normal(k[3], (3, 2))),
    ]
    x = jax.random.normal(jax.random.key(9), (8, 2, 3))
    out = dense_population_logits(layers, x, jax.nn.relu)
    for i in range(3):
        h = jax.nn.relu(x.reshape(8, 6) @ layers[0][0][i] + layers[0][1][i])
        _close(out[i], h @ layers[1][0][i] + layers[1][1][i])


SHARDED = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, EXAMPLES_DIR)
import jax, jax.numpy as jnp, numpy as np
import ev3evo
from ev3evo import parallel
from ev3evo.assess.evaluate import evaluate_population
from digits_mlp import mlp_apply, mlp_forward, mlp_init
assert len(jax.devices()) == 2
pop = jax.vmap(lambda k: mlp_init(k, (12, 6, 4)))(jax.random.split(jax.random.key(0), 6))
batch = {"x": jax.random.normal(jax.random.key(1), (40, 12)), "y": jnp.arange(40) % 4}
mesh = parallel.population_mesh()
metrics = [ev3evo.metrics.accuracy(mlp_apply), ev3evo.metrics.neg_loss(mlp_apply)]
got = jax.jit(lambda p, b: parallel.sharded_evaluate(metrics, p, b, mesh))(
    jax.device_put(pop, parallel.population_sharding(mesh)), parallel.replicate(batch, mesh))
plain = [ev3evo.metrics.accuracy(mlp_forward), ev3evo.metrics.neg_loss(mlp_forward)]
want = evaluate_population(plain, pop, batch)
for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
print("OK")
"""


def test_population_rule_inside_shard_map_across_devices():
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", SHARDED.replace("EXAMPLES_DIR", repr(EXAMPLES))],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-2000:]


def test_models_with_several_outputs():
    def apply(p, x):
        h = x @ p["w"]
        return {"logits": h, "norm": jnp.sum(h**2, -1)}

    def population(p, x):
        h = jnp.einsum("pio,ni->pno", p["w"], x)
        return {"logits": h, "norm": jnp.sum(h**2, -1)}

    fast = with_population_rule(apply, population)
    pop = {"w": jax.random.normal(jax.random.key(0), (P, 3, 2))}
    x = jax.random.normal(jax.random.key(1), (N, 3))
    got = jax.vmap(fast, in_axes=(0, None))(pop, x)
    want = jax.vmap(apply, in_axes=(0, None))(pop, x)
    for k in ("logits", "norm"):
        _close(got[k], want[k])
    _close(jax.vmap(fast)(pop, jnp.stack([x] * P))["norm"], want["norm"])
