"""Metrics: per-example statistics and the aggregate that turns their mean into a value.

A metric never differentiates: argmax, thresholds and counts are all allowed. The built-ins
are factories that close over the model's ``apply(params, x) -> logits`` and read the batch
as a dict with ``"x"`` (inputs), ``"y"`` (integer labels) and, for :func:`agreement`, a
reference's logits or labels (``"teacher"`` by default).

Example::

    import jax.numpy as jnp
    import ev3evo
    apply = lambda params, x: x @ params["w"]
    acc = ev3evo.metrics.accuracy(apply)
    batch = {"x": jnp.eye(3), "y": jnp.array([0, 1, 1])}
    stats = acc.stats({"w": jnp.eye(3)}, batch)          # (3, 1) per-example correctness
    value = acc.aggregate(stats.mean(axis=0))            # 2/3
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..types import Metric

ApplyFn = Callable  # (params, x) -> logits (N, C)
UNIT = (0.0, 1.0)  # the range of rates and scores in [0, 1]


def _identity(m):
    return m[..., 0]


def per_example(name: str, fn, maximize: bool = True, bounds: tuple | None = None) -> Metric:
    """A decomposable metric from ``fn(params, batch) -> (N,)`` per-example scores
    (``bounds``: the range of the scores, when known)."""

    def stats(params, batch):
        scores = jnp.asarray(fn(params, batch), jnp.float32)
        if scores.ndim != 1:
            # Left as is, so that the engine's shape check reports what the function returned.
            return scores
        return scores[:, None]

    return Metric(name, stats, _identity, maximize=maximize, decomposable=True, bounds=bounds)


def accuracy(apply: ApplyFn) -> Metric:
    """Top-1 accuracy: ``1[argmax f(x) = y]`` per example."""

    def correct(params, batch):
        return jnp.argmax(apply(params, batch["x"]), axis=-1) == batch["y"]

    return per_example("accuracy", correct, bounds=UNIT)


def top_k_accuracy(apply: ApplyFn, k: int = 5) -> Metric:
    """``1[y among the k largest logits]`` per example."""

    def hit(params, batch):
        logits = apply(params, batch["x"])
        label_logit = jnp.take_along_axis(logits, batch["y"][:, None], axis=-1)
        rank = jnp.sum(logits > label_logit, axis=-1)  # ties count in the label's favour
        return rank < k

    return per_example(f"top{k}_accuracy", hit, bounds=UNIT)


def _predictions(reference):
    reference = jnp.asarray(reference)
    return jnp.argmax(reference, axis=-1) if reference.ndim == 2 else reference


def agreement(apply: ApplyFn, reference_key: str = "teacher") -> Metric:
    """Top-1 agreement with a reference model: ``1[argmax f(x) = argmax g(x)]``.

    ``batch[reference_key]`` holds the reference's logits ``(N, C)`` or its labels ``(N,)``.
    """

    def agree(params, batch):
        ours = jnp.argmax(apply(params, batch["x"]), axis=-1)
        return ours == _predictions(batch[reference_key])

    return per_example("agreement", agree, bounds=UNIT)


def neg_loss(apply: ApplyFn) -> Metric:
    """Negative cross-entropy per example (higher is better)."""

    def score(params, batch):
        logp = jax.nn.log_softmax(apply(params, batch["x"]), axis=-1)
        return jnp.take_along_axis(logp, batch["y"][:, None], axis=-1)[:, 0]

    return per_example("neg_loss", score, bounds=(-float("inf"), 0.0))


def macro_f1(apply: ApplyFn, num_classes: int) -> Metric:
    """Macro-averaged F1 over the classes present in labels or predictions (as scikit-learn).

    Per-example statistics are one-hot true positives, false positives and false negatives
    ``(N, 3C)``; F1 per class is ``2TP / (2TP + FP + FN)``, which depends only on their means.
    """

    def stats(params, batch):
        pred = jax.nn.one_hot(jnp.argmax(apply(params, batch["x"]), -1), num_classes)
        true = jax.nn.one_hot(batch["y"], num_classes)
        return jnp.concatenate([pred * true, pred * (1 - true), (1 - pred) * true], axis=-1)

    def aggregate(m):
        tp, fp, fn = jnp.split(m, 3, axis=-1)
        denom = 2 * tp + fp + fn
        present = denom > 0
        f1 = jnp.where(present, 2 * tp / jnp.where(present, denom, 1.0), 0.0)
        return jnp.sum(f1, -1) / jnp.maximum(jnp.sum(present, -1), 1)

    return Metric("macro_f1", stats, aggregate, maximize=True, decomposable=False, bounds=UNIT)


def expected_calibration_error(apply: ApplyFn, num_bins: int = 15) -> Metric:
    """Expected calibration error with equal-width confidence bins (Guo et al., 2017, eq. 3).

    ``ECE = Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| = Σ_b |mean(1_b·correct) − mean(1_b·conf)|``,
    so the per-example statistics ``1_b·correct`` and ``1_b·conf`` suffice. Lower is better.
    """

    def stats(params, batch):
        probs = jax.nn.softmax(apply(params, batch["x"]), axis=-1)
        conf = jnp.max(probs, axis=-1)
        correct = (jnp.argmax(probs, axis=-1) == batch["y"]).astype(jnp.float32)
        bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
        onehot = jax.nn.one_hot(bins, num_bins)
        return jnp.concatenate([onehot * correct[:, None], onehot * conf[:, None]], axis=-1)

    def aggregate(m):
        acc, conf = jnp.split(m, 2, axis=-1)
        return jnp.sum(jnp.abs(acc - conf), axis=-1)

    return Metric("ece", stats, aggregate, maximize=False, decomposable=False, bounds=UNIT)


def _needs_classes(factory):
    def make(apply, num_classes=None, **kw):
        if num_classes is None:
            raise ValueError(f"metric {factory.__name__!r} needs num_classes")
        return factory(apply, num_classes, **kw)

    return make


#: name -> factory ``(apply, num_classes=None, **options) -> Metric``
REGISTRY: dict[str, Callable[..., Metric]] = {
    "accuracy": lambda apply, num_classes=None: accuracy(apply),
    "top5_accuracy": lambda apply, num_classes=None: top_k_accuracy(apply, 5),
    "top2_accuracy": lambda apply, num_classes=None: top_k_accuracy(apply, 2),
    "agreement": lambda apply, num_classes=None: agreement(apply),
    "neg_loss": lambda apply, num_classes=None: neg_loss(apply),
    "macro_f1": _needs_classes(macro_f1),
    "ece": lambda apply, num_classes=None: expected_calibration_error(apply),
}


def get(name: str, apply: ApplyFn, num_classes: int | None = None) -> Metric:
    """Builds the registered metric ``name`` for a model ``apply`` function.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).
    """
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(REGISTRY))}"
        ) from None
    return factory(apply, num_classes=num_classes)


def value(metric: Metric, stats: jax.Array) -> jax.Array:
    """The metric's value from ``(..., N, k)`` statistics."""
    return metric.aggregate(jnp.mean(stats, axis=-2))


def utility(metric: Metric, values: jax.Array) -> jax.Array:
    """Higher-is-better version of a metric's values."""
    return values if metric.maximize else -values
