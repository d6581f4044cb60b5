"""Checkpoints: exact round trips, atomic writes, fallback, clear refusals, exact resume.

The engine tests share one compiled engine (gradient rollouts with adam, an evosax SNES
source, gaussian mutations): its state holds optax states, evosax (flax struct) states and the
allocation record, so an exact resume checks every kind of state the core produces.
"""

from __future__ import annotations

import os
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from _history import untimed

import ev3evo
from ev3evo.io import (
    CheckpointError,
    CheckpointWarning,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from ev3evo.io import checkpoint as ck

STEPS = 8


def _assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- file level
def _zoo():
    """A pytree with every kind of leaf a state may hold."""
    return {
        "f32": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        "bf16": np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16),
        "f16": np.array([np.inf, -0.0], dtype=np.float16),
        "nan": np.array([np.nan, 1.0], dtype=np.float32),
        "i32": np.array(7, dtype=np.int32),
        "u8": np.arange(4, dtype=np.uint8),
        "flag": np.array([True, False]),
        "keys": jax.random.split(jax.random.key(1), 3),  # typed keys
        "raw_key": jax.random.PRNGKey(2),  # legacy uint32 key
        "empty": np.zeros((0, 2), np.float32),
        "nested": (np.float32(3.0), {"x": np.ones(1, np.float64)}),
    }


def test_roundtrip_is_exact_for_every_kind_of_leaf(tmp_path):
    tree = _zoo()
    key = jax.random.key(9)
    history = [{"step": 1, "stable": {"acc": float("nan")}, "x": float("inf")}]
    path = save_checkpoint(tmp_path, tree, key=key, history=history, metadata={"arch": [3, 4]})
    assert os.path.basename(path) == "ckpt-000000000.ev3"
    got = load_checkpoint(tmp_path, template=_zoo())
    _assert_trees_equal(got.state, tree)
    assert ck.same_key(got.key, key)
    assert got.metadata == {"arch": [3, 4]}
    assert got.history[0]["x"] == float("inf") and np.isnan(got.history[0]["stable"]["acc"])


def test_keeps_the_last_k_and_leaves_no_temporary_files(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, {"step": np.int32(step)}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 4]
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000004.ev3", "ckpt-000000005.ev3"]
    with pytest.raises(ValueError, match="keep must be a positive integer"):
        save_checkpoint(tmp_path, {"step": np.int32(1)}, keep=0)


def _two_checkpoints(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, {"step": np.int32(step), "w": np.full(3, step, np.float32)})
    return ck.checkpoint_path(tmp_path, 2)


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _flip(path):
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _garbage(path):
    open(path, "wb").write(b"not a checkpoint at all")


def _empty(path):
    open(path, "wb").close()


@pytest.mark.parametrize("damage", [_truncate, _flip, _garbage, _empty])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    newest = _two_checkpoints(tmp_path)
    damage(newest)
    template = {"step": np.int32(0), "w": np.zeros(3, np.float32)}
    with pytest.warns(CheckpointWarning, match="ckpt-000000002.ev3"):
        got = load_checkpoint(tmp_path, template)
    assert got.step == 1 and got.state["w"].tolist() == [1.0, 1.0, 1.0]


def test_only_damaged_checkpoints_is_a_clear_error(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, {"step": np.int32(step)})
        _truncate(ck.checkpoint_path(tmp_path, step))
    with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*checksum does not match"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "nothing-here", {"step": np.int32(0)})
    assert read_checkpoint(tmp_path / "nothing-here") is None


def test_a_checkpoint_of_another_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, {"step": np.int32(3)})
    data = bytearray(open(path, "rb").read())
    data[8:12] = struct.pack("<I", ck.VERSION + 1)
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match=f"format version {ck.VERSION + 1}.*reads version"):
        read_checkpoint(tmp_path)


