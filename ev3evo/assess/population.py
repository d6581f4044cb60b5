"""Population-aware models: how a whole population of students is evaluated at once.

``evaluate_population`` vmaps each metric over the population's parameters while the examples
are shared. For a dense network, plain ``vmap`` makes XLA:CPU run the first layer as one GEMM
but every later layer as ``P`` separate skinny products (a 1024×32 by 32×10 output layer per
member), in an examples-major layout that forces a transpose between them; on 2 CPU cores the
output layer and argmax held 13% of the FLOPs and 40% of the time
(``benchmarks/assess_breakdown.py``). :func:`with_population_rule` lets a model say how it is
evaluated for a whole population; :func:`dense_population_logits` is that rule for a stack of
dense layers, in a *feature-major* layout (examples on the fast axis): the first layer is one
``(P·H, D) @ (D, N)`` GEMM and every later layer a batched product whose long side is ``N``.

The rule is a :func:`jax.custom_batching.custom_vmap` (JAX's own way to give a function its own
batching rule). It fires only when the parameters carry the population axis and the inputs do
not; any other ``vmap`` falls back to ``vmap`` of the plain ``apply``. ``custom_vmap`` has no
reverse-mode derivative, so the result is wrapped in a ``custom_vjp`` whose forward and
backward passes are the plain ``apply``'s: gradients (and gradients under ``vmap``, what
gradient rollouts do) are exactly those of ``apply``. Forward-mode (``jax.jvp``) is not
supported; nothing in ev3evo uses it.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.assess.population import dense_population_logits, with_population_rule

    def apply(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def population(p, x):
        return dense_population_logits([(p["w1"], p["b1"]), (p["w2"], p["b2"])], x, jnp.tanh)

    fast = with_population_rule(apply, population)
    pop = {"w1": jnp.ones((5, 3, 4)), "b1": jnp.zeros((5, 4)),
           "w2": jnp.ones((5, 4, 2)), "b2": jnp.zeros((5, 2))}
    x = jnp.ones((7, 3))
    out = jax.vmap(fast, in_axes=(0, None))(pop, x)   # runs population(pop, x)
    assert out.shape == (5, 7, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

__all__ = ["dense_population_logits", "with_population_rule"]


def with_population_rule(
    apply: Callable[..., jax.Array], population: Callable[..., jax.Array]
) -> Callable[..., jax.Array]:
    """``apply(params, x)`` that runs ``population(stacked_params, x) -> (P, ...)`` when vmapped
    over the parameters alone.

    Args:
      apply: the model, ``apply(params, x) -> out`` for one member (``out`` an array or a
        pytree of arrays).
      population: the same model for a population: every leaf of ``stacked_params`` has a
        leading population axis ``P``; ``x`` is shared; returns ``out`` with a leading ``P``
        on every leaf. It must compute what ``vmap(apply, in_axes=(0, None))`` computes (up
        to float rounding).

    Returns:
      A function with ``apply``'s signature, values and gradients.
    """

    @custom_vmap
    def batched(params, x):
        return apply(params, x)

    @batched.def_vmap
    def _rule(axis_size, in_batched, params, x):
        params_batched, x_batched = in_batched
        leaves = jax.tree.leaves(params_batched)
        if leaves and all(leaves) and not any(jax.tree.leaves(x_batched)):
            out = population(params, x)
        else:
            axes = jax.tree.map(lambda b: 0 if b else None, tuple(in_batched))
            out = jax.vmap(apply, in_axes=axes, axis_size=axis_size)(params, x)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_vjp
    def fn(params, x):
        return batched(params, x)

    # forward: (out, pullback) of the plain model; backward: that pullback
    fn.defvjp(lambda params, x: jax.vjp(apply, params, x), lambda pullback, g: pullback(g))
    return fn


def dense_population_logits(
    layers: Sequence[tuple[jax.Array, jax.Array]],
    x: jax.Array,
    activation: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    """Outputs ``(P, N, C)`` of P dense networks on shared inputs ``x`` ``(N, ...)``.

    ``layers`` are ``(kernel (P, in, out), bias (P, out))`` pairs; ``activation`` follows every
    layer but the last; inputs are flattened to ``(N, in)``. Computed feature-major: the first
    layer is a single GEMM over the whole population.
    """
    h = x.reshape(x.shape[0], -1).T  # (D, N): examples on the fast axis
    for i, (kernel, bias) in enumerate(layers):
        h = jnp.einsum("pio,in->pon" if i == 0 else "pio,pin->pon", kernel, h)
        h = h + bias[:, :, None]
        if i < len(layers) - 1:
            h = activation(h)
    return jnp.swapaxes(h, 1, 2)
