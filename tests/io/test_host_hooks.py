"""Host state through the public ``dump``/``load`` hooks: a user's own host source resumes
bit-identically, and a tampered checkpoint runs no code unless the user trusts the file.
"""

from __future__ import annotations

import ast
import pathlib
import pickle
import random
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _history import untimed

import ev3evo
from ev3evo.io import CheckpointError, read_checkpoint
from ev3evo.io import checkpoint as ck
from ev3evo.io import format as fmt

STEPS, CUT = 8, 3


def _random_walk_source(size: int, seed: int, restore: bool = True) -> ev3evo.Source:
    """A user-written host source: a Python ``random.Random`` on the host draws the candidates.

    The state pytree holds a token into this source's own table and a step size that adapts
    (so the resume must restore both the pytree and the host generator). With
    ``restore=False`` its ``load`` ignores the data and restarts the generator from the seed.
    """
    generators: dict[int, random.Random] = {}

    def new_token(rng: random.Random) -> jax.Array:
        token = len(generators) + 1
        generators[token] = rng
        return jnp.asarray(token, jnp.int32)

    def init(key, params):
        del key
        return {"token": new_token(random.Random(seed)), "sigma": jnp.float32(0.5)}

    def ask(key, state, params, batch, active):
        rng = generators[int(state["token"])]
        sigma = float(state["sigma"])
        w = np.asarray(params["w"], np.float64)
        rows = [w + sigma * np.array([rng.gauss(0.0, 1.0) for _ in w]) for _ in range(size)]
        return {"w": np.asarray(rows, np.float32)}, state

    def tell(key, state, population, feedback):
        won = bool(np.any(np.asarray(feedback.selected)))
        return {**state, "sigma": state["sigma"] * jnp.float32(1.2 if won else 0.9)}

    def dump(state):
        version, internal, gauss_next = generators[int(state["token"])].getstate()
        return {"version": version, "internal": list(internal), "gauss_next": gauss_next}

    def load(state, data):
        rng = random.Random(seed)
        if restore:
            rng.setstate((data["version"], tuple(data["internal"]), data["gauss_next"]))
        return {**state, "token": new_token(rng)}

    return ev3evo.Source(init, ask, tell, size, "random_walk", host=True, dump=dump, load=load)


def _engine(source: ev3evo.Source) -> ev3evo.EV3:
    metric = ev3evo.metrics.per_example("neg_sq", lambda p, b: -jnp.sum((p["w"] - 1) ** 2) + 0 * b)
    return ev3evo.EV3([source, ev3evo.gaussian(2, 0.05)], [metric],
                      gate=ev3evo.Gate(accept="better"))


def _leaves(state, skip=("token", "handle")):
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    out = {}
    for path, x in flat:
        name = jax.tree_util.keystr(path)
        if any(s in name for s in skip):
            continue
        out[name] = np.asarray(jax.random.key_data(x) if fmt.is_key(x) else x)
    return out


def test_a_user_host_source_resumes_bit_identically_through_its_hooks(tmp_path):
    import shutil

    params, batch, key = {"w": jnp.zeros(3, jnp.float32)}, jnp.zeros(8), jax.random.key(4)
    reference = ev3evo.run(_engine(_random_walk_source(4, seed=7)), key, params, batch, batch,
                           STEPS)
    first = ev3evo.run(_engine(_random_walk_source(4, seed=7)), key, params, batch, batch, CUT,
                       checkpoint_dir=tmp_path / "a")
    assert first.steps == CUT and read_checkpoint(tmp_path / "a").pickles == ()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    # A new source object, as in a new process: its table knows nothing of the first run's.
    resumed = ev3evo.run(_engine(_random_walk_source(4, seed=7)), key, params, batch, batch,
                         STEPS, checkpoint_dir=tmp_path / "a", resume=True)
    assert resumed.steps == STEPS - CUT
    assert untimed(resumed.history) == untimed(reference.history)
    a, b = _leaves(reference.state), _leaves(resumed.state)
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # The comparison sees the host state: a load that restarts the generator from its seed
    # instead of restoring it gives another run.
    restarted = ev3evo.run(_engine(_random_walk_source(4, seed=7, restore=False)), key, params,
                           batch, batch, STEPS, checkpoint_dir=tmp_path / "b", resume=True)
    assert untimed(restarted.history[:CUT]) == untimed(reference.history[:CUT])
    assert untimed(restarted.history[CUT:]) != untimed(reference.history[CUT:])


