"""Gradient rollouts: every candidate is the end of a short optax rollout from the current model.

One rollout body serves every gradient source: ``steps`` optimizer steps (``lax.scan``), each
on a minibatch of ``batch_size`` examples (:mod:`ev3evo.explore.sampling`); a step whose loss,
gradient or new parameters are not finite is skipped, so one bad minibatch never poisons the
state kept for the next step. What varies is data, arranged in :class:`RolloutGroup` s: a
group is a loss and an optax optimizer shared by ``rows`` rows, each row with its own loss data
(e.g. the weights of a loss mixture) and its own optimizer hyperparameters (injected with
``optax.inject_hyperparams``), all rows of a group vmapped in one program, and ``repeats``
independent minibatch streams per row.

* :func:`gradient_rollouts`: a grid of losses × optax optimizers, one group per pair;
* :func:`mixture_grid`: loss mixtures × learning rates of one optimizer, one group in all (the
  step then compiles one rollout body however large the grid is);
* :func:`rollouts`: any list of groups.

Rows of one group may also differ in their optimizer: :func:`optimizer_choice` makes one optax
transformation out of several, the row's ``choice`` picking which one runs, so a grid over
optimizer families still compiles one rollout body (XLA compiles each group's body apart,
several seconds on CPU for a small network, so fewer groups compile faster).

**Optimizer states are re-synchronised with the accepted model.** Each row keeps one optimizer
state between steps. After the gate, the row that produced the accepted candidate commits the
state at the end of that rollout (it is exactly the state that belongs to the new parameters);
the other rows keep the state they had before the step, because the trajectory their rollout
state describes was discarded; after a rollback to the stable model every state is
re-initialized. (``sync="all"`` keeps every row's end state instead, which is what the
reference implementation does, and lets states go stale.)

**Slot order.** With ``order="fixed"`` candidates fill the slots row by row; a group whose
slots are all inactive this step is skipped. With ``order="rotate"`` the candidate that last
won fills slot 0 and the others follow in a random order, so that when the allocation gives the
source fewer slots than it has candidates, every row still gets its turn. A vmapped group
computes all its rows whenever one slot of it is active; ``slots=K`` (one group, rotating)
makes the source offer only ``K`` slots a step, the last winner and ``K - 1`` others drawn at
random, and computes only those ``K`` rollouts: a large grid then costs ``K`` rollouts a step,
not one per row, and every row still takes its turn over the steps.

**Models with state.** A :class:`~ev3evo.explore.stateful.Stateful` model (parameters and
carried state: batch statistics, RNG counters) is rolled out as training would: its losses
take the model and return ``(value, new_state)``, the optimizers see the parameters, and each
candidate carries the state its rollout ended with.

Deliberately biased gradients are gradient rollouts too: pass surrogate losses
(:mod:`ev3evo.losses`) and optimizers chained with gradient perturbations
(:mod:`ev3evo.explore.biased`, ``optax.add_noise``, ``optax.clip``, ``optax.scale_by_sign``).

Example::

    import jax, jax.numpy as jnp, optax, ev3evo
    from ev3evo.explore.gradient import RolloutGroup, rollouts
    apply = lambda p, x: x @ p["w"]
    ce = ev3evo.losses.cross_entropy(apply)
    group = RolloutGroup(lambda p, b, scale: scale * ce(p, b),  # per-row loss data
                         optax.inject_hyperparams(optax.sgd)(learning_rate=0.1), rows=2,
                         data=jnp.array([1.0, 2.0]),
                         hyperparams={"learning_rate": jnp.array([0.1, 0.01])})
    source = rollouts([group], steps=3)
    params = {"w": jnp.zeros((4, 2))}
    batch = {"x": jnp.ones((8, 4)), "y": jnp.zeros(8, jnp.int32)}
    state = source.init(jax.random.key(0), params)
    population, state = source.ask(jax.random.key(1), state, params, batch, jnp.ones(2, bool))
    assert population["w"].shape == (2, 4, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _tree
from .._checks import check_positive_int
from ..types import Feedback, LossFn, Source
from . import sampling, stateful


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def rollout(loss: Callable, optimizer: optax.GradientTransformation, steps: int,
            batch_size: int | None = None):
    """``(key, params, opt_state, data, batch) -> (params, opt_state, losses)``.

    ``steps`` steps of ``optimizer`` on ``loss(params, minibatch, data)``, each minibatch drawn
    from ``batch`` (already :func:`sampling.prepare` d, so that many vmapped rollouts share one
    shuffle) as in :mod:`ev3evo.explore.sampling`. For a
    :class:`~ev3evo.explore.stateful.Stateful` model the loss takes the whole model and
    returns ``(value, new_state)``: the optimizer updates the parameters and the model carries
    the new state (see :mod:`ev3evo.explore.stateful`).
    """
    value_and_grad = stateful.value_and_grad(loss)

    def run(key, model, opt_state, data, batch):
        def one_step(carry, step_key):
            model, opt_state = carry
            params = stateful.explored(model)
            value, grads, state = value_and_grad(model, sampling.draw(step_key, batch,
                                                                      batch_size), data)
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            ok = jnp.isfinite(value) & _finite(grads) & _finite(new_params)
            model = _tree.where(ok, stateful.with_params(model, new_params, state), model)
            opt_state = _tree.where(ok, new_opt_state, opt_state)
            return (model, opt_state), value

        keys = jax.random.split(key, steps)
        (model, opt_state), values = jax.lax.scan(one_step, (model, opt_state), keys)
        return model, opt_state, values

    return run


class RolloutGroup(NamedTuple):
    """Rows of rollouts that share a loss and an optimizer structure (vmapped together).

    Attributes:
      loss: ``(params, batch, data) -> scalar``; ``data`` is the row's entry of :attr:`data`
        (for a :class:`~ev3evo.explore.stateful.Stateful` model: ``(model, batch, data) ->
        (scalar, new_state)``).
      optimizer: an optax transformation; with :attr:`hyperparams` it must be built with
        ``optax.inject_hyperparams`` and have those hyperparameters.
      rows: the number of rows.
      data: per-row loss data, a pytree of arrays with leading axis ``rows`` (or ``None``).
      hyperparams: per-row optimizer hyperparameters, ``name -> (rows,)`` values (or ``None``).
    """

    loss: Callable
    optimizer: optax.GradientTransformation
    rows: int = 1
    data: Any = None
    hyperparams: dict | None = None


class RolloutsState(NamedTuple):
    """State of :func:`rollouts`.

    Attributes:
      committed: per group, the rows' optimizer states (leading axis ``rows``).
      pending: per group, the rollouts' end states of this step (``rows × repeats``), scratch
        between ``ask`` and ``tell`` (zeroed by ``tell``).
      order: ``(size,)`` int32, the candidate in each slot (``order="rotate"``).
      last: int32, the candidate that last won.
    """

    committed: tuple
    pending: tuple
    order: jax.Array
    last: jax.Array


def _init_rows(group: RolloutGroup, params):
    """The group's per-row optimizer states at ``params`` (hyperparameters injected)."""

    params = stateful.explored(params)  # a Stateful model's optimizer sees its parameters

    def one(hyper):
        state = group.optimizer.init(params)
        if hyper is None:
            return state
        return state._replace(hyperparams={**state.hyperparams, **hyper})

    if group.hyperparams is None:
        return _tree.broadcast(group.optimizer.init(params), group.rows)
    return jax.vmap(one)(group.hyperparams)


