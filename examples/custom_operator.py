"""Plug your own mutation operators into EV3: a plain function and a stateful source.

Run: python examples/custom_operator.py

1. A stateless operator is any ``(key, params) -> params`` function; ``ev3evo.mutation`` vmaps
   it over keys and turns it into a source.
2. A stateful operator is an ``(init, ask, tell)`` triple wrapped in ``ev3evo.Source``: here a
   gaussian mutation whose step size follows the 1/5th success rule (Rechenberg, 1973), using
   the feedback EV3 gives every source after each step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_digits

import ev3evo

# --- a small problem: logistic regression on digits, assessed by held-out accuracy -----------
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
perm = np.random.default_rng(0).permutation(len(x))
train = {"x": jnp.asarray(x[perm[:1200]]), "y": jnp.asarray(y[perm[:1200]])}
val = {"x": jnp.asarray(x[perm[1200:]]), "y": jnp.asarray(y[perm[1200:]])}


def apply(params, inputs):
    return inputs @ params["w"] + params["b"]


params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}


# --- 1. a stateless operator: flip the sign of a few weights -----------------------------------
def sign_flip(key, params):
    """Negates each entry with probability 1%."""
    flat, unravel = ravel_pytree(params)
    flip = jax.random.bernoulli(key, 0.01, flat.shape)
    return unravel(jnp.where(flip, -flat, flat))


# --- 2. a stateful operator: gaussian mutation with the 1/5th success rule ---------------------
def adaptive_gaussian(size: int, sigma0: float = 0.05) -> ev3evo.Source:
    def init(key, params):
        return {"sigma": jnp.asarray(sigma0, jnp.float32)}

    def ask(key, state, params, batch, active):
        flat, unravel = ravel_pytree(params)
        noise = jax.random.normal(key, (size, flat.shape[0]))
        return jax.vmap(unravel)(flat + state["sigma"] * noise), state

    def tell(key, state, population, feedback):
        # Success = one of our candidates became the current model.
        success = jnp.any(feedback.selected)
        factor = jnp.where(success, 1.5, 1.5 ** (-1 / 4))
        return {"sigma": jnp.clip(state["sigma"] * factor, 1e-4, 1.0)}

    return ev3evo.Source(init, ask, tell, size, "adaptive_gaussian")


engine = ev3evo.EV3(
    sources=[
        ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)], [optax.adam(0.05)], steps=5),
        ev3evo.mutation(sign_flip, size=4),
        adaptive_gaussian(size=8),
    ],
    metrics=[ev3evo.metrics.accuracy(apply)],
)
result = ev3evo.run(engine, jax.random.key(0), params, train, val, steps=25)
first, last = result.history[0]["stable"]["accuracy"], result.history[-1]["stable"]["accuracy"]
wins = dict(zip(engine.source_names, np.asarray(result.state.allocation.wins).tolist()))
print(f"held-out accuracy of the stable model: {first:.3f} -> {last:.3f}")
print(f"accepted winners per source: {wins}")
print(f"adaptive sigma at the end: {float(result.state.sources.parts[2]['sigma']):.4f}")
assert last >= first