def test_a_checkpoint_of_another_configuration_is_refused_with_the_difference(tmp_path):
    tree = {"step": np.int32(1), "w": np.zeros((4, 2), np.float32)}
    save_checkpoint(tmp_path, tree, metadata={"config": {"hidden": 8}})
    wider = {"step": np.int32(0), "w": np.zeros((4, 3), np.float32)}
    with pytest.raises(CheckpointError, match=r"leaf \['w'\] is float32\[4, 2\].*float32\[4, 3\]"):
        load_checkpoint(tmp_path, wider)
    other_dtype = {"step": np.int32(0), "w": np.zeros((4, 2), np.float16)}
    with pytest.raises(CheckpointError, match="float16"):
        load_checkpoint(tmp_path, other_dtype)
    with pytest.raises(CheckpointError, match="leaves only here"):
        load_checkpoint(tmp_path, {**tree, "extra": np.zeros(1, np.float32)})
    expected = r"run configuration .* differs \(hidden: 8 in the checkpoint, 16 here"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path, tree, config={"hidden": 16})
    assert load_checkpoint(tmp_path, tree).metadata["config"] == {"hidden": 8}


def test_growth_metadata_tells_which_model_to_rebuild(tmp_path):
    """After growth the checkpoint holds the grown shapes; its metadata says how to rebuild."""
    grown = {"step": np.int32(7), "w1": np.ones((3, 6), np.float32)}
    save_checkpoint(tmp_path, grown, metadata={"arch": {"hidden": [6]}})
    meta = read_checkpoint(tmp_path).metadata
    assert meta == {"arch": {"hidden": [6]}}
    small = {"step": np.int32(0), "w1": np.zeros((3, 4), np.float32)}
    with pytest.raises(CheckpointError, match="another configuration"):
        load_checkpoint(tmp_path, small)
    rebuilt = {"step": np.int32(0), "w1": np.zeros((3, meta["arch"]["hidden"][0]), np.float32)}
    assert load_checkpoint(tmp_path, rebuilt).step == 7


def test_stale_temporary_files_are_ignored_and_cleaned(tmp_path):
    save_checkpoint(tmp_path, {"step": np.int32(1)})
    stale = tmp_path / ".ckpt-000000002.ev3.tmp-deadbeef"
    stale.write_bytes(b"half a checkpoint")
    assert read_checkpoint(tmp_path).step == 1
    assert ck.remove_stale_temporaries(tmp_path) == 1 and not stale.exists()


def test_non_array_state_leaves_are_refused_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="leaf \\['opt'\\] of type object"):
        save_checkpoint(tmp_path, {"opt": object()})
    with pytest.raises(TypeError, match="JSON-serializable"):
        save_checkpoint(tmp_path, {"w": np.zeros(1)}, metadata={"f": object()})


def _nevergrad_engine(hooks=True):
    ng_src = ev3evo.nevergrad_source("TwoPointsDE", 4, seed=1, sigma=0.3)
    if not hooks:
        ng_src = ng_src._replace(dump=None, load=None)
    metric = ev3evo.metrics.per_example("neg_sq", lambda p, b: -jnp.sum((p["w"] - 1) ** 2) + 0 * b)
    return ev3evo.EV3([ng_src, ev3evo.gaussian(2, 0.1)], [metric])


def test_nevergrad_optimizers_are_saved_through_their_dump_hook(tmp_path):
    """The optimizer goes through the source's hooks as a marked pickle, restored only on trust;
    the restored optimizer then proposes exactly what the original does."""
    engine, batch = _nevergrad_engine(), jnp.zeros(8)
    state = engine.init(jax.random.key(0), {"w": jnp.zeros(3, jnp.float32)})
    for t in range(3):
        state, _ = engine.step(jax.random.key(t), state, batch, batch)
    save_checkpoint(tmp_path, state, engine=engine)
    saved = read_checkpoint(tmp_path)
    assert saved.pickles == ("host['0']['optimizer']",)
    template = engine.init(jax.random.key(0), {"w": jnp.zeros(3, jnp.float32)})
    with pytest.raises(CheckpointError, match=r"pickled host data .*trust_pickles=True"):
        load_checkpoint(tmp_path, template, engine=engine)
    restored = load_checkpoint(tmp_path, template, engine=engine, trust_pickles=True).state
    ng_state = restored.sources.parts[0]
    assert int(ng_state.step) == 3 and ev3evo.nevergrad_optimizer(ng_state).num_tell > 0
    for t in range(3, 6):  # the restored optimizer proposes exactly what the original does
        state, a = engine.step(jax.random.key(t), state, batch, batch)
        restored, b = engine.step(jax.random.key(t), restored, batch, batch)
        assert engine.record(a) == engine.record(b)
        np.testing.assert_array_equal(restored.current["w"], state.current["w"])
    for s in (state, restored, template):
        ev3evo.nevergrad_close(s.sources.parts[0])


