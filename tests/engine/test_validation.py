"""Bad input at the API boundary: a clear error that names the problem, never a JAX traceback.

Errors inside ``EV3.step`` are raised while the step is traced, before anything is compiled,
so these tests are cheap. (tests/test_bad_input.py covers data files, checkpoints and the
command line.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from _registry import example_problem

import ev3evo

PROBLEM = example_problem()
ACC = ev3evo.metrics.accuracy(PROBLEM.apply)


def step_with(sources=None, metrics=None, params=None, train=None, evaluation=None, **kw):
    """Builds an engine and traces one step."""
    engine = ev3evo.EV3(sources or [ev3evo.gaussian(4)], metrics or [ACC], **kw)
    state = engine.init(jax.random.key(0), PROBLEM.params if params is None else params)
    batch = PROBLEM.batch
    return engine.step(jax.random.key(1), state, train or batch, evaluation or batch)


def source(ask, tell=None, size=2, init=None, name="custom"):
    init = init or (lambda key, params: ())
    tell = tell or (lambda key, state, population, feedback: state)
    return ev3evo.Source(init, ask, tell, size, name)


def copies(params, n=2):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), params)


# ------------------------------------------------------------ candidates that do not fit
def test_candidates_with_another_pytree_structure():
    renamed = lambda k, s, p, b, a: ({"W": copies(p)["w"], "b": copies(p)["b"]}, s)
    with pytest.raises(ValueError, match=r"source 'custom' returned candidates whose pytree "
                                         r"structure differs from the model parameters"):
        step_with([source(renamed)])
    as_list = ev3evo.mutation(lambda key, params: list(params.values()), 4, name="listy")
    with pytest.raises(ValueError, match="source 'listy' returned candidates whose pytree"):
        step_with([as_list])


def test_candidates_with_wrong_shapes_or_population_size():
    wrong_size = lambda k, s, p, b, a: (copies(p, 3), s)
    with pytest.raises(ValueError, match=r"leaf \['b'\] with shape \(3, 3\); expected \(2, 3\)"):
        step_with([source(wrong_size)])
    unbatched = lambda k, s, p, b, a: (p, s)
    with pytest.raises(ValueError, match=r"source 'custom' returned leaf \['b'\] with shape"):
        step_with([source(unbatched)])


def test_candidates_with_another_dtype():
    to_int = ev3evo.mutation(lambda k, p: jax.tree.map(lambda x: x.astype(jnp.int32), p), 4,
                             name="rounding")
    with pytest.raises(TypeError, match=r"source 'rounding' returned leaf \['b'\] with dtype "
                                        r"int32; the model parameter has dtype float32"):
        step_with([to_int])


def test_source_failing_on_the_training_batch_is_named():
    gradient = ev3evo.gradient_rollouts([PROBLEM.loss], [optax.sgd(0.1)], steps=2)
    with pytest.raises(ValueError, match=r"source 'gradient' failed to propose candidates: "
                                         r"KeyError: 'y'"):
        step_with([gradient], train={"x": PROBLEM.batch["x"]})
    with pytest.raises(ValueError, match="source 'gradient' failed to propose candidates: "
                                         "TypeError: dot_general"):
        step_with([gradient], train={"x": PROBLEM.batch["x"][:, :3], "y": PROBLEM.batch["y"]})
    one_argument = ev3evo.mutation(lambda params: params, 4, name="forgot_key")
    with pytest.raises(ValueError, match="source 'forgot_key' failed to propose candidates"):
        step_with([one_argument])


def test_source_state_that_changes_shape():
    grows = source(
        ask=lambda k, s, p, b, a: (copies(p), s),
        init=lambda key, params: {"n": jnp.zeros(3)},
        tell=lambda key, state, pop, fb: {"n": jnp.zeros(4)},
        name="grows",
    )
    with pytest.raises(ValueError, match=r"source 'grows' \(in tell\) changed state leaf "
                                         r"\['n'\] from float32\[3\] to float32\[4\]"):
        step_with([grows])
    restructured = source(
        ask=lambda k, s, p, b, a: (copies(p), {"m": s["n"]}),
        init=lambda key, params: {"n": jnp.zeros(3)},
        name="renames",
    )
    with pytest.raises(ValueError, match=r"source 'renames' \(in ask\) changed the structure"):
        step_with([restructured])


# ------------------------------------------------------------ metrics
def test_metric_returning_a_scalar():
    mean = ev3evo.metrics.per_example("mean_score", lambda p, b: jnp.mean(b["x"] @ p["w"]))
    with pytest.raises(ValueError, match=r"metric 'mean_score' returned a scalar; a metric must "
                                         r"return one score per example \(shape \(48,\)\)"):
        step_with(metrics=[mean])


def test_metric_returning_the_wrong_length():
    short = ev3evo.metrics.per_example("short", lambda p, b: b["x"][:10, 0])
    with pytest.raises(ValueError, match=r"metric 'short' returned scores for 10 examples .* but "
                                         "the evaluation batch has 48"):
        step_with(metrics=[short])
    transposed = ev3evo.Metric("cols", lambda p, b: jnp.ones((2, 48)), lambda m: m[..., 0],
                               decomposable=False)
    with pytest.raises(ValueError, match="metric 'cols' returned scores for 2 examples"):
        step_with(metrics=[transposed])


def test_metric_returning_something_else():
    pair = ev3evo.Metric("pair", lambda p, b: (b["y"], b["y"]), lambda m: m[..., 0])
    with pytest.raises(ValueError, match="metric 'pair' must return an array, got tuple"):
        step_with(metrics=[pair])
    wide = ev3evo.Metric("wide", lambda p, b: jnp.ones((48, 3)), lambda m: m[..., 0])
    with pytest.raises(ValueError, match="metric 'wide' is marked decomposable but returns 3"):
        step_with(metrics=[wide])


def test_metric_that_does_not_fit_the_model_or_batch():
    with pytest.raises(ValueError, match="metric 'accuracy' failed on the evaluation batch: "
                                         "KeyError: 'y'"):
        step_with(evaluation={"x": PROBLEM.batch["x"]})
    with pytest.raises(ValueError, match="metric 'accuracy' failed on the evaluation batch: "
                                         "KeyError: 'b'"):
        step_with(params={"w": PROBLEM.params["w"]})


def test_unknown_metric_name():
    with pytest.raises(ValueError, match=r"unknown metric 'accuracy5'; known metrics: .*top5"):
        ev3evo.metrics.get("accuracy5", PROBLEM.apply)


_GATE_FIELDS = set(ev3evo.Gate._fields)
_ALLOCATION_FIELDS = set(ev3evo.Allocation._fields)


def _settings(kw: dict) -> dict:
    """Engine keyword arguments with gate and allocation fields grouped into their settings."""
    gate = {k: kw.pop(k) for k in list(kw) if k in _GATE_FIELDS}
    allocation = {k: kw.pop(k) for k in list(kw) if k in _ALLOCATION_FIELDS}
    return {**kw, "gate": ev3evo.Gate(**gate), "allocation": ev3evo.Allocation(**allocation)}


# ------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(population_size=0), ValueError, "population_size must be a positive integer, got 0"),
        (dict(population_size=-3), ValueError, "population_size must be a positive integer"),
        (dict(population_size=9), ValueError,
         "population_size 9 exceeds the sources' total size 8"),
        (dict(population_size=1), ValueError,
         "population_size 1 is below the 2 slots needed to give each of the 2 sources"),
        (dict(objectives=["acc"]), ValueError,
         r"objective names unknown metric 'acc'; metrics: \['accuracy'\]"),
        (dict(constraints=["agreement>=0.9"]), ValueError,
         "constraint names unknown metric 'agreement'"),
        (dict(constraints=["accuracy > 0.9"]), ValueError,
         "cannot read constraint 'accuracy > 0.9'; write it as METRIC>=VALUE"),
        (dict(constraints=[ev3evo.Constraint("accuracy", "==", 0.9)]), ValueError,
         "constraint operator must be '>=' or '<='"),
        (dict(alpha=0.0), ValueError, r"alpha must be in \(0, 1\), got 0.0"),
        (dict(alpha=1.5), ValueError, r"alpha must be in \(0, 1\), got 1.5"),
        (dict(alpha=None), TypeError, "alpha must be a number"),
    ],
)
def test_engine_configuration(kwargs, error, message):
    with pytest.raises(error, match=message):
        ev3evo.EV3([ev3evo.gaussian(4), ev3evo.cauchy(4)], [ACC], **_settings(dict(kwargs)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ev3evo.gaussian(0), "size must be a positive integer, got 0"),
        (lambda: ev3evo.cauchy(-1), "size must be a positive integer, got -1"),
        (lambda: ev3evo.per_layer(2.5), "size must be a positive integer, got 2.5"),
        (lambda: ev3evo.mutation(lambda k, p: p, 0), "size must be a positive integer"),
        (lambda: ev3evo.gradient_rollouts([PROBLEM.loss], [optax.sgd(0.1)], repeats=0),
         "repeats must be a positive integer, got 0"),
        (lambda: ev3evo.gradient_rollouts([PROBLEM.loss], [optax.sgd(0.1)], steps=-1),
         "steps must be a positive integer, got -1"),
        (lambda: ev3evo.gradient_rollouts([PROBLEM.loss], []), "at least one loss and one"),
        (lambda: ev3evo.gradient_rollouts([PROBLEM.loss], [optax.sgd(0.1)], sync="some"),
         "sync must be 'winner' or 'all'"),
    ],
)
def test_source_sizes_and_options(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_integer_or_empty_params():
    engine = ev3evo.EV3([ev3evo.gaussian(4)], [ACC])
    ints = jax.tree.map(lambda x: x.astype(jnp.int32), PROBLEM.params)
    with pytest.raises(TypeError, match="every parameter must be a floating-point array; got "
                                        "dtype int32"):
        engine.init(jax.random.key(0), ints)
    with pytest.raises(ValueError, match="params is an empty pytree"):
        engine.init(jax.random.key(0), {})



@pytest.mark.parametrize("text", ["accuracy>=1.5", "accuracy<=-0.1"])
def test_a_constraint_that_cannot_hold_is_refused(text):
    with pytest.raises(ValueError, match="cannot hold: accuracy lies in \\[0, 1\\]"):
        ev3evo.EV3([ev3evo.gaussian(4)], [ACC], constraints=[text])
    ev3evo.EV3([ev3evo.gaussian(4)], [ACC], constraints=["accuracy>=1.0"])  # possible: kept
