"""Gradient chains: optax trajectories of their own, continued every step whether or not they win.

A gradient rollout (:mod:`ev3evo.explore.gradient`) starts from the current model every step,
so its work counts only when its candidate wins: when the gate keeps a luckier small move
instead, the rollout's steps are lost, and a lineage that must win every step to advance
trains far fewer steps than a plain training loop given the same time. A chain keeps its own
model and optimizer state in the source state and continues them every step (``steps``
optimizer steps on minibatches of the train batch, as a rollout draws them), offering its
latest model as a candidate. It is plain training running inside the loop: the engine adopts
it when it is better than the current model, and keeps its own lineage otherwise, so the
current model is at worst what the chain reached (on the gate's evidence), plus what the
other sources add.

One chain per optimizer, each its own slot; a chain trains every step even when the
allocation gives its slot to another source this step, so its cost is its rollout every step.
Non-finite steps are skipped, as in a rollout. The current model never moves a chain (the
engine's ``params`` are ignored): the chain is the trajectory a training loop started from
the initial model would follow.

**Averaged iterates.** With ``average=d`` each chain also offers the exponential moving
average of its iterates, updated after every optimizer step (``a ← d a + (1 − d) θ``, from the
initial model; Polyak & Juditsky 1992; Izmailov et al. 2018, "Averaging weights leads to wider
optima and better generalization"), one more slot per chain: the latest iterates first, then
the averages. The average only ever leaves the chain as a candidate; the chain trains on from
its latest iterate. A :class:`~ev3evo.explore.stateful.Stateful` model's average carries the
latest iterate's state. The gate decides, on its evidence, whether the average beats the
iterate: no schedule to tune, no test split involved.

Example::

    import jax, jax.numpy as jnp, optax, ev3evo
    from ev3evo.explore.chain import gradient_chain
    apply = lambda p, x: x @ p["w"]
    source = gradient_chain(ev3evo.losses.cross_entropy(apply), [optax.sgd(0.1)], steps=3)
    params = {"w": jnp.zeros((4, 2))}
    batch = {"x": jnp.ones((8, 4)), "y": jnp.zeros(8, jnp.int32)}
    state = source.init(jax.random.key(0), params)
    first, state = source.ask(jax.random.key(1), state, params, batch, jnp.ones(1, bool))
    # the next step continues the chain, not the (unchanged) current model
    second, state = source.ask(jax.random.key(2), state, params, batch, jnp.ones(1, bool))
    assert first["w"].shape == (1, 4, 2) and float(second["w"][0, 0, 0]) > float(first["w"][0, 0, 0])
    averaged = gradient_chain(ev3evo.losses.cross_entropy(apply), [optax.sgd(0.1)], steps=3,
                              average=0.9)
    pop, _ = averaged.ask(jax.random.key(1), averaged.init(jax.random.key(0), params), params,
                          batch, jnp.ones(2, bool))
    assert averaged.size == 2 and 0 < float(pop["w"][1, 0, 0]) < float(pop["w"][0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .. import _tree
from .._checks import check_positive_int
from ..types import Feedback, LossFn, Source
from . import sampling, stateful
from .gradient import _ignore_data, rollout


class ChainState(NamedTuple):
    """Per optimizer: the chain's model and its optimizer state (tuples, in order); with
    ``average``, each optimizer state ends with the :class:`AverageState` of its iterates."""

    models: tuple
    opt_states: tuple
    steps: Any  # int32: the engine steps the chains have been continued


class AverageState(NamedTuple):
    """The exponential moving average of a chain's iterates (its parameters)."""

    average: Any


def track_average(decay: float) -> optax.GradientTransformation:
    """An optax transformation that leaves the updates alone and keeps the moving average of
    the parameters they lead to, ``a ← decay · a + (1 − decay) · (params + updates)``, started
    at the initial parameters. Last in an ``optax.chain``, so that it sees the final updates.

    optax averages updates (``optax.ema``) and interpolates trees
    (``optax.incremental_update``), but keeps no average of the iterates in an optimizer's
    state; this is that state, written with ``incremental_update``.
    """

    def init(params):
        return AverageState(params)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("track_average needs the parameters (optimizer.update(g, s, params))")
        new = optax.apply_updates(params, updates)
        return updates, AverageState(optax.incremental_update(new, state.average, 1.0 - decay))

    return optax.GradientTransformation(init, update)


def gradient_chain(loss: LossFn, optimizers: Sequence[optax.GradientTransformation],
                   steps: int, batch_size: int | None = None, average: float | None = None,
                   name: str = "chain") -> Source:  # fmt: skip
    """One chain per optimizer on ``loss`` (see the module docstring).

    Args:
      loss: a differentiable ``(model, batch) -> scalar`` (for a
        :class:`~ev3evo.explore.stateful.Stateful` model ``(value, new_state)``).
      optimizers: optax optimizers, one chain each.
      steps: optimizer steps each chain takes every engine step.
      batch_size: the minibatch size (``None``: the whole train batch every step).
      average: the decay, per optimizer step, of the moving average of each chain's iterates,
        in ``(0, 1)``, offered as one more candidate per chain (``None``: no average).
      name: the source's name.
    """
    optimizers = list(optimizers)
    if not optimizers:
        raise ValueError("gradient_chain needs at least one optimizer")
    for o in optimizers:
        if not isinstance(o, optax.GradientTransformation):
            raise TypeError(f"each optimizer must be an optax.GradientTransformation, got {o!r}")
    if not callable(loss):
        raise TypeError(f"loss must be callable (model, batch) -> scalar, got {loss!r}")
    steps = check_positive_int(steps, "steps")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if average is not None:
        if not (isinstance(average, (int, float)) and 0.0 < average < 1.0):
            raise ValueError(f"average must be a decay in (0, 1), got {average!r}")
        optimizers = [optax.chain(o, track_average(float(average))) for o in optimizers]
    runs = [rollout(_ignore_data(loss), o, steps, batch_size) for o in optimizers]

    def init(key, params):
        del key
        return ChainState(tuple(params for _ in optimizers),
                          tuple(o.init(stateful.explored(params)) for o in optimizers),
                          jnp.zeros((), jnp.int32))

    def ask(key, state, params, batch, active):
        del params, active  # a chain follows its own trajectory, and trains every step
        data_key, key = jax.random.split(key)
        batch = sampling.prepare(data_key, batch, batch_size)  # once, shared by the chains
        models, opt_states = [], []
        for run, k, model, opt_state in zip(runs, jax.random.split(key, len(runs)),
                                            state.models, state.opt_states):
            model, opt_state, _ = run(k, model, opt_state, None, batch)
            models.append(model)
            opt_states.append(opt_state)
        candidates = list(models)
        if average is not None:  # the averages, each with its latest iterate's model state
            candidates += [stateful.with_params(m, o[-1].average)
                           for m, o in zip(models, opt_states)]  # fmt: skip
        population = _tree.stack(candidates)
        return population, ChainState(tuple(models), tuple(opt_states), state.steps + 1)

    def tell(key, state, population, feedback: Feedback):
        del key, population, feedback  # nothing the gate decides moves a chain
        return state

    return Source(init, ask, tell, len(optimizers) * (1 if average is None else 2), name)