def _check_group(g) -> RolloutGroup:
    if not isinstance(g, RolloutGroup):
        raise TypeError(f"rollouts takes RolloutGroup values, got {g!r}")
    if not callable(g.loss):
        raise TypeError(f"each loss must be callable (params, batch) -> scalar, got {g.loss!r}")
    if not isinstance(g.optimizer, optax.GradientTransformation):
        raise TypeError(
            f"each optimizer must be an optax.GradientTransformation, got {g.optimizer!r}")
    return g._replace(rows=check_positive_int(g.rows, "rows"))


def rollouts(groups: Sequence[RolloutGroup], steps: int = 10, batch_size: int | None = None,
             repeats: int = 1, sync: str = "winner", order: str = "fixed",
             name: str = "gradient", slots: int | None = None) -> Source:
    """A source of ``Σ rows × repeats`` rollout candidates, group by group (see the module doc).

    Args:
      groups: the :class:`RolloutGroup` s.
      steps: optimizer steps per rollout.
      batch_size: minibatch size drawn from the train batch at every step; ``None`` uses the
        whole train batch.
      repeats: independent minibatch streams per row (vmapped); more than one needs
        ``batch_size``.
      sync: ``"winner"`` (default) or ``"all"``.
      order: ``"fixed"`` or ``"rotate"``.
      name: the source's name.
      slots: with one group and ``order="rotate"``, the slots offered (and rollouts computed)
        per step, at most the group's candidates; ``None``: one slot per candidate.
    """
    groups = [_check_group(g) for g in groups]
    if not groups:
        raise ValueError("rollouts needs at least one group")
    steps = check_positive_int(steps, "steps")
    repeats = check_positive_int(repeats, "repeats")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    elif repeats > 1:
        raise ValueError(
            f"repeats={repeats} without batch_size would make {repeats} identical candidates "
            "(every repeat would train on the whole batch); give batch_size so that each repeat "
            "draws its own minibatches"
        )
    if sync not in ("winner", "all"):
        raise ValueError(f"sync must be 'winner' or 'all', got {sync!r}")
    if order not in ("fixed", "rotate"):
        raise ValueError(f"order must be 'fixed' or 'rotate', got {order!r}")
    runs = [rollout(g.loss, g.optimizer, steps, batch_size) for g in groups]
    sizes = [g.rows * repeats for g in groups]
    offsets = np.cumsum([0, *sizes]).tolist()
    candidates = offsets[-1]
    size = _check_slots(slots, groups, order, candidates)

    def init(key, params):
        del key
        committed = tuple(_init_rows(g, params) for g in groups)
        pending = tuple(_tree.broadcast(c, repeats) for c in committed)
        pending = tuple(jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), p) for p in pending)
        zero = jnp.zeros((), jnp.int32)
        return RolloutsState(committed, pending, jnp.arange(size, dtype=jnp.int32), zero)

    def ask(key, state, params, batch, active):
        key, data_key = jax.random.split(key)
        batch = sampling.prepare(data_key, batch, batch_size)  # once, shared by every rollout
        slot_order = state.order
        if order == "rotate":
            rank = jnp.where(jnp.arange(candidates) == state.last, -1.0,
                             jax.random.uniform(jax.random.fold_in(data_key, 1), (candidates,)))
            slot_order = jnp.argsort(rank)[:size].astype(jnp.int32)  # slot -> candidate
        if size < candidates:  # only the slots' candidates are rolled out
            population, pending = _ask_some(groups[0], runs[0], jax.random.split(key, 1)[0],
                                            repeats, state.committed[0], params, batch,
                                            slot_order, jnp.any(active))
            return population, state._replace(pending=(pending,), order=slot_order)
        wanted = jnp.zeros(size, bool).at[slot_order].set(active)  # by candidate
        pops, pendings = [], []
        for g, run, k, lo, hi, committed in zip(groups, runs, jax.random.split(key, len(groups)),
                                                offsets[:-1], offsets[1:], state.committed):
            p, s = _ask_group(g, run, k, repeats, committed, params, batch, wanted[lo:hi])
            pops.append(p)
            pendings.append(s)
        population = _tree.take(_tree.concat(pops), slot_order) if order == "rotate" else (
            _tree.concat(pops))
        return population, state._replace(pending=tuple(pendings), order=slot_order)

    def tell(key, state, population, feedback: Feedback):
        del key, population
        # Which candidate (not slot) was selected.
        chosen = jnp.zeros(candidates, bool).at[state.order].set(feedback.selected)
        committed = tuple(
            _tell_group(g, sync, repeats, c, p, chosen[lo:hi], feedback)
            for g, c, p, lo, hi in zip(groups, state.committed, state.pending, offsets[:-1],
                                       offsets[1:])
        )
        won = jnp.any(chosen)
        last = jnp.where(won, jnp.argmax(chosen), state.last).astype(jnp.int32)
        # The rollout end states are scratch between ask and tell: zero them so that they carry
        # nothing into checkpoints or the next step (their structure stays for jit and scan).
        pending = jax.tree.map(jnp.zeros_like, state.pending)
        return RolloutsState(committed, pending, state.order, last)

    return Source(init, ask, tell, size, name)


