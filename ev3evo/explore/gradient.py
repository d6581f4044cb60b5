"""Gradient rollouts: a grid of losses × optax optimizers, each candidate a short rollout.

For every (loss, optimizer) pair and each of ``repeats`` minibatch streams, a candidate is the
end of ``steps`` optimizer steps from the current parameters (``lax.scan`` over steps,
``vmap`` over repeats, one compiled program for the whole grid). A pair whose slots are all
inactive this step is skipped with ``lax.cond``.

**Optimizer states are re-synchronised with the accepted model.** Each pair keeps one
optimizer state between steps. After the gate, the pair that produced the accepted candidate
commits the state at the end of that rollout (it is exactly the state that belongs to the new
parameters); the other pairs keep the state they had before the step, because the trajectory
their rollout state describes was discarded; after a rollback to the stable model every state
is re-initialized. (``sync="all"`` keeps every pair's end state instead, which is what the
reference implementation does, and lets states go stale.)

A rollout step whose loss or gradient is not finite is skipped (parameters and optimizer
state unchanged), so one bad minibatch never poisons the state kept for the next step.

Deliberately biased gradients are gradient rollouts too: pass surrogate losses
(:mod:`ev3evo.losses`) and optimizers chained with gradient perturbations
(:mod:`ev3evo.explore.biased`, ``optax.add_noise``, ``optax.clip``, ``optax.scale_by_sign``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from .. import _tree
from .._checks import check_positive_int
from ..types import Feedback, LossFn, Source
from . import sampling


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def rollout(
    loss: LossFn,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size=None,
    prepared: bool = False,
):
    """``(key, params, opt_state, batch) -> (params, opt_state, losses)`` after ``steps`` steps.

    Every step trains on a minibatch of ``batch_size`` examples (``None``: the whole batch)
    drawn as in :mod:`ev3evo.explore.sampling`. With ``prepared=True`` the batch is already
    :func:`sampling.prepare` d (shared by many vmapped rollouts, shuffled once).
    """
    value_and_grad = jax.value_and_grad(loss)

    def run(key, params, opt_state, batch):
        if not prepared:
            batch = sampling.prepare(jax.random.fold_in(key, steps), batch, batch_size)

        def one_step(carry, step_key):
            params, opt_state = carry
            value, grads = value_and_grad(params, sampling.draw(step_key, batch, batch_size))
            updates, new_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            ok = jnp.isfinite(value) & _finite(grads) & _finite(new_params)
            params = _tree.where(ok, new_params, params)
            opt_state = _tree.where(ok, new_state, opt_state)
            return (params, opt_state), value

        keys = jax.random.split(key, steps)
        (params, opt_state), values = jax.lax.scan(one_step, (params, opt_state), keys)
        return params, opt_state, values

    return run


def gradient_rollouts(
    losses: Sequence[LossFn],
    optimizers: Sequence[optax.GradientTransformation],
    steps: int = 10,
    batch_size: int | None = None,
    repeats: int = 1,
    sync: str = "winner",
    name: str = "gradient",
) -> Source:
    """A source of ``len(losses) * len(optimizers) * repeats`` rollout candidates.

    Args:
      losses: differentiable ``(params, batch) -> scalar`` functions.
      optimizers: any ``optax.GradientTransformation`` s.
      steps: optimizer steps per rollout.
      batch_size: minibatch size drawn from the train batch at every step (random windows of
        one shuffle per step of the engine, shared by all candidates, see
        :mod:`ev3evo.explore.sampling`); ``None`` uses the whole train batch.
      repeats: independent minibatch streams per pair (vmapped).
      sync: ``"winner"`` (default) or ``"all"``, see the module docstring.
      name: the source's name.

    Example::

        import jax, jax.numpy as jnp, optax, ev3evo
        apply = lambda p, x: x @ p["w"]
        src = ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)],
                                       [optax.sgd(0.1), optax.adam(0.01)], steps=3)
        params = {"w": jnp.zeros((4, 2))}
        batch = {"x": jnp.ones((8, 4)), "y": jnp.zeros(8, jnp.int32)}
        state = src.init(jax.random.key(0), params)
        pop, state = src.ask(jax.random.key(1), state, params, batch, jnp.ones(2, bool))
        assert pop["w"].shape == (2, 4, 2)
    """
    losses, optimizers = list(losses), list(optimizers)
    if not losses or not optimizers:
        raise ValueError("gradient_rollouts needs at least one loss and one optimizer")
    for f in losses:
        if not callable(f):
            raise TypeError(f"each loss must be callable (params, batch) -> scalar, got {f!r}")
    for o in optimizers:
        if not isinstance(o, optax.GradientTransformation):
            raise TypeError(f"each optimizer must be an optax.GradientTransformation, got {o!r}")
    steps = check_positive_int(steps, "steps")
    repeats = check_positive_int(repeats, "repeats")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if sync not in ("winner", "all"):
        raise ValueError(f"sync must be 'winner' or 'all', got {sync!r}")
    pairs = [(f, o) for f in losses for o in optimizers]
    runs = [rollout(f, o, steps, batch_size, prepared=True) for f, o in pairs]
    size = len(pairs) * repeats

    def init(key, params):
        del key
        committed = tuple(o.init(params) for _, o in pairs)
        pending = tuple(_tree.broadcast(s, repeats) for s in committed)
        return {"committed": committed, "pending": pending}

    def ask(key, state, params, batch, active):
        key, data_key = jax.random.split(key)
        batch = sampling.prepare(data_key, batch, batch_size)  # once, shared by every rollout
        keys = jax.random.split(key, len(pairs))
        pops, pendings = [], []
        for i, (run, k) in enumerate(zip(runs, keys)):
            block = active[i * repeats : (i + 1) * repeats]
            opt_state = state["committed"][i]
            rep_keys = jax.random.split(k, repeats)

            def do(rep_keys=rep_keys, run=run, opt_state=opt_state):
                p, s, _ = jax.vmap(run, in_axes=(0, None, None, None))(
                    rep_keys, params, opt_state, batch
                )
                return p, s

            def skip(opt_state=opt_state):
                return _tree.broadcast(params, repeats), _tree.broadcast(opt_state, repeats)

            p, s = jax.lax.cond(jnp.any(block), do, skip)
            pops.append(p)
            pendings.append(s)
        return _tree.concat(pops), {"committed": state["committed"], "pending": tuple(pendings)}

    def tell(key, state, population, feedback: Feedback):
        del key, population
        committed = []
        for i, (_, o) in enumerate(pairs):
            sel = feedback.selected[i * repeats : (i + 1) * repeats]
            won = jnp.any(sel)
            end_state = _tree.take(state["pending"][i], jnp.argmax(sel))
            if sync == "all":
                end_state = _tree.take(state["pending"][i], 0)
                new = end_state
            else:
                new = _tree.where(won, end_state, state["committed"][i])
            fresh = o.init(feedback.params)
            committed.append(_tree.where(feedback.rolled_back, fresh, new))
        # The rollout end states are scratch between ask and tell: zero them so that they carry
        # nothing into checkpoints or the next step (their structure stays for jit and scan).
        pending = jax.tree.map(jnp.zeros_like, state["pending"])
        return {"committed": tuple(committed), "pending": pending}

    return Source(init, ask, tell, size, name)


def pair_names(losses: Sequence[LossFn], optimizers: Sequence, labels: Sequence[str] | None = None):
    """Readable names of the (loss, optimizer) pairs, in slot order."""
    labels = labels or [f"opt{j}" for j in range(len(optimizers))]
    return [f"{getattr(f, '__name__', 'loss')}/{lab}" for f in losses for lab in labels]
