"""Gradient rollouts: the one rollout body, its groups, and the mixture grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ev3evo import losses
from ev3evo.assess import metrics as M
from ev3evo.explore.gradient import mixture_grid
from ev3evo.types import Feedback


def _toy():
    apply = lambda p, x: x @ p["w"] + p["b"]
    x = jax.random.normal(jax.random.key(0), (120, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    batch = {"x": x, "y": y, "teacher": 3.0 * jax.nn.one_hot(y, 2)}
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    return apply, batch, params


def test_mixture_grid_rows_slots_and_winner_first():
    apply, batch, params = _toy()
    src = mixture_grid([losses.cross_entropy(apply), losses.kl_to_teacher(apply, 4.0)],
                  [[1.0, 0.0], [0.5, 0.5]], optax.adam, [0.1, 0.01], steps=5, batch_size=32)
    assert src.size == 4
    ask, tell = jax.jit(src.ask), jax.jit(src.tell)
    state = src.init(jax.random.key(0), params)
    pop, state = ask(jax.random.key(1), state, params, batch, jnp.ones(4, bool))
    assert pop["w"].shape == (4, 3, 2)
    assert sorted(np.asarray(state.order).tolist()) == [0, 1, 2, 3]
    acc = M.accuracy(apply)
    fitness = jax.vmap(lambda p: M.value(acc, acc.stats(p, batch)))(pop)
    assert float(fitness.max()) > 0.8  # rollouts learned the toy task
    selected = jnp.arange(4) == 2
    row = int(state.order[2])
    fb = Feedback(fitness, selected, jax.tree.map(lambda a: a[2], pop), jnp.array(False))
    state = tell(jax.random.key(2), state, pop, fb)
    assert int(state.last) == row
    # the winning row committed its optimizer state (adam's count moved), the others did not
    counts = np.asarray(state.committed[0].count)
    assert counts[row] == 5 and all(counts[i] == 0 for i in range(4) if i != row)
    _, state = ask(jax.random.key(3), state, fb.params, batch, jnp.ones(4, bool))
    assert int(state.order[0]) == row  # slot 0 continues the last winner


def test_mixture_grid_rejects_bad_tables():
    apply, _, _ = _toy()
    with pytest.raises(ValueError, match="weights"):
        mixture_grid([losses.cross_entropy(apply)], [[1.0, 0.0]], optax.adam, [0.1])
    with pytest.raises(ValueError, match="learning_rates"):
        mixture_grid([losses.cross_entropy(apply)], [[1.0]], optax.adam, [0.0])


def test_repeats_draw_distinct_minibatches_or_are_refused():
    import ev3evo

    apply, batch, params = _toy()
    ce = losses.cross_entropy(apply)
    with pytest.raises(ValueError, match="repeats=4 without batch_size would make 4 identical"):
        ev3evo.gradient_rollouts([ce], [optax.sgd(0.1)], steps=2, repeats=4)
    src = ev3evo.gradient_rollouts([ce], [optax.sgd(0.1)], steps=2, repeats=4, batch_size=16)
    state = src.init(jax.random.key(0), params)
    pop, _ = src.ask(jax.random.key(1), state, params, batch, jnp.ones(4, bool))
    w = np.asarray(pop["w"]).reshape(4, -1)
    assert len({tuple(np.round(row, 6)) for row in w}) == 4  # four different candidates


def test_optimizer_choice_rows_are_their_own_optimizers_rollouts():
    """One group whose rows choose Adam, SGD with momentum or a masked Adam gives, row by row,
    the candidates of that optimizer's own group (same key, same minibatches), and each row's
    state advances only the chosen optimizer."""
    from ev3evo.explore import biased
    from ev3evo.explore.gradient import RolloutGroup, optimizer_choice, rollouts

    apply, batch, params = _toy()
    ce = losses.cross_entropy(apply)
    loss = lambda p, b, data: ce(p, b)
    masked = lambda learning_rate: biased.masked(optax.adam(learning_rate), keep=0.5, seed=3)
    factories = [optax.adam, lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
                 masked]
    lrs = [0.05, 0.1, 0.02]
    choice = optax.inject_hyperparams(optimizer_choice(factories))(learning_rate=0.1, choice=0)
    fused = rollouts([RolloutGroup(loss, choice, rows=3, hyperparams={
        "learning_rate": jnp.asarray(lrs), "choice": jnp.arange(3)})], steps=4, batch_size=32)
    state = fused.init(jax.random.key(0), params)
    pop, state = jax.jit(fused.ask)(jax.random.key(1), state, params, batch, jnp.ones(3, bool))
    for row, (factory, lr) in enumerate(zip(factories, lrs)):
        one = optax.inject_hyperparams(factory)(learning_rate=lr)
        alone = rollouts([RolloutGroup(loss, one, rows=3, hyperparams={
            "learning_rate": jnp.full(3, lr)})], steps=4, batch_size=32)
        ref, _ = jax.jit(alone.ask)(jax.random.key(1), alone.init(jax.random.key(0), params),
                                    params, batch, jnp.ones(3, bool))
        for a, b in zip(jax.tree.leaves(pop), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a[row]), np.asarray(b[row]), rtol=1e-5,
                                       atol=1e-6)
    # the end states: row i moved optimizer i only (adam's count, the masked chain's adam count)
    inner = state.pending[0].inner_state
    adam_counts = np.asarray(inner[0][0].count)[:, 0]
    masked_counts = np.asarray(inner[2][1][0].count)[:, 0]
    assert adam_counts.tolist() == [4, 0, 0] and masked_counts.tolist() == [0, 0, 4]
    with pytest.raises(TypeError, match="factories"):
        optimizer_choice([optax.adam(0.1), 3])


def test_slots_roll_out_only_the_rotating_slots_candidates():
    """With ``slots=K`` a rotating group offers K slots a step and rolls out only their
    candidates: each is the rollout the full grid makes for that candidate (same key, same
    minibatches); the winner's row commits its state and leads the next step; a source of
    several groups, a fixed order or more slots than candidates is refused."""
    from ev3evo.explore.gradient import RolloutGroup, rollouts

    apply, batch, params = _toy()
    ce = losses.cross_entropy(apply)
    group = RolloutGroup(lambda p, b, scale: scale * ce(p, b),
                         optax.inject_hyperparams(optax.adam)(learning_rate=0.1), rows=6,
                         data=jnp.linspace(0.5, 1.5, 6),
                         hyperparams={"learning_rate": jnp.geomspace(0.01, 0.2, 6)})
    full = rollouts([group], steps=4, batch_size=32, order="rotate")
    some = rollouts([group], steps=4, batch_size=32, order="rotate", slots=2)
    assert (full.size, some.size) == (6, 2)
    ref, ref_state = jax.jit(full.ask)(jax.random.key(1), full.init(jax.random.key(0), params),
                                       params, batch, jnp.ones(6, bool))
    state = some.init(jax.random.key(0), params)
    pop, state = jax.jit(some.ask)(jax.random.key(1), state, params, batch, jnp.ones(2, bool))
    order = np.asarray(state.order)
    assert order.tolist() == np.asarray(ref_state.order)[:2].tolist()
    for a, b in zip(jax.tree.leaves(pop), jax.tree.leaves(ref)):
        assert a.shape[0] == 2
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[:2], rtol=1e-5, atol=1e-6)
    fb = Feedback(jnp.array([0.0, 1.0]), jnp.array([False, True]),
                  jax.tree.map(lambda a: a[1], pop), jnp.array(False))
    state = jax.jit(some.tell)(jax.random.key(2), state, pop, fb)
    counts = np.asarray(state.committed[0].count)
    assert int(state.last) == order[1] and counts[order[1]] == 4 and counts.sum() == 4
    _, state = jax.jit(some.ask)(jax.random.key(3), state, fb.params, batch, jnp.ones(2, bool))
    assert int(state.order[0]) == order[1]  # slot 0 continues the last winner
    with pytest.raises(ValueError, match="one rollout group and order='rotate'"):
        rollouts([group, group], steps=2, order="rotate", slots=2)
    with pytest.raises(ValueError, match="one rollout group and order='rotate'"):
        rollouts([group], steps=2, slots=2)
    with pytest.raises(ValueError, match="slots=7 exceeds the group's 6 candidates"):
        rollouts([group], steps=2, order="rotate", slots=7)
