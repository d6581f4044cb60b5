"""Built-in metrics against numpy and scikit-learn."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import f1_score

import ev3evo
from ev3evo.assess.metrics import value

N, C = 300, 5


def apply(params, x):
    return x @ params["w"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    w = rng.normal(size=(8, C)).astype(np.float32)
    logits = x @ w
    # Labels agree with the model 60% of the time, so every metric is far from its extremes.
    y = np.where(rng.uniform(size=N) < 0.6, logits.argmax(1), rng.integers(0, C, N))
    teacher = logits + rng.normal(scale=2.0, size=logits.shape).astype(np.float32)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32), "teacher": jnp.asarray(teacher)}
    return {"w": jnp.asarray(w)}, batch, logits, y, teacher


def _value(metric, params, batch):
    stats = jax.jit(metric.stats)(params, batch)
    assert stats.ndim == 2 and stats.shape[0] == N
    return float(value(metric, stats))


def test_accuracy(data):
    params, batch, logits, y, _ = data
    acc = ev3evo.metrics.accuracy(apply)
    assert acc.decomposable and acc.maximize
    assert _value(acc, params, batch) == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_accuracy(data, k):
    params, batch, logits, y, _ = data
    metric = ev3evo.metrics.top_k_accuracy(apply, k)
    topk = np.argsort(-logits, axis=1)[:, :k]
    want = np.mean([y[i] in topk[i] for i in range(N)])
    assert metric.name == f"top{k}_accuracy"
    assert _value(metric, params, batch) == pytest.approx(want, abs=1e-6)


def test_agreement_with_logits_or_labels(data):
    params, batch, logits, _, teacher = data
    want = np.mean(logits.argmax(1) == teacher.argmax(1))
    metric = ev3evo.metrics.agreement(apply)
    assert _value(metric, params, batch) == pytest.approx(want, abs=1e-6)
    labels = dict(batch, teacher=jnp.asarray(teacher.argmax(1), jnp.int32))
    assert _value(metric, params, labels) == pytest.approx(want, abs=1e-6)


def test_neg_loss(data):
    params, batch, logits, y, _ = data
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    want = np.mean(logp[np.arange(N), y])
    assert _value(ev3evo.metrics.neg_loss(apply), params, batch) == pytest.approx(want, rel=1e-5)


def test_macro_f1_matches_sklearn(data):
    params, batch, logits, y, _ = data
    metric = ev3evo.metrics.macro_f1(apply, C)
    assert not metric.decomposable
    want = f1_score(y, logits.argmax(1), average="macro")
    assert _value(metric, params, batch) == pytest.approx(want, abs=1e-5)
    # A class absent from both labels and predictions does not count (as in scikit-learn).
    wide = ev3evo.metrics.macro_f1(apply, C + 3)
    assert _value(wide, params, batch) == pytest.approx(want, abs=1e-5)


def ece_numpy(logits, y, bins=15):
    """Guo et al. (2017), eq. 3, with equal-width bins (lo, hi]."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    correct = pred == y
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_ece_matches_direct_numpy(data, scale):
    params, batch, logits, y, _ = data
    metric = ev3evo.metrics.expected_calibration_error(apply)
    assert not metric.maximize and not metric.decomposable
    scaled = {"w": params["w"] * scale}
    got = _value(metric, scaled, batch)
    assert got == pytest.approx(ece_numpy(logits * scale, y), abs=1e-5)


def test_registry_builds_every_metric_and_rejects_unknown_names(data):
    params, batch, *_ = data
    for name in ev3evo.metrics.REGISTRY:
        metric = ev3evo.metrics.get(name, apply, num_classes=C)
        assert metric.name == name
        stats = jax.eval_shape(metric.stats, params, batch)
        assert stats.shape[0] == N
    with pytest.raises(ValueError, match=r"unknown metric 'acuracy'; known metrics: .*accuracy"):
        ev3evo.metrics.get("acuracy", apply)
    with pytest.raises(ValueError, match=r"macro_f1.*needs num_classes"):
        ev3evo.metrics.get("macro_f1", apply)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, None, "auto"])
def test_chunked_population_evaluation_equals_one_vmap(data, chunk):
    from ev3evo.assess.evaluate import auto_chunk_size, evaluate_population

    params, batch, *_ = data
    w = params["w"]
    pop = {"w": w[None] + 0.3 * jax.random.normal(jax.random.key(0), (7, *w.shape))}
    metrics = [ev3evo.metrics.accuracy(apply), ev3evo.metrics.expected_calibration_error(apply)]
    whole = evaluate_population(metrics, pop, batch, chunk_size=None)
    chunked = evaluate_population(metrics, pop, batch, chunk_size=chunk)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and a.shape[:2] == (7, N)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    # members differ, so a chunk that evaluated the wrong member would show
    assert len({float(s.mean()) for s in whole[0]}) > 1
    assert auto_chunk_size(512, 1024, "cpu") == 8 and auto_chunk_size(8, 256, "cpu") is None
    # an accelerator evaluates whole populations at once, chunking only to bound memory
    assert auto_chunk_size(512, 4096, "gpu") is None
    assert auto_chunk_size(1 << 14, 1 << 12, "gpu") == 1024
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_population(metrics, pop, batch, chunk_size=0)