def _ask_group(g: RolloutGroup, run, key, repeats, committed, params, batch, wanted):
    """The group's candidates ``(rows·repeats, ...)`` and end states ``(rows, repeats, ...)``;
    skipped (copies of ``params``) when none of its candidates is wanted this step."""
    keys = jax.random.split(key, (g.rows, repeats))

    def do():
        over_repeats = jax.vmap(run, in_axes=(0, None, None, None, None))
        over_rows = jax.vmap(over_repeats, in_axes=(0, None, 0, 0 if g.data is not None else None,
                                                    None))
        p, s, _ = over_rows(keys, params, committed, g.data, batch)
        return p, s

    def skip():
        return _tree.broadcast(_tree.broadcast(params, repeats), g.rows), _repeated(committed,
                                                                                   repeats)

    p, s = jax.lax.cond(jnp.any(wanted), do, skip)
    flat = jax.tree.map(lambda x: x.reshape((g.rows * repeats, *x.shape[2:])), p)
    return flat, s


def _repeated(committed, repeats: int):
    """The rows' states ``(rows, ...)`` as end states ``(rows, repeats, ...)``, unchanged."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], repeats,
                                                                *x.shape[1:])), committed)


def _check_slots(slots, groups, order: str, candidates: int) -> int:
    """The source's size: ``slots`` checked (see :func:`rollouts`), or every candidate."""
    if slots is None:
        return candidates
    slots = check_positive_int(slots, "slots")
    if len(groups) != 1 or order != "rotate":
        raise ValueError("slots needs one rollout group and order='rotate' (the slots rotate "
                         "among the group's rows)")
    if slots > candidates:
        raise ValueError(f"slots={slots} exceeds the group's {candidates} candidates")
    return slots


