"""The distillation pipeline in-process: gate invariants on the history, growth, the KD grid
source, baselines and the report."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import ev3evo
from ev3evo import losses
from ev3evo.assess import metrics as M
from ev3evo.distillation import baselines as B
from ev3evo.distillation import engine as E
from ev3evo.distillation import grid as G
from ev3evo.distillation import models, report
from ev3evo.distillation.final_check import final_check
from ev3evo.distillation.growing import grow_student
from ev3evo.distillation.options import DistillConfig
from ev3evo.distillation.student import Student
from ev3evo.types import Objective


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from sklearn.datasets import make_classification

    root = tmp_path_factory.mktemp("distill_pipeline")
    x, y = make_classification(n_samples=150, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=3, n_clusters_per_class=1, random_state=3)
    np.savez(root / "toy.npz", x=x, y=y)
    result = ev3evo.distill(data=str(root / "toy.npz"), steps=6, student="mlp:4",
                            rollout_steps=50, teacher_epochs=3, teacher_arch="mlp:16", grow=True,
                            patience=1, constraints=["agreement>=0.5"], max_growths=1,
                            baselines=False, progress=False, out=str(root / "out"))
    return result


def test_stable_metric_never_decreases_and_moves_only_when_certified(run):
    steps = [r for r in run.history if "event" not in r]
    assert len(steps) == 7 and steps[0]["initial"]  # the starting model, then 6 steps
    stable = [r["stable"]["accuracy"] for r in steps]
    # Once the stable model meets the constraint (agreement >= 0.5), its metric never drops
    # (before that, the gate may trade accuracy for feasibility).
    feasible = [i for i, r in enumerate(steps) if r["stable"]["agreement"] >= 0.5]
    assert feasible, "the stable model never met the constraint"
    kept = stable[feasible[0]:]
    assert all(b >= a for a, b in itertools.pairwise(kept)), stable
    assert all(steps[i]["stable"]["agreement"] >= 0.5 for i in range(feasible[0], len(steps)))
    for prev, r in itertools.pairwise(steps):
        if not r["certified"]:
            assert r["stable"] == prev["stable"]
    # the final certified model is what summary reports as EV3's validation metrics (the
    # end-of-run check of the split gate may certify the current model, never a worse one)
    check = run.summary["final_check"]
    assert check is not None and check["stable"]["accuracy"] == pytest.approx(stable[-1], abs=1e-6)
    final = check["current"]["accuracy"] if check["certified"] else stable[-1]
    assert final >= stable[-1] - 1e-6
    assert run.methods["ev3"]["validation"]["accuracy"] == pytest.approx(final, abs=1e-6)
    assert run.summary["teacher"]["params"] > run.methods["ev3"]["params"]


def test_growth_events_preserve_the_function_and_cost_their_compilation(run):
    events = run.summary["growth"]
    assert events, "the run never grew (patience=1 should make it stall)"
    for e in events:
        assert e["accepted"] and e["stable_after"] == e["stable_before"]
        assert e["max_logit_change"] < 1e-5 and e["compile_seconds"] > 0
        assert e["params_after"] > e["params_before"]
    # the steps after a growth run the grown student; they come after its recompilation
    grown = events[0]
    later = [r for r in run.history if "event" not in r and r["step"] > grown["step"]]
    assert later and all(r["widths"] == grown["widths_after"] for r in later[:1])
    assert grown["growth_seconds"] >= grown["compile_seconds"]
    assert later[0]["seconds"] >= grown["seconds"] + grown["growth_seconds"]
    # the summary counts the certified student: at the size it was certified at
    certified = [r["step"] for r in run.history if r.get("certified")]
    assert run.methods["ev3"]["params"] == run.summary["student"]["params"]
    if not certified or max(certified) <= grown["step"]:
        assert run.methods["ev3"]["params"] == grown["params_before"]
    assert run.methods["ev3"]["current_params"] >= run.methods["ev3"]["params"]


def test_the_returned_student_scores_what_the_summary_says(run):
    assert isinstance(run.student, models.MLP) and run.summary["student"]["folded"]
    test = run.dataset.test
    acc = float(jnp.mean(jnp.argmax(run.student(test["x"]), -1) == test["y"]))
    assert acc == pytest.approx(run.methods["ev3"]["test"]["accuracy"], abs=1e-9)
    assert models.count_params(run.student) == run.methods["ev3"]["params"]


def test_grow_helper_is_exact_and_the_grown_student_saves(run, tmp_path):
    student = Student.for_arch(run.arch, 3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(40, 6)), jnp.float32)
    val = {"x": x, "y": jnp.zeros(40, jnp.int32), "teacher": student.apply(run.stable, x)}
    names = ["accuracy", "agreement", "ece"]
    grown = grow_student(jax.random.key(1), student, run.stable, run.stable, "widen", 3, val,
                         names)
    assert grown.event["accepted"]
    assert grown.event["widths_after"] == [h + 3 for h in run.arch["hidden"]]
    new = grown.student
    np.testing.assert_allclose(new.apply(grown.stable, x), student.apply(run.stable, x),
                               atol=1e-5)
    module, folded = new.certified(grown.stable, x)
    assert folded and isinstance(module, models.MLP)
    path = models.save(tmp_path / "grown.msgpack", module)
    loaded, config_ = models.load(path)
    assert config_["hidden"] == grown.event["widths_after"]
    np.testing.assert_allclose(loaded(x), student.apply(run.stable, x), atol=1e-5)


def test_outputs_on_disk(run):
    import os

    for name in ("summary.json", "history.jsonl", "metric_vs_step.png", "metric_vs_time.png",
                 "allocation.png", "comparison.png"):
        assert os.path.getsize(os.path.join(run.out, name)) > 0, name
    assert report.read_history(os.path.join(run.out, "history.jsonl")) == run.history


def _toy():
    apply = lambda p, x: x @ p["w"] + p["b"]
    x = jax.random.normal(jax.random.key(0), (120, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    batch = {"x": x, "y": y, "teacher": 3.0 * jax.nn.one_hot(y, 2)}
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    return apply, batch, params


def test_baselines_select_on_validation():
    apply, batch, params = _toy()
    acc = M.accuracy(apply)
    kd = B.kd_train(jax.random.key(1), apply, params, batch, batch,
                    losses.kl_to_teacher(apply, 4.0), optax.adam(0.05), acc,
                    time_budget=60.0, chunk=20, max_steps=100)
    assert kd.steps == 100 and kd.value > 0.9
    assert kd.value == pytest.approx(max(v for _, _, v in kd.curve))
    es = B.es_train(jax.random.key(2), params, batch, batch, acc, time_budget=60.0,
                    population_size=16, std_init=0.3, chunk=10, max_generations=30)
    assert es.steps == 30 and es.value > 0.7
    with pytest.raises(ValueError, match="unknown evosax"):
        B.es_train(jax.random.key(2), params, batch, batch, acc, time_budget=1.0,
                   algorithm="NoSuchES")


def test_the_kd_baseline_trains_for_its_whole_budget_unless_given_patience():
    apply, batch, params = _toy()
    acc = M.accuracy(apply)
    run = lambda **kw: B.kd_train(jax.random.key(1), apply, params, batch, batch,
                                  losses.kl_to_teacher(apply, 4.0), optax.adam(0.05), acc,
                                  time_budget=60.0, chunk=5, max_steps=300, **kw)
    whole = run()
    assert whole.steps == 300 and whole.value > 0.9  # no early stop by default
    early = run(patience=2)  # the toy converges long before 300 steps
    assert early.steps < 300 and early.value > 0.9
    assert [c[1] for c in early.curve] == [c[1] for c in whole.curve][:len(early.curve)]


def test_baselines_select_among_the_checkpoints_that_meet_the_constraints():
    apply, batch, params = _toy()
    acc, ece = M.accuracy(apply), M.get("ece", apply, 2)
    loss = losses.kl_to_teacher(apply, 4.0)
    run = lambda metric, *needs: B.kd_train(
        jax.random.key(1), apply, params, batch, batch, loss, optax.adam(0.05), metric,
        time_budget=60.0, chunk=5, max_steps=60,
        constraints=tuple((acc, ev3evo.parse_constraint(n)) for n in needs))
    value = lambda m, p: float(M.value(m, m.stats(p, batch)))
    assert value(acc, params) < 0.9  # the initial model misses the constraint
    met = run(ece, "accuracy>=0.9")
    assert value(acc, met.params) >= 0.9
    assert met.value == pytest.approx(value(ece, met.params), abs=1e-6)
    # no checkpoint can meet it: the one that misses it by least, i.e. the most accurate
    best_acc = run(acc)
    closest = run(ece, "accuracy>=1.01")
    assert value(acc, closest.params) == pytest.approx(best_acc.value)
    # the ES baseline's selected mean follows the same rule
    es = B.es_train(jax.random.key(2), params, batch, batch, ece, time_budget=60.0,
                    population_size=16, std_init=0.3, chunk=10, max_generations=30,
                    constraints=((acc, ev3evo.parse_constraint("accuracy>=0.6")),))
    assert value(acc, es.params) >= 0.6 - 0.5 / 120


def test_a_calibration_objective_adds_temperature_scaled_kd_baselines():
    from ev3evo.distillation.pipeline import run_baselines

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(np.int32)
    batch = lambda s: {"x": jnp.asarray(x[s]), "y": jnp.asarray(y[s]),
                       "teacher": jnp.asarray(8.0 * np.eye(2, dtype=np.float32)[y[s]])}
    splits = {"train": batch(slice(0, 200)), "val": batch(slice(200, 250)),
              "test": batch(slice(250, 300))}
    student = Student.build("mlp:4", (6,), 2, seed=0)
    names = ["ece", "accuracy", "neg_loss"]
    config = DistillConfig(metrics=("ece",), constraints=("accuracy>=0.6",))
    methods = run_baselines(jax.random.key(1), jax.random.key(2), config, student, splits,
                            names, "ece", 1.0, lambda *_: None)
    kd = [m for m in methods if m.startswith("kd_") and not m.endswith("+ts")]
    assert kd and {f"{m}+ts" for m in kd} <= set(methods)
    for m in kd:
        plain, scaled = methods[m], methods[f"{m}+ts"]
        # the argmax does not move; the fitted temperature lowers the validation NLL
        assert scaled["validation"]["accuracy"] == plain["validation"]["accuracy"]
        assert scaled["validation"]["neg_loss"] >= plain["validation"]["neg_loss"] - 1e-6
        assert scaled["seconds"] >= plain["seconds"]
    plain_run = run_baselines(jax.random.key(1), jax.random.key(2),
                              DistillConfig(metrics=("accuracy",)), student, splits, names,
                              "accuracy", 0.5, lambda *_: None)
    assert not any(m.endswith("+ts") for m in plain_run)


@pytest.mark.parametrize("name", list(G.MIXTURES))
def test_named_losses_are_the_weighted_sums_of_their_parts(name):
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(32, 5)), jnp.float32),
             "y": jnp.asarray(rng.integers(0, 3, 32), jnp.int32),
             "teacher": jnp.asarray(rng.normal(size=(32, 3)) * 3, jnp.float32)}
    apply = lambda p, x: x @ p
    params = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    parts = [float(f(params, batch)) for f in G.loss_parts(apply)]
    expected = sum(w * v for w, v in zip(G.MIXTURES[name], parts))
    loss = G.named_loss(apply, name)
    assert float(loss(params, batch)) == pytest.approx(expected, rel=1e-5)
    grad = jax.grad(loss)(params, batch)
    assert grad.shape == params.shape and bool(jnp.all(jnp.isfinite(grad)))
    if name == "kl_t4":  # the default baseline loss is Hinton's KL at T=4
        assert float(loss(params, batch)) == pytest.approx(float(G.kd_loss(apply)(params, batch)))


def test_named_loss_unknown_name():
    with pytest.raises(ValueError, match="unknown KD loss 'nope'; known: kl_t4"):
        G.named_loss(lambda p, x: x, "nope")


def test_engine_objectives_tie_break():
    objs = E.engine_objectives([Objective("accuracy")], True, 300)
    assert objs[0].tolerance == pytest.approx(1.5 / 300) and objs[-1].metric == "fidelity"
    assert E.engine_objectives([Objective("accuracy", 0.01)], True, 300)[0].tolerance == 0.01
    assert E.engine_objectives([Objective("ece")], False, 300) == [Objective("ece")]
    # ECE's tie band is 0.6 examples' worth per example of the band and shrinks with the
    # validation split like accuracy's (0.0133 at 180 selection examples, 0.0012 at 2000).
    small = E.engine_objectives([Objective("ece")], True, 180, 4.0)[0].tolerance
    large = E.engine_objectives([Objective("ece")], True, 2000, 4.0)[0].tolerance
    assert small == pytest.approx(0.6 * 4 / 180) and large == pytest.approx(0.6 * 4 / 2000)


def test_macro_f1_tie_band_is_one_example_of_each_class_averaged():
    from sklearn.metrics import f1_score

    balanced = E.engine_objectives([Objective("macro_f1")], True, 300, 4.0, [100, 100, 100])
    assert balanced[0].tolerance == pytest.approx(4.0 / 300)  # as accuracy's
    counts = [653, 297, 147, 63, 40]
    band = E.engine_objectives([Objective("macro_f1")], True, 1200, 4.0, counts)[0].tolerance
    assert band == pytest.approx(4.0 * E.macro_f1_scale(counts) / 1200)
    assert 2.0 < E.macro_f1_scale(counts) < 3.0
    # against sklearn: one example of each class misclassified, the average effect on macro-F1
    y = np.repeat(np.arange(5), counts)
    effects = []
    for c in range(5):
        pred = y.copy()
        pred[np.flatnonzero(y == c)[0]] = (c + 1) % 5
        effects.append(1.0 - f1_score(y, pred, average="macro"))
    assert np.mean(effects) == pytest.approx(E.macro_f1_scale(counts) / len(y), rel=0.5)


@pytest.mark.parametrize(
    "overrides, needle",
    [({"steps": 0}, "steps"), ({"metrics": ["nope"]}, "unknown metric"),
     ({"constraints": ["agreement>0.9"]}, "constraint"),
     ({"student": "mlp:0"}, "cannot read the model spec"),
     ({"grow_kind": "shrink"}, "grow_kind"), ({"kd_loss": "kl_t9"}, "unknown KD loss")],
)
def test_config_errors_are_clear(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        ev3evo.distill(progress=False, **overrides)


def test_report_table_and_best_method():
    summary = {
        "primary": "ece", "metrics": ["accuracy", "ece"],
        "teacher": {"test": {"accuracy": 0.99, "ece": 0.02}, "validation": {"ece": 0.03},
                    "params": 1000},
        "methods": {"ev3": {"test": {"accuracy": 0.95, "ece": 0.01}, "validation": {"ece": 0.02},
                            "seconds": 3.0, "params": 50},
                    "kd": {"test": {"accuracy": 0.96, "ece": 0.04}, "validation": {"ece": 0.05},
                           "seconds": 3.0, "params": 50}},
    }
    assert report.best_method(summary, "ece") == "ev3"  # chosen on validation
    assert report.best_method(summary, "accuracy", split="test") == "kd"
    text = report.table(summary)
    assert "teacher" in text and "0.0100" in text
    assert "best student on validation ece: ev3" in text and "oracle" not in text


def test_the_best_is_chosen_on_validation_and_an_uncertified_ev3_is_never_it():
    row = lambda val, test, **kw: {"validation": {"accuracy": val}, "test": {"accuracy": test},
                                   "seconds": 1.0, "params": 5, **kw}
    methods = {"ev3": row(0.9, 0.7, certified=True), "kd_adam": row(0.8, 0.95)}
    summary = {"primary": "accuracy", "metrics": ["accuracy"], "methods": methods,
               "teacher": row(0.99, 0.99)}
    assert report.best(methods, "accuracy") == {
        "metric": "accuracy", "chosen_on": "validation", "method": "ev3",
        "oracle_on_test": "kd_adam"}
    text = report.table(summary)
    assert "best student on validation accuracy: ev3" in text
    assert "best on test (an oracle choice, for reference only): kd_adam" in text
    methods["ev3"]["certified"] = False
    assert report.best(methods, "accuracy")["method"] == "kd_adam"
    assert report.best(methods, "accuracy")["note"] == f"ev3: {report.NOTHING_CERTIFIED}"
    text = report.table(summary)
    assert report.NOTHING_CERTIFIED in text and "on validation accuracy: kd_adam" in text
    assert "best student on validation accuracy: ev3" not in text


@pytest.mark.parametrize("accept", ["lexicographic", "better", "not_worse"])
def test_final_check_certifies_a_clearly_better_current_model_only(accept):
    # A current model that is right on every example against a stable one that predicts one
    # class: certified on the held-out half whatever the acceptance rule (acceptance compares
    # the current model with itself there). The same model against itself: never.
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.integers(0, 3, 200), jnp.int32)
    x = jax.nn.one_hot(y, 3) + 0.1 * jnp.asarray(rng.normal(size=(200, 3)), jnp.float32)
    val = {"x": x, "y": y, "teacher": 5.0 * x}
    apply = lambda p, x: x @ p["w"]
    c = DistillConfig(accept=accept, correction="split")
    engine = E.build_engine(apply, c, E.engine_settings(c), 3, 200)
    good, bad = {"w": 5.0 * jnp.eye(3)}, {"w": jnp.zeros((3, 3))}
    better = final_check(jax.random.key(0), engine, good, bad, val)
    assert better["certified"] and better["pvalue"] < 1e-6
    assert better["current"]["accuracy"] == 1.0
    # The power report: the gain on the held-out (odd) half, and the gain that is significant
    # there, z·se of the paired differences at the certification level (alpha over the two
    # lexicographic paths: accuracy, then fidelity).
    held = np.asarray(y)[1::2]
    d = (held != 0).astype(float)  # good is always right; bad (zero logits) predicts class 0
    z = scipy.stats.norm.ppf(1 - c.alpha / 2)
    assert better["primary"] == "accuracy" and better["held_out_examples"] == 100
    assert better["gain"] == pytest.approx(d.mean(), abs=1e-6)
    assert better["needed"] == pytest.approx(z * d.std(ddof=1) / np.sqrt(d.size), rel=1e-4)
    same = final_check(jax.random.key(0), engine, good, good, val)
    assert not same["certified"] and same["gain"] == 0.0
    worse = final_check(jax.random.key(0), engine, bad, good, val)
    assert not worse["certified"]
    assert worse["gain"] == pytest.approx(-d.mean(), abs=1e-6) and worse["needed"] > 0


def test_time_plots_leave_a_gap_over_a_growths_recompilation(tmp_path):
    rec = lambda step, seconds: {"step": step, "seconds": seconds, "current": {"accuracy": 0.5},
                                 "stable": {"accuracy": 0.5}, "allocation": {"a": 2}}
    grow = {"event": "grow", "step": 2, "seconds": 2.1, "compile_seconds": 5.0,
            "growth_seconds": 5.3, "accepted": True}
    refused = {"event": "grow", "step": 3, "seconds": 8.0, "accepted": False}
    history = [rec(1, 1.0), rec(2, 2.0), grow, rec(3, 7.5), refused, rec(4, 8.5)]
    steps = [r for r in history if "event" not in r]
    segments = report._segments(steps, [grow, refused])
    assert [[r["step"] for r in s] for s in segments] == [[1, 2], [3, 4]]  # cut at growth only
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    report._plot_metric(plt, steps, [grow, refused], "accuracy", "seconds", "wall time (s)",
                        str(tmp_path / "t.png"))
    paths = report.plot_history(history, tmp_path, "accuracy")
    assert len(paths) == 3 and all(p.endswith(".png") for p in paths)
