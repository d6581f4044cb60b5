"""A KD source that compiles once: a grid of loss mixtures × learning rates, vmapped.

:func:`ev3evo.gradient_rollouts` builds one ``lax.scan`` per (loss, optimizer) pair; on a CPU
the compile time of an EV3 step grows with the number of scans (18 pairs took minutes to compile
here). :func:`kd_grid` makes the *loss weights* and the *learning rate* data instead of code:
every row of the grid minimizes ``Σ_l w_rl · loss_l`` (the losses come from
:mod:`ev3evo.losses`: KL at several temperatures, reverse KL, logit MSE, cross-entropy) with
``optax.inject_hyperparams(optimizer)(learning_rate=lr_r)``, and all rows run in one vmapped
scan, so the step compiles one rollout body however large the grid is.

Slots are assigned to rows afresh every step: slot 0 is the row that last produced the accepted
model, the other slots get the remaining rows in a random order. When the allocation gives the
source fewer slots than rows, every row still gets its turn. Optimizer states follow the
convention of :func:`ev3evo.gradient_rollouts` (``sync="winner"``): the winning row commits its
end state, the others keep theirs, a rollback re-initializes all.

Example::

    import jax, jax.numpy as jnp, optax
    from ev3evo import losses
    from ev3evo.distill.sources import kd_grid
    apply = lambda p, x: x @ p["w"]
    src = kd_grid([losses.cross_entropy(apply), losses.kl_to_teacher(apply, 4.0)],
                  [[1.0, 0.0], [0.0, 1.0]], optax.adam, [1e-2, 1e-3], steps=3)
    params = {"w": jnp.zeros((4, 2))}
    batch = {"x": jnp.ones((8, 4)), "y": jnp.zeros(8, jnp.int32), "teacher": jnp.ones((8, 2))}
    state = src.init(jax.random.key(0), params)
    pop, state = src.ask(jax.random.key(1), state, params, batch, jnp.ones(4, bool))
    assert pop["w"].shape == (4, 4, 2)       # 2 mixtures × 2 learning rates
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _tree
from .._checks import check_positive_int
from ..explore import sampling
from ..explore.gradient import _finite
from ..types import Feedback, LossFn, Source


def kd_grid(
    losses: Sequence[LossFn],
    weights: Sequence[Sequence[float]],
    optimizer: Callable[..., optax.GradientTransformation],
    learning_rates: Sequence[float],
    steps: int = 10,
    batch_size: int | None = None,
    name: str = "kd_grid",
) -> Source:
    """A source of ``len(weights) * len(learning_rates)`` rollout candidates in one vmapped scan.

    Args:
      losses: differentiable ``(params, batch) -> scalar`` functions (the mixture's parts).
      weights: one row of ``len(losses)`` non-negative weights per mixture (a one-hot row is
        a pure loss).
      optimizer: an optax optimizer *factory* taking ``learning_rate`` (``optax.adam``,
        ``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)``).
      learning_rates: the learning rates crossed with the mixtures.
      steps: optimizer steps per rollout.
      batch_size: minibatch size drawn from the train batch at every step (random windows of
        one shared shuffle, :mod:`ev3evo.explore.sampling`; ``None``: the whole batch).
      name: the source's name.
    """
    losses = list(losses)
    w = np.asarray(weights, np.float32)
    if not losses or w.ndim != 2 or w.shape[1] != len(losses) or w.shape[0] == 0:
        raise ValueError(
            f"weights must be a (mixtures, {len(losses)}) table, one weight per loss; "
            f"got shape {w.shape}"
        )
    if np.any(w < 0) or np.any(w.sum(axis=1) <= 0):
        raise ValueError("every mixture needs non-negative weights with a positive sum")
    lrs = np.asarray(learning_rates, np.float32).reshape(-1)
    if lrs.size == 0 or np.any(lrs <= 0):
        raise ValueError(f"learning_rates must be positive, got {learning_rates!r}")
    steps = check_positive_int(steps, "steps")
    rows_w = jnp.asarray(np.repeat(w, lrs.size, axis=0))  # (R, L)
    rows_lr = jnp.asarray(np.tile(lrs, w.shape[0]))  # (R,)
    size = int(rows_w.shape[0])
    tx = optax.inject_hyperparams(optimizer)(learning_rate=float(lrs[0]))

    def mixed_loss(params, batch, row_w):
        return sum(row_w[i] * f(params, batch) for i, f in enumerate(losses))

    value_and_grad = jax.value_and_grad(mixed_loss)

    def init_rows(params):
        def one(lr):
            s = tx.init(params)
            return s._replace(hyperparams={**s.hyperparams, "learning_rate": lr})

        return jax.vmap(one)(rows_lr)

    def rollout(key, params, opt_state, row_w, batch):
        def one_step(carry, k):
            p, s = carry
            value, g = value_and_grad(p, sampling.draw(k, batch, batch_size), row_w)
            updates, new_s = tx.update(g, s, p)
            new_p = optax.apply_updates(p, updates)
            ok = jnp.isfinite(value) & _finite(g) & _finite(new_p)
            return (_tree.where(ok, new_p, p), _tree.where(ok, new_s, s)), None

        (params, opt_state), _ = jax.lax.scan(one_step, (params, opt_state),
                                              jax.random.split(key, steps))
        return params, opt_state

    def init(key, params):
        del key
        committed = init_rows(params)
        return {"committed": committed, "pending": committed,
                "order": jnp.arange(size, dtype=jnp.int32), "last": jnp.zeros((), jnp.int32)}

    def ask(key, state, params, batch, active):
        k_order, k_roll, k_data = jax.random.split(key, 3)
        batch = sampling.prepare(k_data, batch, batch_size)  # one shuffle shared by every row
        rank = jnp.where(jnp.arange(size) == state["last"], -1.0,
                         jax.random.uniform(k_order, (size,)))
        order = jnp.argsort(rank).astype(jnp.int32)  # slot -> row

        def do():
            keys = jax.random.split(k_roll, size)
            return jax.vmap(rollout, in_axes=(0, None, 0, 0, None))(
                keys, params, state["committed"], rows_w, batch)

        def skip():
            return _tree.broadcast(params, size), state["committed"]

        pop, pending = jax.lax.cond(jnp.any(active), do, skip)
        population = _tree.take(pop, order)
        return population, {**state, "pending": pending, "order": order}

    def tell(key, state, population, feedback: Feedback):
        del key, population
        won = jnp.any(feedback.selected)
        row = state["order"][jnp.argmax(feedback.selected)]
        is_row = (jnp.arange(size) == row) & won
        committed = _tree.population_where(is_row, state["pending"], state["committed"])
        committed = _tree.where(feedback.rolled_back, init_rows(feedback.params), committed)
        last = jnp.where(won, row, state["last"]).astype(jnp.int32)
        return {**state, "committed": committed, "last": last}

    return Source(init, ask, tell, size, name)


# --------------------------------------------------------------------------- output-layer mutations


def _with_head(params, fn):
    """``params`` with the student's output layer (the last of ``params["layers"]``) mapped by
    ``fn(layer) -> layer``; :mod:`ev3evo.distill.models` students (flax nnx pure dicts)."""
    layers = params["layers"]
    last = max(layers)
    return {**params, "layers": {**layers, last: fn(layers[last])}}


def temperature(size: int, sigma: float = 0.2, name: str = "temperature") -> Source:
    """``size`` candidates whose logits are rescaled by ``exp(sigma · z)``, ``z ~ N(0, 1)``.

    The output layer's kernel and bias are multiplied by one random factor, i.e. the student's
    softmax temperature changes and its argmax does not: accuracy stays, calibration (ECE) and
    the fit to the teacher move. Temperature scaling is the standard post-hoc calibration
    (Guo et al., 2017); as a mutation, EV3 finds the temperature that its gate can certify on
    the validation split while it trains, which gradient KD cannot do for a non-differentiable
    metric.

    Example::

        import jax, jax.numpy as jnp
        from ev3evo.distill.sources import temperature
        p = {"layers": {0: {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}}
        src = temperature(4)
        pop, _ = src.ask(jax.random.key(0), src.init(jax.random.key(1), p), p, None,
                         jnp.ones(4, bool))
        ratio = pop["layers"][0]["kernel"] / p["layers"][0]["kernel"]
        assert jnp.allclose(ratio, ratio[:, :1, :1])   # one factor per candidate
    """
    from ..explore.mutation import mutation

    def scale(key, params):
        s = jnp.exp(sigma * jax.random.normal(key, ()))
        return _with_head(params, lambda layer: jax.tree.map(lambda x: x * s, layer))

    return mutation(scale, size, name)


def head_bias(size: int, sigma: float = 0.05, name: str = "head_bias") -> Source:
    """``size`` candidates with gaussian noise on the output bias only: shifted per-class
    decision thresholds, a low-dimensional move for per-class metrics (macro-F1)."""
    from ..explore.mutation import mutation

    def shift(key, params):
        def f(layer):
            b = layer["bias"]
            return {**layer, "bias": b + sigma * jax.random.normal(key, b.shape, b.dtype)}

        return _with_head(params, f)

    return mutation(shift, size, name)
