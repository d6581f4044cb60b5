"""Differentiable losses for gradient sources, as ``(params, batch) -> scalar`` functions.

Each factory closes over the model's ``apply(params, x) -> logits``. Batches are dicts with
``"x"``, ``"y"`` and, for distillation, ``"teacher"`` (the teacher's logits). Built on
``optax.losses``; the deliberately biased *surrogates* (temperatures, label smoothing, reverse
KL, mixtures) are ordinary losses here: a gradient source does not care which one it follows.

Example::

    import jax.numpy as jnp
    import ev3evo
    apply = lambda p, x: x @ p["w"]
    loss = ev3evo.losses.cross_entropy(apply, temperature=2.0, label_smoothing=0.1)
    loss({"w": jnp.zeros((3, 2))}, {"x": jnp.ones((4, 3)), "y": jnp.array([0, 1, 0, 1])})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from .types import LossFn


def cross_entropy(apply: Callable, temperature: float = 1.0, label_smoothing: float = 0.0) -> LossFn:
    """Softmax cross-entropy with labels, on ``logits / temperature``, optionally smoothed."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    def loss(params, batch):
        logits = apply(params, batch["x"]) / temperature
        if label_smoothing == 0.0:
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        targets = optax.smooth_labels(jax.nn.one_hot(batch["y"], logits.shape[-1]), label_smoothing)
        return optax.softmax_cross_entropy(logits, targets).mean()

    loss.__name__ = f"ce_t{temperature:g}" + (f"_ls{label_smoothing:g}" if label_smoothing else "")
    return loss


def kl_to_teacher(
    apply: Callable, temperature: float = 1.0, reverse: bool = False, teacher_key: str = "teacher"
) -> LossFn:
    """Hinton et al. (2015) distillation loss ``T² · KL(p_T^teacher ‖ p_T^student)``.

    ``reverse=True`` gives the mode-seeking ``KL(p^student ‖ p^teacher)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def loss(params, batch):
        s = jax.nn.log_softmax(apply(params, batch["x"]) / temperature, axis=-1)
        t = jax.nn.log_softmax(batch[teacher_key] / temperature, axis=-1)
        if reverse:
            kl = jnp.sum(jnp.exp(s) * (s - t), axis=-1)
        else:
            kl = optax.losses.kl_divergence_with_log_targets(s, t)
        return temperature**2 * kl.mean()

    loss.__name__ = f"{'rkl' if reverse else 'kl'}_t{temperature:g}"
    return loss


def logit_mse(apply: Callable, teacher_key: str = "teacher") -> LossFn:
    """Mean squared error between student and teacher logits (Ba & Caruana, 2014)."""

    def loss(params, batch):
        return optax.l2_loss(apply(params, batch["x"]), batch[teacher_key]).mean() * 2.0

    loss.__name__ = "logit_mse"
    return loss


def mixture(losses: Sequence[LossFn], weights: Sequence[float]) -> LossFn:
    """``Σ_i w_i · loss_i``, e.g. ``mixture([kl_to_teacher(a, 4), cross_entropy(a)], [0.7, 0.3])``."""
    if len(losses) != len(weights) or not losses:
        raise ValueError("mixture needs as many weights as losses, and at least one")

    def loss(params, batch):
        return sum(w * f(params, batch) for f, w in zip(losses, weights))

    loss.__name__ = "mix(" + ",".join(getattr(f, "__name__", "loss") for f in losses) + ")"
    return loss
