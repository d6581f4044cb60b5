"""Models with state besides their parameters: explore the parameters, carry the rest.

A model with batch statistics, RNG counters or caches is a :class:`Stateful` pytree of two
branches: ``params``, what EV3 explores (a flax nnx model's ``nnx.Param`` leaves), and
``state``, everything else. The engine, the population and the checkpoints hold the whole
pair; the sources decide what happens to each branch:

- **gradient rollouts** (:mod:`ev3evo.explore.gradient`, :func:`ev3evo.guided_es`) train the
  parameters the way training would: a loss of a ``Stateful`` model takes the whole model and
  returns ``(value, new_state)`` (a forward pass in training mode: batch statistics updated,
  RNG streams advanced), the gradient is taken with respect to ``params`` only
  (:func:`value_and_grad`), and every candidate carries the state its own rollout ended with;
- **every other source** (mutations, evosax, nevergrad, output-layer moves) is wrapped with
  :func:`on_params`: it sees and proposes the parameters only, and every candidate carries the
  current model's state unchanged. A perturbation never touches a running mean or a key.

On a plain parameter pytree (not ``Stateful``) all of this is the identity: losses return a
scalar and :func:`on_params` hands the source the model as it is.

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.explore.stateful import Stateful, on_params
    model = Stateful({"w": jnp.zeros(3)}, {"count": jnp.zeros((), jnp.uint32)})
    source = on_params(ev3evo.gaussian(4, sigma=0.1))
    state = source.init(jax.random.key(0), model)
    pop, state = source.ask(jax.random.key(1), state, model, None, jnp.ones(4, bool))
    assert pop.params["w"].shape == (4, 3) and pop.state["count"].shape == (4,)
    assert int(pop.state["count"].sum()) == 0          # the state is carried, never perturbed
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from .. import _tree
from ..types import Feedback, Params, Source


class Stateful(NamedTuple):
    """A model pytree in two branches: ``params`` (explored) and ``state`` (carried).

    For a flax nnx model: ``graphdef, params, rest = nnx.split(model, nnx.Param, ...)`` gives
    the two branches (as plain dicts with ``nnx.to_pure_dict``; RNG keys as their raw data,
    ``jax.random.key_data``, so that every leaf is an ordinary array).

    Attributes:
      params: the parameters every source explores (floating-point arrays).
      state: the rest of the model (any arrays), carried along.
    """

    params: Params
    state: Any


def explored(model) -> Params:
    """The explored part of a model: ``model.params`` of a :class:`Stateful`, else ``model``."""
    return model.params if isinstance(model, Stateful) else model


def with_params(model, params: Params, state=None):
    """``model`` with new parameters (and, for a :class:`Stateful`, ``state`` if given)."""
    if not isinstance(model, Stateful):
        return params
    return Stateful(params, model.state if state is None else state)


def populate(model, population: Params, size: int):
    """A population of ``size`` candidates with parameters ``population`` (leading axis
    ``size``) and, for a :class:`Stateful` model, copies of ``model``'s state."""
    if not isinstance(model, Stateful):
        return population
    return Stateful(population, _tree.broadcast(model.state, size))


def value_and_grad(loss: Callable) -> Callable:
    """``(model, *args) -> (value, grads, state)``: the loss and its gradient in the parameters.

    For a plain model ``loss(params, *args)`` returns the scalar and ``state`` is ``None``; for
    a :class:`Stateful` one ``loss(model, *args)`` returns ``(scalar, new_state)`` and the
    gradient is taken with respect to ``model.params`` only (the state is an auxiliary output,
    ``jax.value_and_grad(..., has_aux=True)``).

    Example::

        import jax.numpy as jnp
        from ev3evo.explore.stateful import Stateful, value_and_grad
        def loss(model, x):                      # a "forward pass" that counts its calls
            return jnp.sum((model.params["w"] - x) ** 2), {"n": model.state["n"] + 1}
        model = Stateful({"w": jnp.zeros(2)}, {"n": jnp.zeros((), jnp.int32)})
        value, grads, state = value_and_grad(loss)(model, jnp.ones(2))
        assert float(value) == 2.0 and grads["w"].tolist() == [-2.0, -2.0]
        assert int(state["n"]) == 1
    """
    plain = jax.value_and_grad(loss)

    def run(model, *args):
        if not isinstance(model, Stateful):
            value, grads = plain(model, *args)
            return value, grads, None
        state = model.state
        (value, new_state), grads = jax.value_and_grad(
            lambda p: loss(Stateful(p, state), *args), has_aux=True)(model.params)
        return value, grads, new_state

    return run


def on_params(source: Source) -> Source:
    """``source`` applied to the parameters of the model, its state carried unchanged.

    ``init`` and ``ask`` get :func:`explored` ``(model)``; every candidate ``ask`` returns gets a
    copy of the current model's state; ``tell`` gets the candidates' and the feedback's
    parameters. A mix is wrapped part by part (its layout and allocation stay per part). On a
    plain (not :class:`Stateful`) model the wrapped source behaves as ``source``.

    Returns:
      A :class:`~ev3evo.Source` with ``source``'s size, name and host flag.
    """
    if source.parts:
        from .mix import mix

        return mix(*(on_params(part) for part in source.parts))

    def init(key, model):
        return source.init(key, explored(model))

    def ask(key, state, model, batch, active):
        population, state = source.ask(key, state, explored(model), batch, active)
        return populate(model, population, source.size), state

    def tell(key, state, population, feedback: Feedback):
        feedback = feedback._replace(params=explored(feedback.params))
        return source.tell(key, state, explored(population), feedback)

    return source._replace(init=init, ask=ask, tell=tell)
