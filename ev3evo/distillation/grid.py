"""The KD grid: the distillation losses, their mixtures, the optimizers, and fidelity.

EV3's gradient sources and the KD baselines draw from the same grid. A loss of the grid is a
weighted sum of five parts (:func:`loss_parts`): Hinton et al.'s KL to the teacher at T=1 and
T=4, the reverse KL at T=2, the MSE between logits and cross-entropy with the labels;
:data:`MIXTURES` names the weightings (pure losses and one mixture). :data:`OPTIMIZERS` names
the optax optimizers and their learning rates. :func:`fidelity` scores each example by how
close the student's softmax is to the teacher's: the tie-breaker among equally good students.

The losses take a *student*: a plain ``apply(params, x) -> logits`` (the loss is then
``(params, batch) -> scalar``), or a :class:`~ev3evo.distillation.student.Student`, whose
losses run its forward pass once in train mode and return ``(scalar, new_state)`` for its
:class:`~ev3evo.Stateful` model (every part is computed from the same logits).
:func:`kd_grid` makes rows of the grid (:func:`grid_rows`: optimizer, learning rate, mixture)
one gradient source, every row in one compiled rollout body.

Example::

    import jax.numpy as jnp
    from ev3evo.distillation.grid import MIXTURES, named_loss, optimizer_grid
    apply = lambda p, x: x @ p
    batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros(4, jnp.int32), "teacher": jnp.ones((4, 2))}
    loss = named_loss(apply, "kl_t4+ce")            # (params, batch) -> scalar
    assert loss(jnp.zeros((3, 2)), batch).shape == ()
    assert "kl_t4" in MIXTURES and "adam_0.003" in optimizer_grid()

References:
  Hinton, Vinyals & Dean (2015), "Distilling the knowledge in a neural network".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import losses as L
from ..assess import metrics as M
from ..explore.gradient import RolloutGroup, optimizer_choice, rollouts
from ..types import LossFn, Metric, Source

#: the optimizer grid: name -> (optax factory taking ``learning_rate``, learning rates)
OPTIMIZERS = {
    "adam": (optax.adam, (3e-3, 1e-2)),
    "sgdm": (functools.partial(optax.sgd, momentum=0.9, nesterov=True), (0.05,)),
}

#: the KD losses of the grid: name -> weights over :func:`loss_parts`
MIXTURES = {
    "kl_t4": (0, 1, 0, 0, 0),
    "kl_t1": (1, 0, 0, 0, 0),
    "rkl_t2": (0, 0, 1, 0, 0),
    "logit_mse": (0, 0, 0, 1, 0),
    "ce": (0, 0, 0, 0, 1),
    "kl_t4+ce": (0, 0.5, 0, 0, 0.5),
}


def optimizer_grid() -> dict[str, optax.GradientTransformation]:
    """The optimizers shared by EV3's gradient sources and the KD baselines, by name
    (``"adam_0.003"``, ``"adam_0.01"``, ``"sgdm_0.05"``)."""
    return {
        f"{name}_{lr:g}": factory(learning_rate=lr)
        for name, (factory, lrs) in OPTIMIZERS.items()
        for lr in lrs
    }


def _logits(_, x):
    return x


#: the parts of the grid's losses as functions of the student's logits ``(None, batch)``
#: with the logits under ``"x"``
_PARTS = (L.kl_to_teacher(_logits, 1.0), L.kl_to_teacher(_logits, 4.0),
          L.kl_to_teacher(_logits, 2.0, reverse=True), L.logit_mse(_logits),
          L.cross_entropy(_logits))


def loss_parts(apply) -> list[LossFn]:
    """The five parts the losses of :data:`MIXTURES` weight, for a student ``apply``."""
    return [
        L.kl_to_teacher(apply, 1.0),
        L.kl_to_teacher(apply, 4.0),
        L.kl_to_teacher(apply, 2.0, reverse=True),
        L.logit_mse(apply),
        L.cross_entropy(apply),
    ]


def check_loss_name(name) -> str:
    """``name`` if it names a loss of :data:`MIXTURES`; raises ``ValueError`` listing them."""
    if name not in MIXTURES:
        raise ValueError(f"unknown KD loss {name!r}; known: {', '.join(MIXTURES)}")
    return name


def _forward(student):
    """``(model, x) -> (logits, state or None)``: a Student in train mode, or a plain apply."""
    train_apply = getattr(student, "train_apply", None)
    if train_apply is not None:
        return train_apply
    return lambda params, x: (student(params, x), None)


def mixture_loss(student):
    """``(model, batch, weights) -> loss``: ``Σ_i weights[i] · part_i`` on one forward pass
    (``(loss, new_state)`` for a Student's model)."""
    forward = _forward(student)

    def loss(model, batch, weights):
        logits, state = forward(model, batch["x"])
        on_logits = {**batch, "x": logits}
        value = sum(weights[i] * part(None, on_logits) for i, part in enumerate(_PARTS))
        return value if state is None else (value, state)

    return loss


def named_loss(student, name: str) -> LossFn:
    """The loss of :data:`MIXTURES` called ``name``: its weighted sum of :func:`loss_parts`
    (for a Student: ``(model, batch) -> (loss, new_state)``)."""
    terms = [(w, part) for w, part in zip(MIXTURES[check_loss_name(name)], _PARTS) if w]
    forward = _forward(student)

    def loss(model, batch):
        logits, state = forward(model, batch["x"])
        on_logits = {**batch, "x": logits}
        value = sum(w * part(None, on_logits) for w, part in terms)
        return value if state is None else (value, state)

    loss.__name__ = name
    return loss


def kd_loss(student) -> LossFn:
    """Hinton et al.'s KL at T=4: the loss of EV3's biased-gradient sources and the KD
    baselines' default."""
    return named_loss(student, "kl_t4")


def grid_rows(factories=None) -> list[tuple]:
    """The rows of the KD grid, ``(optax factory, learning rate, mixture name)``: every mixture
    of :data:`MIXTURES` × every learning rate of every optimizer of :data:`OPTIMIZERS` (or of
    ``factories``, a dict of the same form)."""
    return [(factory, float(lr), mixture)
            for factory, lrs in (factories or OPTIMIZERS).values()
            for mixture in MIXTURES for lr in lrs]


def kd_grid(student, rows, steps: int, batch_size: int | None, name: str = "kd",
            slots: int | None = None) -> Source:
    """The rows ``(optax factory, learning rate, mixture name)`` (e.g. :func:`grid_rows`) as
    one source of gradient rollouts: one vmapped group, each row's optimizer chosen by data
    (:func:`~ev3evo.explore.gradient.optimizer_choice`), so the whole grid compiles one rollout
    body; slots rotate (see :mod:`ev3evo.explore.gradient`). ``slots``: this many rows are
    rolled out (and offered) a step, the last winner first (``None``: every row).

    Example::

        import jax, jax.numpy as jnp, optax
        from ev3evo.distillation.grid import grid_rows, kd_grid
        apply = lambda p, x: x @ p["w"]
        rows = grid_rows() + [(optax.sgd, 0.1, "ce")]
        source = kd_grid(apply, rows, steps=2, batch_size=None)
        assert source.size == 6 * 3 + 1      # 6 mixtures × 3 (optimizer, rate) pairs, and one
    """
    rows = list(rows)
    if not rows:
        raise ValueError("kd_grid needs at least one row")
    factories = list(dict.fromkeys(f for f, _, _ in rows))  # distinct, in order of appearance
    weights = np.asarray([MIXTURES[check_loss_name(m)] for _, _, m in rows], np.float32)
    choice = optax.inject_hyperparams(optimizer_choice(factories))(
        learning_rate=float(rows[0][1]), choice=0)
    group = RolloutGroup(
        mixture_loss(student), choice, rows=len(rows), data=jnp.asarray(weights),
        hyperparams={"learning_rate": jnp.asarray([lr for _, lr, _ in rows], jnp.float32),
                     "choice": jnp.asarray([factories.index(f) for f, _, _ in rows], jnp.int32)})
    return rollouts([group], steps, batch_size, order="rotate", name=name, slots=slots)


def fidelity(apply) -> Metric:
    """``-KL(teacher ‖ student)`` per example: the smooth tie-breaker among equally good
    candidates (higher is better).

    .. math:: s_i = -\\sum_c p^T_{ic} (\\log p^T_{ic} - \\log p^S_{ic})
    """

    def score(params, batch):
        s = jax.nn.log_softmax(apply(params, batch["x"]), axis=-1)
        t = jax.nn.log_softmax(batch["teacher"], axis=-1)
        return -jnp.sum(jnp.exp(t) * (t - s), axis=-1)

    return M.per_example("fidelity", score)
