"""Bad input everywhere a user gives something: a clear ValueError/TypeError, never a traceback.

Property tests (hypothesis) throw generated bad data at the loaders and generated damage at the
checkpoint reader: the result is either valid or a clear ``DataError`` / ``CheckpointError``
(both ``ValueError``), never another exception. Configuration and parameter mistakes are a
table of cases, each with the message that names the problem. The command line turns all of
them into a one-line message and exit code 2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ev3evo
from ev3evo.cli import main as cli_main
from ev3evo.distillation import data as D
from ev3evo.io import CheckpointError, read_checkpoint, save_checkpoint

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- data loaders
def _check_dataset(ds: D.Dataset) -> None:
    """What a loader promises when it accepts the data."""
    assert ds.num_classes >= 2
    for split in (ds.train, ds.val, ds.test):
        x, y = np.asarray(split["x"]), np.asarray(split["y"])
        assert len(x) == len(y) > 0
        assert x.dtype == np.float32 and np.all(np.isfinite(x))
        assert y.dtype == np.int32 and y.min() >= 0 and y.max() < ds.num_classes
    assert set(np.unique(np.asarray(ds.train["y"]))) >= set(np.unique(np.asarray(ds.test["y"])))


def _accepts_or_refuses(load):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own overflow notes
        try:
            ds = load()
        except ValueError as e:  # DataError is a ValueError
            assert str(e), "an empty message"
            return e
    _check_dataset(ds)
    return ds


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def arrays_xy(draw):
    n = draw(st.integers(0, 12))
    m = draw(st.integers(0, 12)) if draw(st.booleans()) else n
    d = draw(st.integers(1, 3))
    x = np.asarray(draw(st.lists(finite_or_not, min_size=n * d, max_size=n * d)), np.float64)
    x = x.reshape(n, d)
    labels = draw(st.sampled_from(["ints", "negative", "floats", "strings", "one_class"]))
    if labels == "ints":
        y = np.asarray(draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)), np.int64)
    elif labels == "negative":
        y = np.asarray(draw(st.lists(st.integers(-3, 3), min_size=m, max_size=m)), np.int64)
    elif labels == "floats":
        y = np.asarray(draw(st.lists(finite_or_not, min_size=m, max_size=m)), np.float64)
    elif labels == "strings":
        y = np.asarray(draw(st.lists(st.sampled_from(["a", "b", ""]), min_size=m, max_size=m)))
    else:
        y = np.zeros(m, np.int64)
    return x, y


@FAST
@given(arrays_xy())
def test_from_arrays_accepts_valid_data_or_says_what_is_wrong(xy):
    x, y = xy
    _accepts_or_refuses(lambda: D.from_arrays(x, y, name="gen"))


cell = st.one_of(
    st.sampled_from(["1", "0", "-2.5", "nan", "inf", "", "abc", "1e400", " 3 ", "a,b", '"q']),
    st.text(max_size=4),
)


@st.composite
def csv_text(draw):
    cols = draw(st.integers(1, 4))
    header = draw(st.lists(st.sampled_from(["a", "b", "label", "x", ""]), min_size=cols,
                           max_size=cols))
    rows = draw(st.lists(st.lists(cell, min_size=max(cols - 1, 0), max_size=cols + 1),
                         max_size=10))
    return "\n".join(",".join(r) for r in [header, *rows])


@FAST
@given(csv_text(), st.sampled_from([None, "label", "missing"]))
def test_csv_files_load_or_fail_with_a_data_error(tmp_path_factory, text, label):
    path = tmp_path_factory.mktemp("csv") / "gen.csv"
    path.write_text(text, encoding="utf-8")
    _accepts_or_refuses(lambda: D.load_file(path, label=label))


@st.composite
def npz_arrays(draw):
    names = draw(st.lists(st.sampled_from(["x", "y", "x_train", "y_train", "x_val", "y_val",
                                           "x_test", "y_test", "other"]), unique=True,
                          max_size=6))
    out = {}
    for name in names:
        n = draw(st.integers(0, 8))
        kind = draw(st.sampled_from(["float", "int", "str", "bool", "2d", "scalar"]))
        if kind == "float":
            out[name] = np.asarray(draw(st.lists(finite_or_not, min_size=n, max_size=n)))
        elif kind == "int":
            out[name] = np.asarray(draw(st.lists(st.integers(-2, 3), min_size=n, max_size=n)),
                                   np.int64)
        elif kind == "str":
            out[name] = np.asarray(draw(st.lists(st.sampled_from(["u", "v"]), min_size=n,
                                                 max_size=n)), dtype="<U1")
        elif kind == "bool":
            out[name] = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
        elif kind == "2d":
            out[name] = np.asarray(draw(st.lists(finite_or_not, min_size=2 * n,
                                                 max_size=2 * n))).reshape(n, 2)
        else:
            out[name] = np.float64(draw(finite_or_not))
    return out


@FAST
@given(npz_arrays())
def test_npz_files_load_or_fail_with_a_data_error(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("npz") / "gen.npz"
    np.savez(path, **arrays)
    _accepts_or_refuses(lambda: D.load_file(path))


@FAST
@given(st.binary(max_size=200), st.sampled_from([".npz", ".csv", ".txt", ""]))
def test_arbitrary_bytes_are_refused_clearly(tmp_path_factory, blob, ext):
    path = tmp_path_factory.mktemp("raw") / f"blob{ext}"
    path.write_bytes(blob)
    result = _accepts_or_refuses(lambda: D.load_file(path))
    if ext not in (".npz", ".csv"):
        assert isinstance(result, D.DataError)
        assert "unsupported format" in str(result) or (not blob and "empty" in str(result))


def test_the_named_data_mistakes_each_get_a_message_that_names_them(tmp_path):
    cases = {
        "missing.csv": (None, "no such file"),
        "empty.csv": ("", "empty"),
        "header_only.csv": ("a,b,label\n", "no data rows"),
        "text_feature.csv": ("a,label\n1,0\nx,1\n", "non-numeric value 'x' in column 'a'"),
        "nan_feature.csv": ("a,label\n1,0\nnan,1\n", "missing value \\('nan'\\) in column 'a'"),
        "empty_feature.csv": ("a,label\n1,0\n,1\n", "missing value \\(an empty cell\\)"),
        "inf_feature.csv": ("a,label\n1,0\ninf,1\n", "not finite"),
        "one_class.csv": ("a,label\n1,0\n2,0\n3,0\n4,0\n5,0\n", "only one class"),
        "ragged.csv": ("a,b,label\n1,2,0\n1,1\n", "has 2 fields, the header has 3"),
        "float_label.csv": ("a,label\n1,0.5\n2,1\n", "non-integer number '0.5'"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(D.DataError, match=message):
            D.load_file(path)
    np.savez(tmp_path / "lengths.npz", x=np.zeros((5, 2)), y=np.zeros(4, np.int64))
    with pytest.raises(D.DataError, match="x has 5 examples but y has 4 labels"):
        D.load_file(tmp_path / "lengths.npz")
    np.savez(tmp_path / "negative.npz", x=np.zeros((6, 2)), y=np.array([0, 1, -1, 0, 1, 0]))
    with pytest.raises(D.DataError, match="out of range: -1 is negative"):
        D.load_file(tmp_path / "negative.npz")
    np.savez(tmp_path / "columns.npz", features=np.zeros((6, 2)), target=np.zeros(6))
    with pytest.raises(D.DataError, match="expected arrays 'x' and 'y'"):
        D.load_file(tmp_path / "columns.npz")
    with pytest.raises(D.DataError, match="no label column 'target'"):
        (tmp_path / "ok.csv").write_text("a,label\n1,0\n2,1\n")
        D.load_file(tmp_path / "ok.csv", label="target")


# ----------------------------------------------------------------------------- configuration
def _metric():
    return ev3evo.metrics.per_example("score", lambda p, b: b["x"] @ p["w"])


_GATE_FIELDS = set(ev3evo.Gate._fields)
_ALLOCATION_FIELDS = set(ev3evo.Allocation._fields)


def _settings(kw: dict) -> dict:
    """Engine keyword arguments with gate and allocation fields grouped into their settings."""
    gate = {k: kw.pop(k) for k in list(kw) if k in _GATE_FIELDS}
    allocation = {k: kw.pop(k) for k in list(kw) if k in _ALLOCATION_FIELDS}
    return {**kw, "gate": ev3evo.Gate(**gate), "allocation": ev3evo.Allocation(**allocation)}


def _engine(**kw):
    kw.setdefault("sources", [ev3evo.gaussian(4, 0.1)])
    kw.setdefault("metrics", [_metric()])
    return ev3evo.EV3(**_settings(kw))


CONFIG_CASES = [
    (dict(sources=[]), ValueError, "mix\\(\\) needs at least one source"),
    (dict(sources=[lambda k, p: p]), TypeError, "not an ev3evo.Source"),
    (dict(metrics=[]), ValueError, "needs at least one metric"),
    (dict(metrics=["accuracy"]), TypeError, "must be ev3evo.Metric"),
    (dict(objectives=["acc"]), ValueError, "objective names unknown metric 'acc'"),
    (dict(constraints=["agreement>=0.9"]), ValueError,
     "constraint names unknown metric 'agreement'"),
    (dict(constraints=["score=0.9"]), ValueError, "cannot read constraint 'score=0.9'"),
    (dict(constraints=["score>=high"]), ValueError, "cannot read constraint"),
    (dict(alpha=0.0), ValueError, "alpha must be in \\(0, 1\\)"),
    (dict(alpha=1.0), ValueError, "alpha must be in \\(0, 1\\)"),
    (dict(alpha=-0.1), ValueError, "alpha must be in \\(0, 1\\)"),
    (dict(alpha="0.05"), TypeError, "alpha must be a number"),
    (dict(population_size=0), ValueError, "population_size must be a positive integer"),
    (dict(population_size=-4), ValueError, "population_size must be a positive integer"),
    (dict(population_size=2.5), TypeError, "population_size must be a positive integer"),
    (dict(population_size=99), ValueError, "exceeds the sources' total size 4"),
    (dict(bootstrap=0), ValueError, "bootstrap must be a positive integer"),
    (dict(correction="fdr"), ValueError, "correction must be"),
    (dict(accept="maybe"), ValueError, "accept must be"),
    (dict(certify="both"), ValueError, "certify must be 'primary' or 'lexicographic'"),
    (dict(certify="lexicographic"), ValueError, 'certify="lexicographic" needs correction="split"'),
    (dict(credit_decay=1.0), ValueError, "credit_decay must be in \\[0, 1\\)"),
    (dict(credit_prior=0.0), ValueError, "credit_prior must be > 0"),
    (dict(patience=0), ValueError, "patience must be a positive integer"),
    (dict(min_slots=0), ValueError, "min_slots must be a positive integer"),
    (dict(objectives=[ev3evo.Objective("score", -0.1)]), ValueError,
     "tolerance of objective 'score' must be a non-negative number"),
    (dict(metrics=[_metric(), _metric()]), ValueError, "metric names must be unique"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CONFIG_CASES,
                         ids=[next(iter(c[0])) + str(i) for i, c in enumerate(CONFIG_CASES)])
def test_engine_configuration_mistakes_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        _engine(**kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ev3evo.gaussian(0), "size must be a positive integer"),
        (lambda: ev3evo.gaussian(-2), "size must be a positive integer"),
        (lambda: ev3evo.sparse(4, rate=1.5), "rate must be in \\(0, 1\\]"),
        (lambda: ev3evo.mutation("not a function", 4), "must be callable"),
        (lambda: ev3evo.gradient_rollouts([], [optax.sgd(0.1)]), "at least one loss"),
        (lambda: ev3evo.gradient_rollouts([lambda p, b: 0.0], [optax.sgd(0.1)], steps=0),
         "steps must be a positive integer"),
        (lambda: ev3evo.gradient_rollouts([lambda p, b: 0.0], [optax.sgd(0.1)], batch_size=-8),
         "batch_size must be a positive integer"),
        (lambda: ev3evo.gradient_rollouts([lambda p, b: 0.0], ["adam"]),
         "optax.GradientTransformation"),
        (lambda: ev3evo.metrics.get("acuracy", lambda p, x: x), "unknown metric 'acuracy'"),
    ],
)
def test_source_and_metric_mistakes_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@FAST
@given(st.floats(allow_nan=False))
def test_alpha_is_accepted_exactly_inside_the_open_unit_interval(alpha):
    if 0 < alpha < 1:
        assert _engine(alpha=alpha).gate.alpha == alpha
    else:
        with pytest.raises(ValueError, match="alpha must be in"):
            _engine(alpha=alpha)


@FAST
@given(st.text(max_size=20))
def test_parse_constraint_reads_a_constraint_or_says_how_to_write_one(text):
    try:
        c = ev3evo.parse_constraint(text)
    except ValueError as e:
        assert "METRIC>=VALUE" in str(e)
    else:
        assert c.op in (">=", "<=") and c.metric == text.partition(c.op)[0].strip()


def test_run_budget_mistakes_are_named():
    engine = _engine()
    params = {"w": jnp.zeros(3)}
    batch = {"x": jnp.ones((4, 3))}
    key = jax.random.key(0)
    for steps in (0, -5, 2.5):
        with pytest.raises((ValueError, TypeError), match="steps must be a positive integer"):
            ev3evo.run(engine, key, params, batch, batch, steps)
    for budget in (0, -1.0, "60"):
        with pytest.raises(ValueError, match="time_budget must be a positive number"):
            ev3evo.run(engine, key, params, batch, batch, 3, time_budget=budget)
    with pytest.raises(ValueError, match="needs params or a state"):
        ev3evo.run(engine, key, None, batch, batch, 3)


# ----------------------------------------------------------------------------- model / params
def test_parameter_mistakes_are_named():
    engine = _engine()
    key = jax.random.key(0)
    batch = {"x": jnp.ones((4, 3))}
    with pytest.raises(TypeError, match="every parameter must be a floating-point array"):
        engine.init(key, {"w": jnp.zeros(3, jnp.int32)})
    with pytest.raises(ValueError, match="params is an empty pytree"):
        engine.init(key, {})
    state = engine.init(key, {"w": jnp.zeros(3)})
    # A model whose structure does not fit the metric: named, with the missing key.
    renamed = engine.init(key, {"W": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"metric 'score' failed on the evaluation batch.*'w'"):
        engine.step(key, renamed, batch, batch)
    # A model whose shape does not fit the data.
    wrong = engine.init(key, {"w": jnp.zeros(5)})
    with pytest.raises(ValueError, match="metric 'score' failed on the evaluation batch"):
        engine.step(key, wrong, batch, batch)
    # An evaluation batch whose leaves disagree on the number of examples.
    with pytest.raises(ValueError, match="share one leading \\(example\\) axis"):
        engine.step(key, state, batch, {"x": jnp.ones((4, 3)), "y": jnp.ones(5)})


def test_a_source_returning_the_wrong_shapes_is_named():
    def bad(key, params):
        return {"w": jnp.zeros(4)}

    engine = _engine(sources=[ev3evo.mutation(bad, 2, name="bad")])
    state = engine.init(jax.random.key(0), {"w": jnp.zeros(3)})
    batch = {"x": jnp.ones((4, 3))}
    with pytest.raises(ValueError, match="source 'bad' returned leaf \\['w'\\] with shape"):
        engine.step(jax.random.key(1), state, batch, batch)


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    tree = {"step": np.int32(4), "w": np.arange(6, dtype=np.float32), "k": jax.random.key(0)}
    path = save_checkpoint(directory, tree, key=jax.random.key(1), history=[{"step": 4}],
                           metadata={"arch": [2]})
    return open(path, "rb").read()


@FAST
@given(st.data())
def test_damaged_checkpoints_are_refused_clearly(tmp_path_factory, checkpoint_bytes, data):
    blob = bytearray(checkpoint_bytes)
    how = data.draw(st.sampled_from(["truncate", "flip", "overwrite", "append"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    elif how == "overwrite":
        i = data.draw(st.integers(0, len(blob) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        blob[i : i + len(chunk)] = chunk
    else:
        blob += data.draw(st.binary(min_size=1, max_size=16))
    directory = tmp_path_factory.mktemp("damaged")
    (directory / "ckpt-000000004.ev3").write_bytes(bytes(blob))
    try:
        got = read_checkpoint(directory)
    except CheckpointError as e:
        assert "ckpt-000000004.ev3" in str(e)
    else:  # only an undamaged file may load (e.g. an overwrite with the same bytes)
        assert bytes(blob) == checkpoint_bytes and got.step == 4


# ----------------------------------------------------------------------------- command line
def _cli(capsys, *argv):
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_cli_reports_bad_input_in_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "one_class.csv").write_text("a,label\n" + "".join(f"{i},7\n" for i in range(9)))
    np.savez(tmp_path / "lengths.npz", x=np.zeros((5, 2)), y=np.zeros(4, np.int64))
    out = str(tmp_path / "out")
    cases = [
        (["--data", str(tmp_path / "nope.csv")], "no such file"),
        (["--data", str(tmp_path / "one_class.csv")], "only one class"),
        (["--data", str(tmp_path / "lengths.npz")], "x has 5 examples but y has 4"),
        (["--metric", "acuracy"], "unknown metric 'acuracy'"),
        (["--constraint", "agreement=0.9"], "cannot read constraint"),
        (["--constraint", "nope>=0.9"], "unknown metric 'nope'"),
        (["--alpha", "1.5"], "alpha must be in \\(0, 1\\)"),
        (["--resume", str(tmp_path / "no-such-run")], "no such directory"),
        (["--resume", str(tmp_path)], "no checkpoint in"),
        (["--out", ""], "--out must name a folder, got an empty string"),
        (["--resume", str(tmp_path), "--out", out], f"--resume {tmp_path} writes its outputs "
         f"into {tmp_path}, but --out names {out}"),
    ]
    for args, message in cases:
        where = [] if "--resume" in args or "--out" in args else ["--out", out]
        code, err = _cli(capsys, "distill", *where, "--quiet", "--no-baselines", *args)
        assert code == 2, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("ev3evo distill: error:") and re.search(message, err), err
    for args in (["--steps", "0"], ["--steps", "-3"], ["--population", "x"]):
        with pytest.raises(SystemExit) as e:
            cli_main(["distill", *args])
        assert e.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # every option is named in its own error
        cli_main(["distill", "--seed", "-1"])
    assert "argument --seed: expected an integer from 0 to" in capsys.readouterr().err


def test_cli_seeds_out_of_range_name_the_flag(capsys):
    """Seeds are 32-bit (jax.random.key keeps the low 32 bits: 2**32 would be seed 0 again)."""
    for word, shown in [("-1", "-1"), ("99999999999999999999", "99999999999999999999"),
                        ("4294967296", "4294967296"), ("x", "'x'")]:
        with pytest.raises(SystemExit) as e:
            cli_main(["distill", "--seed", word])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("ev3evo distill: error: argument --seed: expected an integer "
                              f"from 0 to 4294967295, got {shown}"), err
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 4294967295"):
        ev3evo.distill(seed=2**32, progress=False)


def test_cli_refuses_damaged_or_foreign_checkpoints(tmp_path, capsys):
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    from ev3evo.distillation.options import DistillConfig
    from ev3evo.distillation.resume import run_config

    config = run_config(DistillConfig(seed=99))
    path = save_checkpoint(ckpts, {"step": np.int32(2)}, metadata={"config": config})
    code, err = _cli(capsys, "distill", "--resume", str(run_dir), "--quiet", "--no-baselines",
                     "--out", str(run_dir))
    assert code == 2 and "other settings" in err and "seed: 99 then, 0 now" in err, err
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    code, err = _cli(capsys, "distill", "--resume", str(run_dir), "--quiet", "--no-baselines",
                     "--out", str(run_dir))
    assert code == 2 and "no usable checkpoint" in err and "checksum" in err, err


def test_the_real_command_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ev3evo.cli", "distill", "--data", str(tmp_path / "missing.npz"),
         "--out", str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("missing.npz: no such file")


def test_the_command_tells_its_version():
    from importlib.metadata import version

    done = subprocess.run([sys.executable, "-m", "ev3evo.cli", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"ev3evo {version('ev3evo')}"