def test_host_data_and_hooks_must_go_together(tmp_path):
    """Same configuration, but hooks on one side only: refused, naming what is missing."""
    hooked, bare = _nevergrad_engine(), _nevergrad_engine(hooks=False)
    state = hooked.init(jax.random.key(0), {"w": jnp.zeros(3, jnp.float32)})
    save_checkpoint(tmp_path / "a", state, engine=hooked)
    with pytest.raises(CheckpointError, match="holds host data, but no source here has a load"):
        load_checkpoint(tmp_path / "a", state, engine=bare, trust_pickles=True)
    save_checkpoint(tmp_path / "b", state, engine=bare)
    with pytest.raises(CheckpointError, match=r"holds no host data, but source .* dump hook"):
        load_checkpoint(tmp_path / "b", state, engine=hooked, trust_pickles=True)
    ev3evo.nevergrad_close(state.sources.parts[0])


# ----------------------------------------------------------------------------- with a run
@pytest.fixture(scope="module")
def problem():
    from _problems import linear_two_class

    from ev3evo.explore.evosax import evosax_source

    batch, apply = linear_two_class()

    engine = ev3evo.EV3(
        [
            ev3evo.gradient_rollouts(
                [ev3evo.losses.cross_entropy(apply)], [optax.adam(0.05)], steps=2, batch_size=16
            ),
            evosax_source("SNES", 4, init_std=0.1),
            ev3evo.gaussian(3, sigma=0.1),
        ],
        [ev3evo.metrics.neg_loss(apply)],
        allocation=ev3evo.Allocation(population_size=6),
    )
    params = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    key = jax.random.key(5)
    reference = ev3evo.run(engine, key, params, batch, batch, STEPS)
    return engine, params, batch, key, reference


def test_same_seed_same_configuration_gives_identical_runs(problem):
    engine, params, batch, key, reference = problem
    again = ev3evo.run(engine, key, params, batch, batch, STEPS)
    _assert_trees_equal(again.state, reference.state)
    assert untimed(again.history) == untimed(reference.history)
    other = ev3evo.run(engine, jax.random.key(6), params, batch, batch, STEPS)
    assert untimed(other.history) != untimed(reference.history)  # the seed matters


def test_resume_continues_bit_identically(problem, tmp_path):
    engine, params, batch, key, reference = problem
    meta = lambda e, s: {"config": {"hidden": 0}, "sources": list(e.source_names)}
    first = ev3evo.run(engine, key, params, batch, batch, 3, checkpoint_dir=tmp_path,
                       checkpoint_metadata=meta)
    assert first.status == "finished" and read_checkpoint(tmp_path).step == 3
    saved = read_checkpoint(tmp_path)
    assert saved.metadata["sources"] == list(engine.source_names)
    resumed = ev3evo.run(engine, key, params, batch, batch, STEPS, checkpoint_dir=tmp_path,
                         resume=True, checkpoint_metadata=meta)
    assert resumed.steps == STEPS - 3 and len(resumed.history) == STEPS + 1  # + the start
    _assert_trees_equal(resumed.state, reference.state)
    assert untimed(resumed.history) == untimed(reference.history)
    assert read_checkpoint(tmp_path).step == STEPS
    # Resuming a finished run does nothing and returns the same state.
    again = ev3evo.run(engine, key, params, batch, batch, STEPS, checkpoint_dir=tmp_path,
                       resume=True, checkpoint_metadata=meta)
    assert again.steps == 0
    _assert_trees_equal(again.state, reference.state)