def _ask_some(g: RolloutGroup, run, key, repeats, committed, params, batch, chosen, any_active):
    """The rollouts of the ``chosen`` candidates only, ``(K, ...)``, and the group's end states
    ``(rows, repeats, ...)`` (the committed state where a candidate was not rolled out);
    skipped when no slot is active."""
    row, rep = chosen // repeats, chosen % repeats
    keys = jax.random.split(key, (g.rows, repeats))[row, rep]
    start = _tree.take(committed, row)
    data = None if g.data is None else _tree.take(g.data, row)
    kept = _repeated(committed, repeats)

    def do():
        over = jax.vmap(run, in_axes=(0, None, 0, 0 if data is not None else None, None))
        p, s, _ = over(keys, params, start, data, batch)
        return p, jax.tree.map(lambda k, e: k.at[row, rep].set(e), kept, s)

    def skip():
        return _tree.broadcast(params, chosen.shape[0]), kept

    return jax.lax.cond(any_active, do, skip)


def _tell_group(g: RolloutGroup, sync, repeats, committed, pending, chosen, feedback):
    """The rows' committed states after the gate (see the module docstring)."""
    chosen = chosen.reshape(g.rows, repeats)
    if sync == "all":
        new = jax.tree.map(lambda x: x[:, 0], pending)
    else:
        rep = jnp.argmax(chosen, axis=1)
        end = jax.tree.map(lambda x: x[jnp.arange(g.rows), rep], pending)
        new = _tree.population_where(jnp.any(chosen, axis=1), end, committed)
    return _tree.where(feedback.rolled_back, _init_rows(g, feedback.params), new)


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
      repeats: independent minibatch streams per pair (vmapped); more than one needs
        ``batch_size`` (the whole batch would give identical candidates).
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
    groups = [RolloutGroup(_ignore_data(f), o) for f in losses for o in optimizers]
    return rollouts(groups, steps, batch_size, repeats, sync, "fixed", name)


def _ignore_data(loss: LossFn):
    def with_data(params, batch, data):
        del data
        return loss(params, batch)

    return with_data