class _Shell:
    """A malicious pickle: unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _tamper(path: str, replacement: bytes) -> int:
    """Replaces every pickle in the checkpoint's host data, recomputing the checksum."""
    from flax import serialization

    blob = open(path, "rb").read()
    doc = serialization.msgpack_restore(blob[fmt.HEADER.size :])
    replaced = 0

    def walk(x):
        nonlocal replaced
        if isinstance(x, dict):
            for k, v in x.items():
                if k == fmt.PICKLE_KEY:
                    x[k] = replacement
                    replaced += 1
                else:
                    walk(v)

    walk(doc["host"])
    open(path, "wb").write(fmt.pack(doc))  # header, version and a valid SHA-256
    return replaced


def test_a_tampered_checkpoint_executes_nothing_by_default(tmp_path):
    marker = tmp_path / "pwned"
    params, batch, key = {"w": jnp.zeros(3, jnp.float32)}, jnp.zeros(8), jax.random.key(1)

    def engine():
        return _engine(ev3evo.nevergrad_source("TwoPointsDE", 4, seed=2))

    run_dir = tmp_path / "run"
    first = ev3evo.run(engine(), key, params, batch, batch, 2, checkpoint_dir=run_dir)
    ev3evo.nevergrad_close(first.state.sources.parts[0])
    path = ck.list_checkpoints(run_dir)[0][1]
    assert _tamper(path, pickle.dumps(_Shell(marker))) == 1
    assert read_checkpoint(run_dir).step == 2  # intact as far as the checksum goes

    with pytest.raises(CheckpointError, match=r"pickled host data .*trust_pickles=True"):
        ev3evo.run(engine(), key, params, batch, batch, 4, checkpoint_dir=run_dir, resume=True)
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(CheckpointError, match="pickled host data"):
        ck.load_checkpoint(run_dir, engine().init(key, params), engine=engine())
    assert not marker.exists()
    # The pickle is real: a user who trusts the file runs it (and nevergrad's hook then
    # refuses what it produced).
    with pytest.raises(CheckpointError, match="not a nevergrad optimizer"):
        ev3evo.run(engine(), key, params, batch, batch, 4, checkpoint_dir=run_dir, resume=True,
                   trust_pickles=True)
    assert marker.exists()


def test_a_pickle_without_its_mark_is_not_unpickled(tmp_path):
    """Stripping the mark (bare bytes where the hook expects a Pickled) is refused too."""
    marker = tmp_path / "pwned"
    params, key = {"w": jnp.zeros(3, jnp.float32)}, jax.random.key(1)
    eng = _engine(ev3evo.nevergrad_source("TwoPointsDE", 4, seed=2))
    state = eng.init(key, params)
    path = ck.save_checkpoint(tmp_path, state, engine=eng)
    from flax import serialization

    blob = open(path, "rb").read()
    doc = serialization.msgpack_restore(blob[fmt.HEADER.size :])
    doc["host"]["0"]["optimizer"] = pickle.dumps(_Shell(marker))  # no marker dict
    open(path, "wb").write(fmt.pack(doc))
    assert read_checkpoint(tmp_path).pickles == ()
    with pytest.raises(CheckpointError, match="no optimizer marked as a pickle"):
        ck.load_checkpoint(tmp_path, state, engine=eng, trust_pickles=True)
    assert not marker.exists()
    ev3evo.nevergrad_close(state.sources.parts[0])


def test_dump_hooks_must_return_plain_data(tmp_path):
    source = _random_walk_source(2, seed=1)
    bad = source._replace(dump=lambda state: {"rng": random.Random(0)})
    eng = _engine(bad)
    state = eng.init(jax.random.key(0), {"w": jnp.zeros(3, jnp.float32)})
    with pytest.raises(TypeError, match=r"host data of source .*\['0'\]\['rng'\] is a Random"):
        ck.save_checkpoint(tmp_path, state, engine=eng)
    assert ck.list_checkpoints(tmp_path) == []


def test_the_io_package_imports_no_source_module():
    """``ev3evo.io`` reaches host state only through the hooks: it imports nothing from
    ``ev3evo.explore`` (nor any other phase)."""
    root = pathlib.Path(ev3evo.__file__).parent / "io"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert "explore" not in module and "sys" != module, (path.name, module)
                if node.level >= 2:
                    assert node.module == "types", (path.name, module)
            elif isinstance(node, ast.Import):
                assert all("ev3evo" not in a.name for a in node.names), path.name
            elif isinstance(node, ast.Attribute):
                assert node.attr != "modules" or getattr(node.value, "id", "") != "sys", path.name
