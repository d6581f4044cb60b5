"""The gate's evidence in a distillation run: which correction "auto" picks, what the gate can
certify (said before the run), constraints the teacher misses, and the final check on fresh
transfer batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ev3evo
from ev3evo.adapt.gate import Gate
from ev3evo.adapt.power import smallest_gain
from ev3evo.distillation import engine as E
from ev3evo.distillation.evidence import gate_power, teacher_misses
from ev3evo.distillation.final_check import final_check
from ev3evo.distillation.options import DistillConfig


@pytest.mark.parametrize("metric, can_label, want", [
    ("accuracy", True, "sequential"), ("agreement", True, "sequential"),
    ("macro_f1", True, "split"), ("accuracy", False, "split")])
def test_auto_correction_tests_on_transfer_only_where_the_teacher_defines_the_metric(
        metric, can_label, want):
    assert E.gate_correction(DistillConfig(), metric, can_label) == want
    c = DistillConfig(metrics=(metric,))
    assert E.engine_settings(c, can_label).gate.correction == want


def test_fresh_gates_without_a_labelling_teacher_are_refused_in_one_line():
    for correction in ("fresh", "sequential"):
        with pytest.raises(ValueError, match="precomputed logits"):
            E.gate_correction(DistillConfig(correction=correction), "accuracy", False)
    assert E.gate_correction(DistillConfig(correction="split"), "accuracy", False) == "split"


@pytest.mark.parametrize("correction, examples", [
    ("split", 180), ("holm", 360), ("fresh", 4096), ("sequential", 4096 * 8)])
def test_gate_power_counts_the_examples_the_test_sees(correction, examples):
    power = gate_power(Gate(correction=correction), 360, transfer=4096, period=8,
                       population=16)
    assert power["examples"] == examples
    alpha = 0.05 / 16 if correction == "holm" else 0.05  # the best of 16 must pass alpha/16
    floor, typical = smallest_gain(examples, alpha, 0.05)
    assert (power["floor"], power["typical"]) == (floor, typical)
    assert floor < typical
    # 180 held-out examples cannot certify a gain below a point; 32768 transfer examples can
    assert bool(power["warning"]) == (floor > 0.01)
    assert bool(power["warning"]) == (correction in ("split", "holm"))


@pytest.mark.parametrize("select_on", ["validation", "transfer", "thresholdout"])
def test_candidates_are_selected_on_a_transfer_batch_of_their_own_when_asked(select_on):
    from ev3evo.distillation.pipeline import evaluation_batches
    from ev3evo.distillation.teachers import Labeller

    x = jax.random.normal(jax.random.key(0), (50, 6))
    val = {"x": x[:10], "y": jnp.zeros(10, jnp.int32), "teacher": jnp.zeros((10, 3))}
    c = DistillConfig(transfer=64, select_on=select_on)
    settings = E.engine_settings(c)  # accuracy: the sequential gate
    evaluation = evaluation_batches(c, settings, {"train": {"x": x}, "val": val},
                                    Labeller(lambda z: z[:, :3], True))
    e = evaluation(jax.random.key(1), 0)
    assert e.validation is val and e.fresh["x"].shape == (64, 6)
    if select_on == "validation":
        assert e.selection is None
    else:  # a batch of its own, drawn afresh: not the certification's examples
        assert e.selection["x"].shape == (64, 6)
        assert not np.allclose(e.selection["x"], e.fresh["x"])
        assert (e.selection["y"] == jnp.argmax(e.selection["x"][:, :3], -1)).all()


@pytest.mark.parametrize("metric, correction, want", [
    ("accuracy", "auto", 8 / 100), ("accuracy", "split", 0.0), ("ece", "auto", 0.0),
])
def test_thresholdout_is_set_in_examples_of_the_validation_half(metric, correction, want):
    # only with a fresh-data gate (accuracy picks the sequential one; ECE the split gate)
    c = DistillConfig(metrics=(metric,), correction=correction, select_on="thresholdout")
    engine = E.build_engine(lambda p, x: x @ p["w"], c, E.engine_settings(c), 3, 200)
    assert engine.gate.thresholdout == pytest.approx(want)


def test_a_constraint_the_teacher_misses_is_warned_about():
    values = {"accuracy": 0.93, "ece": 0.04}
    assert teacher_misses(["accuracy>=0.95"], values)[0].startswith("the teacher itself")
    assert teacher_misses(["accuracy>=0.9", "ece<=0.05", "agreement>=0.9"], values) == []
    assert len(teacher_misses(["ece<=0.01"], values)) == 1


def test_final_check_on_fresh_transfer_certifies_a_clearly_better_model_only():
    rng = np.random.default_rng(0)

    def batch(n, seed):
        r = np.random.default_rng(seed)
        y = jnp.asarray(r.integers(0, 3, n), jnp.int32)
        x = jax.nn.one_hot(y, 3) + 0.1 * jnp.asarray(r.normal(size=(n, 3)), jnp.float32)
        return {"x": x, "y": y, "teacher": 5.0 * x}

    val = batch(200, int(rng.integers(1 << 30)))
    evaluation = ev3evo.Evaluation(val, batch(512, 1))
    apply = lambda p, x: x @ p["w"]
    for correction in ("fresh", "sequential"):
        c = DistillConfig(correction=correction)
        engine = E.build_engine(apply, c, E.engine_settings(c), 3, 200)
        good, bad = {"w": 5.0 * jnp.eye(3)}, {"w": jnp.zeros((3, 3))}
        better = final_check(jax.random.key(0), engine, good, bad, evaluation)
        assert better["certified"] and better["primary"] == "agreement"
        assert better["held_out_examples"] == 512 and better["examples"] == "fresh transfer"
        assert not final_check(jax.random.key(0), engine, good, good, evaluation)["certified"]
        assert not final_check(jax.random.key(0), engine, bad, good, evaluation)["certified"]
        with pytest.raises(ValueError, match="fresh batch"):
            final_check(jax.random.key(0), engine, good, bad, val)