def mixture_grid(
    losses: Sequence[LossFn],
    weights: Sequence[Sequence[float]],
    optimizer: Callable[..., optax.GradientTransformation],
    learning_rates: Sequence[float],
    steps: int = 10,
    batch_size: int | None = None,
    name: str = "mixture_grid",
    slots: int | None = None,
) -> Source:
    """``len(weights) * len(learning_rates)`` rollouts of loss mixtures, in one vmapped group.

    Every row minimizes ``Σ_l w_rl · loss_l`` with ``optax.inject_hyperparams(optimizer)`` at
    its own learning rate; slots rotate (``order="rotate"``, see the module docstring).

    Args:
      losses: differentiable ``(params, batch) -> scalar`` functions (the mixture's parts).
      weights: one row of ``len(losses)`` non-negative weights per mixture (a one-hot row is
        a pure loss).
      optimizer: an optax optimizer *factory* taking ``learning_rate`` (``optax.adam``,
        ``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)``).
      learning_rates: the learning rates crossed with the mixtures.
      steps, batch_size, name: as in :func:`gradient_rollouts`.
      slots: this many rows rolled out (and offered) a step, the last winner first
        (see :func:`rollouts`); ``None``: every row.

    Example::

        import jax, jax.numpy as jnp, optax, ev3evo
        from ev3evo.explore.gradient import mixture_grid
        apply = lambda p, x: x @ p["w"]
        src = mixture_grid([ev3evo.losses.cross_entropy(apply),
                            ev3evo.losses.kl_to_teacher(apply, 4.0)],
                           [[1.0, 0.0], [0.0, 1.0]], optax.adam, [1e-2, 1e-3], steps=3)
        params = {"w": jnp.zeros((4, 2))}
        batch = {"x": jnp.ones((8, 4)), "y": jnp.zeros(8, jnp.int32),
                 "teacher": jnp.ones((8, 2))}
        state = src.init(jax.random.key(0), params)
        pop, state = src.ask(jax.random.key(1), state, params, batch, jnp.ones(4, bool))
        assert pop["w"].shape == (4, 4, 2)       # 2 mixtures × 2 learning rates
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

    def mixed(params, batch, row_w):
        return sum(row_w[i] * f(params, batch) for i, f in enumerate(losses))

    group = RolloutGroup(
        mixed, optax.inject_hyperparams(optimizer)(learning_rate=float(lrs[0])),
        rows=int(w.shape[0] * lrs.size), data=jnp.asarray(np.repeat(w, lrs.size, axis=0)),
        hyperparams={"learning_rate": jnp.asarray(np.tile(lrs, w.shape[0]))},
    )
    return rollouts([group], steps, batch_size, order="rotate", name=name, slots=slots)


def optimizer_choice(
    factories: Sequence[Callable[..., optax.GradientTransformation]],
) -> Callable[..., optax.GradientTransformation]:
    """An optax factory ``(learning_rate, choice) -> transformation``: ``factories[choice]``.

    Wrapped with ``optax.inject_hyperparams``, ``choice`` becomes data, so the rows of one
    :class:`RolloutGroup` can use different optimizers (per-row ``hyperparams``) and still share
    one compiled rollout body. The state holds every optimizer's state; a step advances the
    chosen one only (``jax.lax.switch``; vmapped over rows, every branch runs and each row keeps
    its own), so a row costs the sum of the optimizers' updates and states. optax's
    ``multi_transform`` picks a transformation per *parameter*, not per row of a population:
    hence this small combinator.

    Args:
      factories: optax optimizer factories taking ``learning_rate`` (``optax.adam``,
        ``functools.partial(optax.sgd, momentum=0.9)``, ...).

    Example::

        import functools, jax, jax.numpy as jnp, optax
        from ev3evo.explore.gradient import RolloutGroup, optimizer_choice, rollouts
        apply = lambda p, x: x @ p["w"]
        loss = lambda p, b, data: jnp.mean((apply(p, b["x"]) - b["y"]) ** 2)
        choice = optax.inject_hyperparams(optimizer_choice([optax.adam, optax.sgd]))(
            learning_rate=0.1, choice=0)
        group = RolloutGroup(loss, choice, rows=2, hyperparams={
            "learning_rate": jnp.array([0.01, 0.1]), "choice": jnp.array([0, 1])})
        source = rollouts([group], steps=3)          # row 0: Adam, row 1: SGD; one program
        params = {"w": jnp.zeros((4, 1))}
        batch = {"x": jnp.ones((8, 4)), "y": jnp.ones((8, 1))}
        pop, _ = source.ask(jax.random.key(1), source.init(jax.random.key(0), params), params,
                            batch, jnp.ones(2, bool))
        assert pop["w"].shape == (2, 4, 1)
    """
    factories = tuple(factories)
    if not factories or not all(callable(f) for f in factories):
        raise TypeError(f"optimizer_choice takes optax optimizer factories, got {factories!r}")

    def make(learning_rate, choice) -> optax.GradientTransformation:
        optimizers = [f(learning_rate=learning_rate) for f in factories]

        def init(params):
            return tuple(o.init(params) for o in optimizers)

        def branch(i):
            def update(updates, state, params):
                updates, new = optimizers[i].update(updates, state[i], params)
                return updates, (*state[:i], new, *state[i + 1:])

            return update

        def update(updates, state, params=None):
            index = jnp.clip(jnp.asarray(choice, jnp.int32), 0, len(optimizers) - 1)
            return jax.lax.switch(index, [branch(i) for i in range(len(optimizers))],
                                  updates, state, params)

        return optax.GradientTransformation(init, update)

    return make


def pair_names(losses: Sequence[LossFn], optimizers: Sequence, labels: Sequence[str] | None = None):
    """Readable names of the (loss, optimizer) pairs, in slot order."""
    labels = labels or [f"opt{j}" for j in range(len(optimizers))]
    return [f"{getattr(f, '__name__', 'loss')}/{lab}" for f in losses for lab in labels]
