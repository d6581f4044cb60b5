"""End to end: EV3 on digits with held-out accuracy, allocation, stalls and the run driver."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import same_structure

import ev3evo

STEPS = 30


def accuracy_of(apply, params, batch) -> float:
    return float(jnp.mean(jnp.argmax(apply(params, batch["x"]), -1) == batch["y"]))


@pytest.fixture(scope="module")
def digits_run(digits_mlp, digits):
    apply, params, train, val = digits_mlp
    engine = ev3evo.EV3(
        sources=[
            ev3evo.gradient_rollouts(
                [ev3evo.losses.cross_entropy(apply)],
                [optax.sgd(0.3, momentum=0.9), optax.adam(0.02)],
                steps=5, batch_size=128, repeats=2,
            ),
            ev3evo.gaussian(8, sigma=0.02),
        ],
        metrics=[ev3evo.metrics.accuracy(apply)],
        allocation=ev3evo.Allocation(population_size=6),
    )
    result = ev3evo.run(engine, jax.random.key(0), params, train, val, STEPS)
    return engine, result, apply, params, digits


def test_stable_held_out_accuracy_never_decreases_and_improves(digits_run):
    engine, result, apply, params, digits = digits_run
    assert result.status == "finished" and result.steps == STEPS
    start = accuracy_of(apply, params, digits["val"])
    stable = [r["stable"]["accuracy"] for r in result.history]
    print(f"\nstable validation accuracy: start {start:.4f}, "
          f"after 1 step {stable[0]:.4f}, after {STEPS} steps {stable[-1]:.4f}")
    assert all(b >= a for a, b in zip([start, *stable], stable)), stable
    assert stable[-1] >= start + 0.3, (start, stable[-1])
    # The record is the real held-out accuracy of the returned stable model.
    assert stable[-1] == pytest.approx(accuracy_of(apply, result.stable, digits["val"]), abs=1e-6)
    # And it generalizes to untouched test data.
    test_start = accuracy_of(apply, params, digits["test"])
    assert accuracy_of(apply, result.stable, digits["test"]) >= test_start + 0.25
    # Each certification is a strict improvement; between them the stable model is fixed.
    for prev, rec in zip(result.history, result.history[1:]):
        if rec["certified"]:
            assert rec["stable"]["accuracy"] > prev["stable"]["accuracy"]
        else:
            assert rec["stable"]["accuracy"] == prev["stable"]["accuracy"]
    assert engine.step._cache_size() == 1


def test_allocation_shifts_to_the_winner_without_starving(digits_run):
    engine, result, *_ = digits_run
    names = engine.source_names
    steps = result.history[1:]  # after the record of the starting model
    counts = np.array([[r["allocation"][n] for n in names] for r in steps])
    winners = [r["winner_source"] if r["accepted"] else None for r in steps]
    print(f"\nwinners by step {winners}\nslots by step {counts.tolist()}")
    assert np.all(counts.sum(1) == 6)
    assert np.all(counts >= engine.allocation.min_slots), counts  # nobody is ever starved
    assert counts[0].tolist() == [3, 3]  # no evidence yet: an even split
    # Replay the documented credit rule (EMA of 1 for the step's winner, +1 if accepted, +1 if
    # certified) from the history: the engine's final credit matches, and at every step the
    # source with clearly more credit got at least as many slots.
    decay, credit = engine.allocation.credit_decay, np.zeros(len(names))
    for t, rec in enumerate(steps):
        reward = np.zeros(len(names))
        if rec["winner_source"] is not None:
            reward[names.index(rec["winner_source"])] = (
                1.0 + rec["accepted"] + (rec["accepted"] and rec["certified"]))
        credit = decay * credit + (1 - decay) * reward
        if t + 1 < len(steps) and abs(credit[0] - credit[1]) > 0.05:
            hi = int(np.argmax(credit))
            assert counts[t + 1, hi] >= counts[t + 1, 1 - hi], (t, credit, counts[t + 1])
    np.testing.assert_allclose(result.state.allocation.credit, credit, rtol=1e-4, atol=1e-6)
    assert len({tuple(c) for c in counts}) > 1, "the allocation never moved"
    # The gradient source wins the early steps, and gains slots right away.
    assert winners[0] == "gradient" and counts[1, 0] > counts[0, 0]


# --------------------------------------------------------------- the run driver, stalls
@pytest.fixture(scope="module")
def still(toy):
    """An engine whose only source proposes the current model: it never certifies."""
    keep = ev3evo.mutation(lambda key, params: params, size=4, name="still")
    engine = ev3evo.EV3([keep], metrics=[ev3evo.metrics.accuracy(toy.apply)], patience=3)
    return engine, toy


def test_stall_detection_and_on_stall_hook(still, tmp_path):
    engine, toy = still
    calls = []
    grown = jax.tree.map(lambda x: x * 2.0, toy.params)

    def on_stall(key, eng, state):
        calls.append(int(state.step))
        if len(calls) == 1:
            return eng, eng.replace_params(key, state, grown, grown)
        return None

    path = tmp_path / "logs" / "history.jsonl"
    result = ev3evo.run(
        engine, jax.random.key(1), toy.params, toy.batch, toy.batch, steps=7,
        on_stall=on_stall, callbacks=[ev3evo.JSONLHistory(path)],
    )
    assert result.status == "finished" and result.steps == 7
    assert result.history[0]["initial"] and result.history[0]["step"] == 0
    stalled = [r["stalled"] for r in result.history[1:]]
    assert not any(r["certified"] for r in result.history)
    # Stalled from step 3 (patience 3); the hook's replace_params restarts the count.
    assert stalled == [False, False, True, False, False, True, True]
    assert calls == [3, 6, 7]
    assert int(result.state.since_certified) == 4
    for a, b in zip(jax.tree.leaves(result.state.stable), jax.tree.leaves(grown)):
        np.testing.assert_array_equal(a, b)
    lines = path.read_text().splitlines()
    assert len(lines) == 8  # the starting model, then the 7 steps
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == list(range(0, 8))
    assert records[-1]["stalled"] and set(records[0]) >= {"stable", "current", "allocation"}
    assert engine.step._cache_size() == 1


def test_step_info_stalled_flag(still):
    engine, toy = still
    state = engine.init(jax.random.key(0), toy.params)
    flags = []
    for t in range(4):
        state, info = engine.step(jax.random.key(t), state, toy.batch, toy.batch)
        flags.append(bool(info.stalled))
    assert flags == [False, False, True, True]
    assert int(state.since_certified) == 4


def test_early_stopping_and_time_budget(still):
    engine, toy = still
    result = ev3evo.run(engine, jax.random.key(2), toy.params, toy.batch, toy.batch, steps=10,
                        callbacks=[ev3evo.EarlyStopping(patience=2)])
    # The starting model sets the best; no gain at steps 1 and 2.
    assert result.status == "stopped" and result.steps == 2
    result = ev3evo.run(engine, jax.random.key(2), toy.params, toy.batch, toy.batch, steps=10,
                        time_budget=1e-9)
    assert result.status == "time_budget" and result.steps == 0 and result.history == []
    # Continuing from a state runs only the remaining steps.
    first = ev3evo.run(engine, jax.random.key(3), toy.params, toy.batch, toy.batch, steps=2)
    more = ev3evo.run(engine, jax.random.key(3), None, toy.batch, toy.batch, steps=4,
                      state=first.state)
    assert more.steps == 2 and int(more.state.step) == 4


def test_failing_callback_with_throw_false_keeps_the_last_state(still):
    engine, toy = still

    class Boom(ev3evo.Callback):
        def on_step(self, record, state, engine):
            if record["step"] == 2:
                raise RuntimeError("boom")

    result = ev3evo.run(engine, jax.random.key(4), toy.params, toy.batch, toy.batch, steps=5,
                        callbacks=[Boom()], throw=False)
    assert result.status == "failed" and "RuntimeError: boom" in result.error
    assert int(result.state.step) == 2
    with pytest.raises(RuntimeError, match="boom"):
        ev3evo.run(engine, jax.random.key(4), toy.params, toy.batch, toy.batch, steps=5,
                   callbacks=[Boom()])


def test_replace_params_reinitializes_sources_and_keeps_the_record(toy):
    engine = ev3evo.EV3(
        [ev3evo.gradient_rollouts([toy.loss], [optax.adam(0.1)], steps=2)],
        metrics=[ev3evo.metrics.accuracy(toy.apply)],
    )
    state = engine.init(jax.random.key(0), toy.params)
    for t in range(2):
        state, _ = engine.step(jax.random.key(t), state, toy.batch, toy.batch)
    adam_count = lambda s: int(s.sources.parts[0].committed[0][0].count[0])
    assert adam_count(state) > 0  # the optimizer has taken steps
    new = jax.tree.map(lambda x: x + 1.0, toy.params)
    replaced = engine.replace_params(jax.random.key(9), state, new, toy.params)
    assert same_structure(replaced, state)
    assert adam_count(replaced) == 0
    assert int(replaced.step) == 2 and int(replaced.since_certified) == 0
    np.testing.assert_array_equal(replaced.allocation.wins, state.allocation.wins)
    np.testing.assert_array_equal(replaced.current["w"], new["w"])
    np.testing.assert_array_equal(replaced.stable["w"], toy.params["w"])


@pytest.mark.parametrize("correction, selection", [("fresh", False), ("sequential", False),
                                                    ("sequential", True)])
def test_fresh_data_gates_certify_on_a_fresh_batch_every_step(correction, selection):
    """A teacher that labels fresh inputs every step: the gate certifies agreement gains on
    them; the step compiles once; the state keeps its structure. With ``selection`` the
    candidates are also selected on a fresh batch of their own."""
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=(4, 3)).astype(np.float32)
    apply = lambda p, x: x @ p["w"]

    def labelled(x):
        return {"x": x, "y": jnp.argmax(x @ w_true, -1), "teacher": x @ w_true}

    val = labelled(jnp.asarray(rng.normal(size=(200, 4)), jnp.float32))

    def evaluation(key, step):
        k_test, k_select = jax.random.split(key)
        chosen_on = labelled(jax.random.normal(k_select, (500, 4))) if selection else None
        return ev3evo.Evaluation(val, labelled(jax.random.normal(k_test, (2000, 4))), chosen_on)

    engine = ev3evo.EV3(
        [ev3evo.gradient_rollouts([ev3evo.losses.kl_to_teacher(apply, 1.0)], [optax.sgd(0.5)],
                                  steps=5), ev3evo.gaussian(3, sigma=0.05)],
        [ev3evo.metrics.accuracy(apply), ev3evo.metrics.agreement(apply)],
        gate=ev3evo.Gate(correction=correction, evidence="agreement", period=4))
    params = {"w": jnp.asarray(0.01 * rng.normal(size=(4, 3)), jnp.float32)}
    result = ev3evo.run(engine, jax.random.key(0), params, val, evaluation, steps=12)
    certified = [r["step"] for r in result.history if r["certified"]]
    assert len(certified) >= 2, result.history
    assert result.history[-1]["stable"]["agreement"] > 0.8
    assert engine.step._cache_size() == 1
    if correction == "sequential":
        assert isinstance(result.state.gate, ev3evo.loop.GateState)
    with pytest.raises(ValueError, match="fresh batch every step"):
        engine.step(jax.random.key(0), result.state, val, val)


def test_profile_times_each_stage(digits_run):
    engine, _, _, params, digits = digits_run
    state = engine.init(jax.random.key(0), params)
    profile = engine.profile(jax.random.key(1), state, digits["train"], digits["val"], repeats=2)
    assert set(profile) == {"explore", "assess", "gate", "shares"}
    assert all(profile[k] >= 0 for k in ("explore", "assess", "gate")), profile
    assert sum(profile["shares"].values()) == pytest.approx(1.0), profile
    # 5-step rollouts of 4 candidates on 1000 examples cost more than scoring 8 arms on 400
    print(f"\nprofile: {profile}")
    assert profile["shares"]["explore"] > profile["shares"]["gate"]


def test_unused_slots_of_a_restart_ladder_are_neither_evaluated_nor_invalid():
    score = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - b) ** 2, -1))
    ladder = ev3evo.evosax_source("CMA_ES", 4, init_std=0.3, restart=ev3evo.ipop(levels=3))
    engine = ev3evo.EV3([ladder, ev3evo.gaussian(4, sigma=0.1)], [score])
    batch = jnp.ones((32, 3))
    result = ev3evo.run(engine, jax.random.key(0), {"w": jnp.zeros(3)}, batch, batch, steps=4)
    for r in result.history[1:]:
        assert r["num_unused"] == 12 and r["num_invalid"] == 0  # rung 0: 4 of 16 slots
        assert r["num_valid"] == 8
    assert result.history[-1]["current"]["score"] > result.history[0]["current"]["score"]
