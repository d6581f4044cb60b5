"""Models with carried state (``ev3evo.Stateful``): gradient rollouts update the state the way
training does, every other source carries it unchanged, the engine runs them under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ev3evo
from ev3evo.explore.stateful import Stateful, on_params, value_and_grad


def _problem():
    """A linear classifier with a running mean of its logits and a call counter: the state a
    batch-norm layer and an RNG stream would carry."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
    y = (x[:, 0] > 0).astype(jnp.int32)

    def train_logits(model, x):
        h = x @ model.params["w"]
        state = {"mean": 0.9 * model.state["mean"] + 0.1 * h.mean(0),
                 "calls": model.state["calls"] + 1}
        return h, state

    def loss(model, batch):
        h, state = train_logits(model, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(h, batch["y"]).mean(), state

    def apply(model, x):  # eval mode: reads the running mean, changes nothing
        return x @ model.params["w"] - model.state["mean"]

    model = Stateful({"w": jnp.zeros((4, 2))},
                     {"mean": jnp.zeros(2), "calls": jnp.zeros((), jnp.uint32)})
    return loss, apply, model, {"x": x, "y": y}


def test_value_and_grad_differentiates_the_parameters_only():
    loss, _, model, batch = _problem()
    value, grads, state = value_and_grad(loss)(model, batch)
    assert jax.tree.structure(grads) == jax.tree.structure(model.params)
    assert int(state["calls"]) == 1 and float(value) == pytest.approx(np.log(2), rel=1e-5)
    plain = value_and_grad(lambda p, b: jnp.sum(p["w"] ** 2))
    _, g, none = plain({"w": jnp.ones(3)}, batch)
    assert none is None and g["w"].tolist() == [2.0, 2.0, 2.0]


def test_rollouts_carry_the_state_each_rollout_ends_with():
    loss, _, model, batch = _problem()
    src = ev3evo.gradient_rollouts([loss], [optax.sgd(0.5), optax.adam(0.05)], steps=7,
                                   repeats=2, batch_size=16)
    state = src.init(jax.random.key(0), model)
    # the optimizer states are those of the parameters
    assert jax.tree.structure(state.committed[0]) == jax.tree.structure(
        ev3evo.explore.gradient._tree.broadcast(optax.sgd(0.5).init(model.params), 1))
    pop, state = jax.jit(src.ask)(jax.random.key(1), state, model, batch, jnp.ones(4, bool))
    assert isinstance(pop, Stateful) and pop.params["w"].shape == (4, 4, 2)
    assert pop.state["calls"].tolist() == [7, 7, 7, 7]  # 7 training forward passes each
    assert bool(jnp.all(jnp.abs(pop.state["mean"]) > 0))
    assert not np.allclose(pop.state["mean"][0], pop.state["mean"][2])  # their own rollout


@pytest.mark.parametrize("make", [
    lambda: ev3evo.gaussian(4, sigma=0.3),
    lambda: ev3evo.mix(ev3evo.cauchy(2, 0.1), ev3evo.sparse(2, 0.3, rate=0.5)),
    lambda: ev3evo.evosax_source("Open_ES", 4, std_schedule=optax.constant_schedule(0.1),
                                 optimizer=optax.sgd(1.0)),
], ids=["gaussian", "mix", "open_es"])
def test_other_sources_move_the_parameters_and_carry_the_state(make):
    _, _, model, batch = _problem()
    model = model._replace(state={"mean": jnp.array([0.5, -0.5]),
                                  "calls": jnp.asarray(3, jnp.uint32)})
    src = on_params(make())
    state = src.init(jax.random.key(0), model)
    pop, state = jax.jit(src.ask)(jax.random.key(1), state, model, batch, jnp.ones(4, bool))
    assert pop.state["calls"].tolist() == [3] * 4
    np.testing.assert_array_equal(np.asarray(pop.state["mean"]), [[0.5, -0.5]] * 4)
    assert not np.allclose(pop.params["w"], 0.0)
    fb = ev3evo.Feedback(jnp.arange(4.0), jnp.zeros(4, bool), model, jnp.array(False))
    jax.jit(src.tell)(jax.random.key(2), state, pop, fb)  # tell sees the parameters
    if src.parts:
        assert [p.name for p in src.parts] == ["cauchy", "sparse"]  # wrapped part by part


def test_guided_es_searches_the_parameters_of_a_stateful_model():
    loss, _, model, batch = _problem()
    src = ev3evo.guided_es(loss, 5, sigma=0.1)
    state = src.init(jax.random.key(0), model)
    pop, state = jax.jit(src.ask)(jax.random.key(1), state, model, batch, jnp.ones(5, bool))
    assert pop.params["w"].shape == (5, 4, 2) and pop.state["calls"].tolist() == [0] * 5


def test_the_engine_runs_a_stateful_model_and_only_gradients_change_its_state():
    loss, apply, model, batch = _problem()
    engine = ev3evo.EV3(
        [ev3evo.gradient_rollouts([loss], [optax.sgd(0.5)], steps=5),
         on_params(ev3evo.gaussian(4, sigma=0.05)), ev3evo.guided_es(loss, 3)],
        [ev3evo.metrics.accuracy(apply)], gate=ev3evo.Gate(correction="holm"))
    state = engine.init(jax.random.key(0), model)
    first = engine.step._cache_size() if hasattr(engine.step, "_cache_size") else None
    for t in range(4):
        before = state.current
        state, info = engine.step(jax.random.key(t), state, batch, batch)
        record = engine.record(info)
        calls = int(state.current.state["calls"]) - int(before.state["calls"])
        if record["accepted"] and record["winner_source"] == "gradient":
            assert calls == 5
        elif not record["rolled_back"]:
            assert calls == 0, record["winner_source"]
    assert float(info.current_values[0]) > 0.8
    if first is not None:
        assert engine.step._cache_size() == 1  # compiled once
    result = jax.lax.scan(lambda s, k: engine.step(k, s, batch, batch),
                          state, jax.random.split(jax.random.key(9), 2))
    assert int(result[0].step) == 6


def test_the_engine_says_how_to_split_a_model_it_cannot_explore():
    _, apply, model, _ = _problem()
    engine = ev3evo.EV3([ev3evo.gaussian(2)], [ev3evo.metrics.accuracy(apply)])
    with pytest.raises(TypeError, match=r"dtype key<fry> at \['key'\].*Stateful\(params, "
                                        r"state\).*nnx.split\(model, nnx.Param, \.\.\.\)"):
        engine.init(jax.random.key(0), {"w": jnp.ones(2), "key": jax.random.key(0)})
    typed = model._replace(state={"key": jax.random.key(0)})
    with pytest.raises(TypeError, match=r"typed PRNG key at \['key'\].*key_data"):
        engine.init(jax.random.key(0), typed)
