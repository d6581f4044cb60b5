"""Deliberately biased gradients: gradient perturbations as optax transforms, and guided ES.

EV3 proposes updates that plain training would not take and lets the assessment decide. Two
families live here:

* **Perturbed gradient transforms**, to chain in front of any optax optimizer and use in
  :func:`ev3evo.gradient_rollouts`: random sparse masks (:func:`sparse_gradient_mask`), one
  random layer at a time (:func:`layer_gradient_mask`), and shortcuts for the perturbations
  optax already has (noise: ``optax.add_noise``; sign: ``optax.scale_by_sign``; clipping:
  ``optax.clip_by_global_norm``). Surrogate losses (temperatures, label smoothing, reverse KL)
  are in :mod:`ev3evo.losses`.
* **Guided evolution strategies** (:func:`guided_es`, Maheswaranathan et al., 2019): search in
  the subspace of recent surrogate gradients, scored by the real (non-differentiable) metric.

Example::

    import jax, jax.numpy as jnp, optax, ev3evo
    from ev3evo.explore import biased
    apply = lambda p, x: x @ p["w"]
    loss = ev3evo.losses.cross_entropy(apply, temperature=2.0)
    source = ev3evo.gradient_rollouts(
        [loss], [biased.masked(optax.sgd(0.1), keep=0.3), biased.noisy(optax.adam(0.01), 0.01)],
        steps=5)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from .._checks import check_positive_int, check_probability
from ..types import Feedback, LossFn, Source
from . import stateful


class MaskState(NamedTuple):
    key: jax.Array


def _random_transform(mask_fn, seed: int) -> optax.GradientTransformation:
    """A stateless-looking transform ``mask_fn(key, updates) -> updates`` with its own key.

    The key lives in the state as raw uint32 key data, so the optimizer state stays a plain
    array pytree (checkpointable, like ``optax.add_noise``'s).
    """

    def init_fn(params):
        del params
        return MaskState(jax.random.key_data(jax.random.key(seed)))

    def update_fn(updates, state, params=None):
        del params
        key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
        return mask_fn(sub, updates), MaskState(jax.random.key_data(key))

    return optax.GradientTransformation(init_fn, update_fn)


def sparse_gradient_mask(keep: float = 0.5, seed: int = 0) -> optax.GradientTransformation:
    """Keeps a random fraction ``keep`` of the gradient's entries each step, zeroes the rest.

    The kept entries are rescaled by ``1 / keep`` so the update is unbiased in expectation.
    """
    check_probability(keep, "keep", open_interval=False)
    if keep == 0.0:
        raise ValueError("keep must be > 0")

    def sparsify(key, updates):
        flat, unravel = ravel_pytree(updates)
        mask = jax.random.bernoulli(key, keep, flat.shape)
        return unravel(jnp.where(mask, flat / keep, 0.0).astype(flat.dtype))

    return _random_transform(sparsify, seed)


def layer_gradient_mask(seed: int = 0) -> optax.GradientTransformation:
    """Lets the gradient through for one parameter array (chosen uniformly each step) only."""

    def one_layer(key, updates):
        leaves, treedef = jax.tree.flatten(updates)
        chosen = jax.random.randint(key, (), 0, len(leaves))
        new = [jnp.where(i == chosen, g, jnp.zeros_like(g)) for i, g in enumerate(leaves)]
        return jax.tree.unflatten(treedef, new)

    return _random_transform(one_layer, seed)


def masked(optimizer: optax.GradientTransformation, keep: float = 0.5, seed: int = 0):
    """``optimizer`` applied to a randomly sparsified gradient."""
    return optax.chain(sparse_gradient_mask(keep, seed), optimizer)


def per_layer(optimizer: optax.GradientTransformation, seed: int = 0):
    """``optimizer`` applied to the gradient of one random layer per step."""
    return optax.chain(layer_gradient_mask(seed), optimizer)


def noisy(optimizer: optax.GradientTransformation, eta: float = 0.01, seed: int = 0):
    """``optimizer`` on gradients plus annealed gaussian noise (``optax.add_noise``,
    Neelakantan et al., 2015)."""
    return optax.chain(optax.add_noise(eta, 0.55, seed), optimizer)


def signed(optimizer: optax.GradientTransformation):
    """``optimizer`` on the sign of the gradient (``optax.scale_by_sign``)."""
    return optax.chain(optax.scale_by_sign(), optimizer)


def clipped(optimizer: optax.GradientTransformation, max_norm: float = 1.0):
    """``optimizer`` on the gradient clipped to global norm ``max_norm``."""
    return optax.chain(optax.clip_by_global_norm(max_norm), optimizer)


class GuidedESState(NamedTuple):
    """State of :func:`guided_es`.

    Attributes:
      gradients: ``(k, d)`` ring buffer of recent surrogate gradients.
      count: surrogate gradients seen so far.
      eps: ``(pairs, d)`` the perturbations of the last ask.
      step: ``(d,)`` the ES step estimated by the last tell (zero before the first).
    """

    gradients: jax.Array
    count: jax.Array
    eps: jax.Array
    step: jax.Array


def guided_es(
    loss: LossFn,
    size: int,
    sigma: float = 0.02,
    subspace: int = 4,
    alpha: float = 0.5,
    learning_rate: float | None = None,
    name: str = "guided_es",
) -> Source:
    """Guided ES (Maheswaranathan et al., 2019): antithetic search in the span of recent gradients.

    Perturbations are drawn from ``N(0, Σ)`` with (paper, eq. 1)

        Σ = α/d · I_d + (1 − α)/k · U Uᵀ,

    where the columns of ``U`` are an orthonormal basis of the last ``k`` surrogate gradients
    (gradients of the differentiable ``loss``). The candidates are then scored by the real
    metric, which needs no gradient, and ``tell`` turns the antithetic fitness differences into
    an ES estimate of the metric's gradient (paper, eq. 3):

        ĝ = 1/(2σP) Σ_i (f(θ + σε_i) − f(θ − σε_i)) ε_i.

    Slots: slot 0 is the ES step ``θ + lr · ĝ`` from the previous generation; then antithetic
    pairs ``θ ± σε_i``; when ``size - 1`` is odd the last slot is a plain surrogate-gradient
    step of length ``σ``.

    Args:
      loss: the surrogate ``(params, batch) -> scalar`` whose gradients guide the search
        (of a :class:`~ev3evo.explore.stateful.Stateful`: ``(model, batch) -> (scalar, state)``).
      size: candidates per step (at least 3).
      sigma: perturbation scale (``E‖σε‖² = σ²``).
      subspace: ``k``, the number of recent gradients spanning the guiding subspace.
      alpha: weight of the isotropic part, in ``[0, 1]``.
      learning_rate: ES step size (defaults to ``sigma``).
      name: the source's name.
    """
    size = check_positive_int(size, "size")
    if size < 3:
        raise ValueError(f"guided_es needs size >= 3 (one ES step and one antithetic pair), got {size}")
    k = check_positive_int(subspace, "subspace")
    check_probability(alpha, "alpha", open_interval=False)
    lr = sigma if learning_rate is None else learning_rate
    pairs = (size - 1) // 2
    extra = (size - 1) % 2
    grad_fn = stateful.value_and_grad(loss)

    def init(key, params):
        del key
        flat, _ = ravel_pytree(stateful.explored(params))
        d = flat.shape[0]
        z = jnp.zeros((), jnp.int32)
        return GuidedESState(
            jnp.zeros((k, d), flat.dtype), z, jnp.zeros((pairs, d), flat.dtype),
            jnp.zeros((d,), flat.dtype),
        )

    def ask(key, state, model, batch, active):
        del active
        flat, unravel = ravel_pytree(stateful.explored(model))
        d = flat.shape[0]
        g, _ = ravel_pytree(grad_fn(model, batch)[1])
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        gradients = state.gradients.at[state.count % k].set(g)
        count = state.count + 1
        # Orthonormal basis of the filled rows (unfilled rows are zero and add nothing).
        q, _ = jnp.linalg.qr(gradients.T)  # (d, k)
        filled = (jnp.arange(k) < count).astype(flat.dtype)
        q = q * filled[None, :]
        k_eff = jnp.maximum(jnp.minimum(count, k), 1).astype(flat.dtype)
        key_iso, key_sub = jax.random.split(key)
        iso = jax.random.normal(key_iso, (pairs, d), flat.dtype)
        sub = jax.random.normal(key_sub, (pairs, k), flat.dtype)
        eps = jnp.sqrt(alpha / d) * iso + jnp.sqrt((1.0 - alpha) / k_eff) * sub @ q.T
        members = [flat + state.step, *(flat + sigma * eps), *(flat - sigma * eps)]
        if extra:
            norm = jnp.linalg.norm(g)
            members.append(flat - sigma * g / jnp.where(norm > 0, norm, 1.0))
        population = stateful.populate(model, jax.vmap(unravel)(jnp.stack(members)), size)
        return population, GuidedESState(gradients, count, eps, state.step)

    def tell(key, state, population, feedback: Feedback):
        del key, population
        f = feedback.fitness
        plus, minus = f[1 : 1 + pairs], f[1 + pairs : 1 + 2 * pairs]
        ok = jnp.isfinite(plus) & jnp.isfinite(minus)
        diff = jnp.where(ok, plus - minus, 0.0)
        # Normalize the differences (scale-free step size); zero when nothing is usable.
        scale = jnp.sqrt(jnp.sum(diff**2) / jnp.maximum(jnp.sum(ok), 1))
        diff = jnp.where(scale > 0, diff / jnp.where(scale > 0, scale, 1.0), 0.0)
        ghat = diff @ state.eps / jnp.maximum(jnp.sum(ok), 1)
        step = jnp.where(feedback.rolled_back, 0.0, lr * ghat).astype(state.step.dtype)
        return state._replace(step=step)

    return Source(init, ask, tell, size, name)

