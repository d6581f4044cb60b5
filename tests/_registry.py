"""The registry of example sources: every entry must pass the shared test table.

``EXAMPLES`` maps a name to a factory ``(problem) -> Source`` that builds a small, fast
instance of one kind of source for an :class:`ExampleProblem` (a toy classifier). The test
table in ``tests/explore/test_sources.py`` runs *every* entry under ``jit``, ``lax.scan`` and ``vmap``,
checks that a second step does not recompile, that non-finite candidates are ranked worst and
never selected, that ``tell`` survives NaN and ``-inf`` fitness, and that the state keeps its
structure (host sources, ``source.host=True``, skip the JAX-transform cases).

Adding a kind of source means adding one entry here. Import the source's module *inside* the
factory, so this module stays cheap to import and free of import cycles; give the source at
least 4 slots (the table poisons some of them) and keep it small (tests compile it).

Example::

    from _registry import EXAMPLES, example_problem
    problem = example_problem()
    source = EXAMPLES["gaussian"](problem)
    state = source.init(problem.key, problem.params)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ev3evo.types import Batch, LossFn, Params, Source


class ExampleProblem(NamedTuple):
    """A toy classification problem for exercising sources.

    Attributes:
      apply: ``(params, x) -> logits``.
      loss: a differentiable ``(params, batch) -> scalar`` (softmax cross-entropy).
      params: initial parameters (a dict pytree with two leaves).
      batch: ``{"x": (N, D) float32, "y": (N,) int32}``.
      num_classes: the number of classes.
      key: a PRNG key for sources that need one at construction.
    """

    apply: Callable
    loss: LossFn
    params: Params
    batch: Batch
    num_classes: int
    key: jax.Array


def _linear(params, x):
    return x @ params["w"] + params["b"]


def example_problem(n: int = 48, dim: int = 4, num_classes: int = 3, seed: int = 0):
    """A linear softmax classifier on ``n`` separable-ish gaussian points (numpy-generated).

    The data are drawn with numpy (not ``jax.random``) so that building the problem compiles
    nothing.
    """
    from ev3evo.losses import cross_entropy

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)).astype(np.float32) * 2.0
    y = rng.integers(0, num_classes, size=n)
    x = centers[y] + rng.normal(size=(n, dim)).astype(np.float32)
    params = {
        "w": jnp.asarray(rng.normal(size=(dim, num_classes)).astype(np.float32) * 0.1),
        "b": jnp.zeros(num_classes, jnp.float32),
    }
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32)}
    return ExampleProblem(
        _linear, cross_entropy(_linear), params, batch, num_classes, jax.random.key(seed)
    )


def _gradient(problem: ExampleProblem) -> Source:
    import optax

    from ev3evo.explore.gradient import gradient_rollouts
    from ev3evo.losses import cross_entropy

    smoothed = cross_entropy(problem.apply, label_smoothing=0.1)
    return gradient_rollouts(
        [problem.loss, smoothed], [optax.sgd(0.1), optax.adam(0.01)], steps=2, name="gradient"
    )


def _chain(problem: ExampleProblem) -> Source:
    """Two chains (their own trajectories) and the moving averages of their iterates."""
    import optax

    from ev3evo.explore.chain import gradient_chain

    optimizers = [optax.sgd(0.1), optax.adam(0.01)]
    return gradient_chain(problem.loss, optimizers, steps=2, batch_size=16, average=0.9,
                          name="chain")  # fmt: skip


def _mutation(kind: str) -> Callable[[ExampleProblem], Source]:
    def make(problem: ExampleProblem) -> Source:
        del problem
        from ev3evo.explore import mutation

        return {
            "gaussian": lambda: mutation.gaussian(4, sigma=0.05),
            "cauchy": lambda: mutation.cauchy(4, scale=0.01),
            "sparse": lambda: mutation.sparse(4, sigma=0.1, rate=0.3),
            "per_layer": lambda: mutation.per_layer(4, sigma=0.05),
        }[kind]()

    return make


def _custom(problem: ExampleProblem) -> Source:
    """A user-written ``(key, params) -> params`` operator through the public adapter."""
    del problem
    from ev3evo.explore.mutation import mutation

    def shrink(key, params):
        factor = 1.0 - 0.1 * jax.random.uniform(key)
        return jax.tree.map(lambda x: x * factor, params)

    return mutation(shrink, 4, name="shrink")


def _biased_gradient(problem: ExampleProblem) -> Source:
    """Surrogate losses × optimizers behind gradient masks, noise and sign."""
    import optax

    from ev3evo.explore import biased
    from ev3evo.explore.gradient import gradient_rollouts
    from ev3evo.losses import cross_entropy

    hot = cross_entropy(problem.apply, temperature=2.0)
    return gradient_rollouts(
        [hot],
        [
            biased.masked(optax.sgd(0.1), keep=0.5),
            biased.per_layer(optax.sgd(0.1)),
            biased.noisy(optax.sgd(0.1), eta=0.01),
            biased.signed(optax.sgd(0.01)),
        ],
        steps=2,
        name="biased_gradient",
    )


def _mixture_grid(problem: ExampleProblem) -> Source:
    """Loss mixtures × learning rates in one vmapped group (the distillation's KD grid), 3
    slots rotating among its 4 rows (the full grid: tests/explore/test_gradient.py)."""
    import optax

    from ev3evo.explore.gradient import mixture_grid
    from ev3evo.losses import cross_entropy

    losses = [problem.loss, cross_entropy(problem.apply, temperature=2.0)]
    return mixture_grid(losses, [[1.0, 0.0], [0.5, 0.5]], optax.adam, [0.05, 0.01], steps=2,
                        name="mixture_grid", slots=3)


def _guided_es(problem: ExampleProblem) -> Source:
    from ev3evo.explore.biased import guided_es

    return guided_es(problem.loss, 5, sigma=0.05, subspace=2)


def _evosax(algorithm: str) -> Callable[[ExampleProblem], Source]:
    """An evosax algorithm (distribution- or population-based), re-centred on the model."""

    def make(problem: ExampleProblem) -> Source:
        del problem
        from ev3evo.explore.evosax import evosax_source

        return evosax_source(algorithm, 6, init_std=0.05, name=f"evosax_{algorithm}")

    return make


def _evosax_restarts(problem: ExampleProblem) -> Source:
    """CMA-ES with BIPOP restarts, re-centred on the model; a run stops every 2 generations
    (evosax's ``generation_cond``), so the table's steps go through restarts.

    One rung (``levels=1``): a ladder of several rungs pads the slots beyond the active rung
    with NaN candidates by design, which the table's rows forbid (the ladder is tested in
    ``tests/explore/test_evosax_source.py``).
    """
    del problem
    from evosax.core.restart import generation_cond

    from ev3evo.explore.evosax import bipop, evosax_source

    schedule = bipop(levels=1, min_num_gens=1, stop_criteria=[generation_cond],
                     generation_threshold=2)
    return evosax_source("CMA_ES", 6, init_std=0.05, restart=schedule, name="evosax_cma_bipop")


def _nevergrad(problem: ExampleProblem) -> Source:
    """A nevergrad optimizer driven on the host (``source.host`` is true)."""
    del problem
    from ev3evo.explore.nevergrad import nevergrad_source

    return nevergrad_source("TwoPointsDE", 4, seed=0, sigma=0.05)


#: name -> factory ``(ExampleProblem) -> Source``; the test table runs every entry.
def _on_params(problem: ExampleProblem) -> Source:
    """A mix of mutations applied to the parameters of the model (``ev3evo.on_params``; the
    identity on a model without carried state)."""
    del problem
    from ev3evo.explore import mutation
    from ev3evo.explore.mix import mix
    from ev3evo.explore.stateful import on_params

    return on_params(mix(mutation.gaussian(4, sigma=0.05), mutation.cauchy(2, scale=0.05)))


EXAMPLES: dict[str, Callable[[ExampleProblem], Source]] = {
    "gradient": _gradient,
    "chain": _chain,
    "gaussian": _mutation("gaussian"),
    "cauchy": _mutation("cauchy"),
    "sparse": _mutation("sparse"),
    "per_layer": _mutation("per_layer"),
    "custom_mutation": _custom,
    "biased_gradient": _biased_gradient,
    "mixture_grid": _mixture_grid,
    "guided_es": _guided_es,
    "evosax_cma": _evosax("CMA_ES"),
    "evosax_de": _evosax("DifferentialEvolution"),
    "evosax_cma_bipop": _evosax_restarts,
    "nevergrad": _nevergrad,
    "on_params": _on_params,
}


def registered_sources() -> list[str]:
    """The names of every registered example source, in registration order."""
    return list(EXAMPLES)


def build(name: str, problem: ExampleProblem | None = None) -> Source:
    """Builds the registered example source ``name`` (on :func:`example_problem` by default)."""
    try:
        factory = EXAMPLES[name]
    except KeyError:
        raise ValueError(
            f"unknown example source {name!r}; registered: {', '.join(EXAMPLES)}"
        ) from None
    source = factory(problem if problem is not None else example_problem())
    if not isinstance(source, Source):
        raise TypeError(f"registry entry {name!r} built {type(source).__name__}, not a Source")
    return source
