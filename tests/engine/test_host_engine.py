"""EV3 with host sources: the staged step (JAX parts compiled, host parts on the host)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo

TARGET = np.array([1.0, -2.0, 0.5, 1.5], np.float32)


def _quadratic_metric():
    """Per-example utility -(w - t_i)² with noisy targets t_i around TARGET (maximized)."""

    def stats(params, batch):
        return -jnp.sum((params["w"] - batch["t"]) ** 2, axis=1, keepdims=True)

    return ev3evo.Metric("neg_sq", stats, lambda m: m[..., 0])


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return {"t": jnp.asarray(TARGET + 0.05 * rng.normal(size=(n, 4)), jnp.float32)}


def _raising_source(size, fail_on):
    """A host source that raises in ``fail_on`` ("ask" or "tell") on its second call."""
    calls = {"ask": 0, "tell": 0}

    def init(key, params):
        return jnp.zeros((), jnp.int32)

    def ask(key, state, params, batch, active):
        calls["ask"] += 1
        if fail_on == "ask" and calls["ask"] == 2:
            raise RuntimeError("boom in ask")
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (size, *x.shape)) + 0.3, params), state

    def tell(key, state, population, feedback):
        calls["tell"] += 1
        if fail_on == "tell" and calls["tell"] == 2:
            raise RuntimeError("boom in tell")
        return state + 1

    return ev3evo.Source(init, ask, tell, size, f"flaky_{fail_on}", host=True), calls


@pytest.fixture(scope="module")
def mixed_run():
    """Six steps of EV3 mixing a nevergrad source and a JAX gaussian source."""
    params = {"w": jnp.zeros(4, jnp.float32)}
    ng_src = ev3evo.nevergrad_source("TwoPointsDE", 6, seed=1, sigma=0.5)
    engine = ev3evo.EV3(
        [ng_src, ev3evo.gaussian(6, sigma=0.3)], [_quadratic_metric()],
        gate=ev3evo.Gate(accept="better"))
    state = engine.init(jax.random.key(0), params)
    batch = _batch()
    start = float(_quadratic_metric().stats(params, batch).mean())
    records = []
    for t in range(6):
        state, info = engine.step(jax.random.key(t + 1), state, batch, batch)
        records.append(engine.record(info))
    yield engine, state, records, start
    ev3evo.nevergrad_close(state.sources.parts[0])


def test_mixed_host_and_jax_sources_improve(mixed_run):
    _, state, records, start = mixed_run
    final = records[-1]["current"]["neg_sq"]
    assert final > start + 1.0, (start, final)
    assert all(r["host_errors"] == [] for r in records)
    assert int(state.sources.parts[0].step) == 6  # nevergrad told every step
    # the nevergrad optimizer has seen asks and tells through the engine
    opt = ev3evo.nevergrad_optimizer(state.sources.parts[0])
    assert opt.num_tell >= opt.num_ask > 0


def test_staged_stages_compile_once(mixed_run):
    engine, *_ = mixed_run
    explore, adapt = engine.step.stages  # the two JAX stages around the host calls
    assert explore._cache_size() == 1
    assert adapt._cache_size() == 1


def test_all_jax_engine_keeps_the_fused_step():
    engine = ev3evo.EV3([ev3evo.gaussian(4, 0.1)], [_quadratic_metric()])
    assert not engine.host and hasattr(engine.step, "lower")  # one jitted function


@pytest.mark.parametrize("fail_on", ["ask", "tell"])
def test_a_raising_host_source_is_isolated(fail_on):
    params = {"w": jnp.zeros(4, jnp.float32)}
    flaky, calls = _raising_source(3, fail_on)
    engine = ev3evo.EV3([flaky, ev3evo.gaussian(4, sigma=0.3)], [_quadratic_metric()])
    state = engine.init(jax.random.key(0), params)
    batch = _batch()
    records = []
    for t in range(3):
        state, info = engine.step(jax.random.key(t + 1), state, batch, batch)
        records.append(engine.record(info))
    errors = [r["host_errors"] for r in records]
    assert errors[0] == [] and errors[2] == []
    assert errors[1] == [{"source": "flaky_" + fail_on, "phase": fail_on,
                          "error": f"RuntimeError: boom in {fail_on}"}]
    if fail_on == "ask":
        assert records[1]["num_invalid"] == 3  # its slots were NaN: invalid, -inf fitness
        assert records[1]["winner_source"] in (None, "gaussian")
        assert calls["tell"] == 2  # not told on the step it failed to ask
    assert int(state.step) == 3
    assert int(state.sources.parts[0]) == 2  # the failed step kept the host state