# ----------------------------------------------------------------------------- the shared table
def _softmax(z):
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


#: name -> numpy reference ``(logits, y, teacher) -> value``; every registered metric has one.
REFERENCE = {
    "accuracy": lambda z, y, t: np.mean(z.argmax(1) == y),
    "top5_accuracy": lambda z, y, t: np.mean([y[i] in np.argsort(-z[i])[:5] for i in range(len(y))]),
    "top2_accuracy": lambda z, y, t: np.mean([y[i] in np.argsort(-z[i])[:2] for i in range(len(y))]),
    "agreement": lambda z, y, t: np.mean(z.argmax(1) == t.argmax(1)),
    "neg_loss": lambda z, y, t: np.mean(np.log(_softmax(z))[np.arange(len(y)), y]),
    "macro_f1": lambda z, y, t: f1_score(y, z.argmax(1), average="macro"),
    "ece": lambda z, y, t: ece_numpy(z, y),
}


def test_every_registered_metric_has_a_reference():
    assert set(REFERENCE) == set(ev3evo.metrics.REGISTRY)


@pytest.mark.parametrize("name", sorted(ev3evo.metrics.REGISTRY))
def test_registered_metric_table(data, name):
    """Every metric: its value matches the reference; per-example statistics of the declared
    shape; a population evaluation (vmap) equals the members' own values; the bootstrap's
    identity resample gives the point value; the perfect model has the best utility."""
    from ev3evo.assess.evaluate import evaluate_population
    from ev3evo.assess.metrics import utility
    from ev3evo.assess.stats import bootstrap_values

    params, batch, logits, y, teacher = data
    metric = ev3evo.metrics.get(name, apply, num_classes=C)
    assert _value(metric, params, batch) == pytest.approx(REFERENCE[name](logits, y, teacher),
                                                          rel=1e-4, abs=1e-5)
    stats = np.asarray(metric.stats(params, batch))
    assert stats.shape[0] == N and (stats.shape[1] == 1 or not metric.decomposable)
    members = {"w": jnp.stack([params["w"], 0.1 * params["w"][::-1], -params["w"]])}
    (pop_stats,) = evaluate_population([metric], members, batch, chunk_size=None)
    values = np.asarray(value(metric, pop_stats))
    for i in range(3):
        one = float(value(metric, metric.stats({"w": members["w"][i]}, batch)))
        assert values[i] == pytest.approx(one, rel=1e-5, abs=1e-6)
    ones = jnp.ones((1, N), jnp.float32)
    boot = np.asarray(bootstrap_values(pop_stats, ones, metric.aggregate))[:, 0]
    np.testing.assert_allclose(boot, values, rtol=1e-5, atol=1e-6)
    # Higher utility is better: logits that are right and confident beat the model's.
    scale = lambda p, x: x * p["s"]
    scaled = ev3evo.metrics.get(name, scale, num_classes=C)
    right = 20.0 * jax.nn.one_hot(batch["teacher" if name == "agreement" else "y"].argmax(-1)
                                  if name == "agreement" else batch["y"], C)
    u_right = utility(scaled, value(scaled, scaled.stats({"s": 1.0}, dict(batch, x=right))))
    u_model = utility(scaled, value(scaled, scaled.stats({"s": 1.0}, dict(batch, x=logits))))
    assert float(u_right) >= float(u_model), (name, float(u_right), float(u_model))


def test_chunks_without_a_live_member_are_skipped_and_the_rest_unchanged(data):
    from ev3evo.assess.evaluate import evaluate_population

    params, batch, *_ = data
    w = params["w"]
    pop = {"w": w[None] + 0.3 * jax.random.normal(jax.random.key(0), (7, *w.shape))}
    metrics = [ev3evo.metrics.accuracy(apply), ev3evo.metrics.expected_calibration_error(apply)]
    live = jnp.array([True, False, False, False, False, True, False])
    whole = evaluate_population(metrics, pop, batch, chunk_size=None)
    skipped = evaluate_population(metrics, pop, batch, chunk_size=2, live=live)
    for a, b in zip(whole, skipped):
        assert a.shape == b.shape
        for i in (0, 4, 5):  # chunks {0, 1} and {4, 5} hold a live member: computed
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b[i]), rtol=1e-6)
        assert not np.asarray(b[2:4]).any()  # chunk {2, 3}: skipped, zeros