def test_resume_refuses_another_seed_configuration_or_a_fresh_start(problem, tmp_path):
    engine, params, batch, key, _ = problem
    ev3evo.run(engine, key, params, batch, batch, 1, checkpoint_dir=tmp_path,
               checkpoint_metadata={"config": {"lr": 0.05}})
    with pytest.raises(CheckpointError, match="another PRNG key"):
        ev3evo.run(engine, jax.random.key(6), params, batch, batch, 2, checkpoint_dir=tmp_path,
                   resume=True, checkpoint_metadata={"config": {"lr": 0.05}})
    with pytest.raises(CheckpointError, match=r"run configuration .* differs.*lr"):
        ev3evo.run(engine, key, params, batch, batch, 2, checkpoint_dir=tmp_path, resume=True,
                   checkpoint_metadata={"config": {"lr": 0.1}})
    wrong = {"w": jnp.zeros(4, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    with pytest.raises(CheckpointError, match=r"leaf .current\['w'\] is float32\[3\]"):
        ev3evo.run(engine, key, wrong, batch, batch, 2, checkpoint_dir=tmp_path, resume=True,
                   checkpoint_metadata={"config": {"lr": 0.05}})
    with pytest.raises(ValueError, match="already holds checkpoints; pass resume=True"):
        ev3evo.run(engine, key, params, batch, batch, 2, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        ev3evo.run(engine, key, params, batch, batch, 2, resume=True)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        ev3evo.run(engine, key, params, batch, batch, 2, checkpoint_dir=tmp_path / "b",
                   checkpoint_every=0)


def test_checkpoint_every_n_steps_and_at_the_end(problem, tmp_path):
    engine, params, batch, key, _ = problem
    ev3evo.run(engine, key, params, batch, batch, 7, checkpoint_dir=tmp_path, checkpoint_every=3,
               keep_checkpoints=5)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7, 6, 3]


def test_a_run_whose_assessment_fails_stops_with_its_last_checkpoint(problem, tmp_path):
    """The evaluation data cannot be produced at step 5: the run stops cleanly, the checkpoint
    of step 4 is on disk, and resuming once the data is back ends as the uninterrupted run."""
    engine, params, batch, key, reference = problem

    def broken(key, step):
        if step == 4:
            raise OSError("evaluation shard 4 is unreadable")
        return batch

    result = ev3evo.run(engine, key, params, batch, broken, STEPS, checkpoint_dir=tmp_path,
                        throw=False)
    assert result.status == "failed" and result.steps == 4
    assert "evaluation shard 4 is unreadable" in result.error
    assert f"last checkpoint: step 4 in {tmp_path}" in result.error
    assert read_checkpoint(tmp_path).step == 4
    resumed = ev3evo.run(engine, key, params, batch, batch, STEPS, checkpoint_dir=tmp_path,
                         resume=True)
    _assert_trees_equal(resumed.state, reference.state)
    assert untimed(resumed.history) == untimed(reference.history)


def test_callbacks_with_a_memory_see_the_restored_history(problem, tmp_path):
    engine, params, batch, key, _ = problem

    class Memory(ev3evo.Callback):
        def __init__(self):
            self.replayed = None

        def on_resume(self, history):
            self.replayed = [r["step"] for r in history]

    ev3evo.run(engine, key, params, batch, batch, 2, checkpoint_dir=tmp_path)
    memory = Memory()
    ev3evo.run(engine, key, params, batch, batch, 3, checkpoint_dir=tmp_path, resume=True,
               callbacks=[memory])
    assert memory.replayed == [0, 1, 2]  # the start, then the steps saved
