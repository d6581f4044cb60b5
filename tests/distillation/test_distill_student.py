"""Any flax nnx student as the engine sees it: parameters and carried state, train and eval
modes, the calibration head folded back into the user's class, checkpoints of any module, and
the models that cannot be split (one clear error)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ev3evo.distillation import head, models
from ev3evo.distillation.nnx_state import ModelError, split
from ev3evo.distillation.student import Student


class Net(nnx.Module):
    """A user's student: dense, batch norm, dropout, a classifier called ``classifier``."""

    def __init__(self, *, rngs, log_softmax=False):
        self.body = nnx.Linear(6, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.classifier = nnx.Linear(8, 3, rngs=rngs)
        self.log_softmax = log_softmax

    def __call__(self, x):
        z = self.classifier(self.drop(jax.nn.relu(self.norm(self.body(x)))))
        return jax.nn.log_softmax(z) if self.log_softmax else z


X = jax.random.normal(jax.random.key(0), (32, 6)) * 2 + 1


def test_train_mode_moves_the_state_and_eval_mode_reads_it():
    s = Student(Net(rngs=nnx.Rngs(0)), 3)
    model = s.initial
    assert model.state["drop"]["rngs"]["key"].dtype == jnp.uint32  # raw key data
    _, state = jax.jit(s.train_apply)(model, X)
    assert int(state["drop"]["rngs"]["count"]) == 1  # one dropout mask drawn
    assert not np.allclose(state["norm"]["mean"], 0.0)  # batch statistics moved
    # eval mode: deterministic, running statistics, the state unchanged
    a, b = jax.jit(s.apply)(model, X), jax.jit(s.apply)(model, X)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = model._replace(state=state)
    assert not np.allclose(np.asarray(s.apply(moved, X)), np.asarray(a))
    # a population of students, vmapped through nnx.merge
    pop = jax.tree.map(lambda v: jnp.stack([v, v]), moved)
    out = jax.vmap(s.apply, in_axes=(0, None))(pop, X)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(s.apply(moved, X)), atol=1e-5)


def test_the_user_module_is_never_modified():
    from ev3evo.distillation.nnx_state import to_raw

    net = Net(rngs=nnx.Rngs(0))
    values = lambda: jax.tree.map(np.asarray, to_raw(nnx.to_pure_dict(nnx.state(net))))
    before = values()
    s = Student(net, 3)
    s.train_apply(s.initial, X)
    s.certified(s.initial._replace(params={**s.initial.params, "head": {
        "scale": jnp.float32(2.0), "bias": jnp.ones(3)}}), X)
    assert not net.drop.deterministic and not net.norm.use_running_average  # its own mode
    after = values()
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_the_head_folds_into_the_output_linear_of_the_users_class():
    s = Student(Net(rngs=nnx.Rngs(0)), 3)
    h = {"scale": jnp.float32(1.7), "bias": jnp.array([0.3, -1.0, 2.0])}
    model = s.initial._replace(params={**s.initial.params, "head": h})
    module, folded = s.certified(model, X)
    assert folded and type(module) is Net and module.drop.deterministic  # eval mode
    np.testing.assert_allclose(np.asarray(module(X)), np.asarray(s.apply(model, X)),
                               rtol=1e-5, atol=1e-5)
    assert head.output_layer(module, 3, lambda m: m(X)) == ("classifier",)


def test_a_student_whose_logits_follow_no_linear_is_returned_calibrated():
    s = Student(Net(rngs=nnx.Rngs(0), log_softmax=True), 3)
    h = {"scale": jnp.float32(2.0), "bias": jnp.array([0.5, 0.0, -0.5])}
    model = s.initial._replace(params={**s.initial.params, "head": h})
    module, folded = s.certified(model, X)
    assert not folded and isinstance(module, head.Calibrated) and type(module.model) is Net
    np.testing.assert_allclose(np.asarray(module(X)), np.asarray(s.apply(model, X)),
                               rtol=1e-5, atol=1e-5)
    # an untouched head is the student itself
    plain, folded = s.certified(s.initial, X)
    assert folded and type(plain) is Net


def test_built_in_students_keep_the_population_rule_and_count_their_parameters():
    s = Student.build("mlp:5", (6,), 3, seed=0)
    assert s.describe() == "mlp:5" and s.count() == 6 * 5 + 5 + 5 * 3 + 3
    assert s._fast is not None  # the dense population rule
    c = Student.build("cnn:4", (8, 8, 1), 10, seed=0)
    assert c.describe() == "cnn:4" and c.arch["kind"] == "cnn" and c._fast is None
    assert c.apply(c.initial, jnp.ones((2, 8, 8, 1))).shape == (2, 10)


class NoParams(nnx.Module):
    def __init__(self):
        self.w = nnx.Variable(jnp.ones((6, 3)))

    def __call__(self, x):
        return x @ self.w[...]


class IntParam(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(6, 3, rngs=nnx.Rngs(0))
        self.steps = nnx.Param(jnp.zeros((), jnp.int32))

    def __call__(self, x):
        return self.lin(x)


@pytest.mark.parametrize("module, message", [
    (NoParams(), "holds no nnx.Param: EV3 explores a model's nnx.Param variables"),
    (IntParam(), r"parameter \['steps'\] of dtype int32.*nnx.Variable that is not an nnx.Param"),
])
def test_models_that_cannot_be_split_say_how_to_write_them(module, message):
    with pytest.raises(ModelError, match=message):
        Student(module, 3)
    with pytest.raises(TypeError, match="expected a flax nnx Module"):
        split({"w": 1})


def test_any_module_saves_and_loads_into_its_architecture(tmp_path):
    net = Net(rngs=nnx.Rngs(0))
    s = Student(net, 3)
    _, state = s.train_apply(s.initial, X)  # moved statistics and RNG counter
    trained = s.module(s.initial._replace(state=state))
    path = models.save(tmp_path / "net.msgpack", trained, {"note": "mine"})
    with pytest.raises(ValueError, match=r"holds the variables of a .*Net.*like="):
        models.load(path)
    loaded, config = models.load(path, like=lambda: Net(rngs=nnx.Rngs(5)))
    assert config["note"] == "mine" and config["class"].endswith("Net") and type(loaded) is Net
    loaded.eval()
    np.testing.assert_array_equal(np.asarray(loaded(X)), np.asarray(trained(X)))
    assert int(loaded.drop.rngs.count[...]) == 1
    with pytest.raises(ValueError, match="do not fit"):
        models.load(path, like=models.MLP(6, [8], 3, rngs=nnx.Rngs(0)))
    wrapped = head.Calibrated(trained, 2.0, jnp.zeros(3))
    again, _ = models.load(models.save(tmp_path / "c.msgpack", wrapped),
                           like=head.Calibrated(Net(rngs=nnx.Rngs(1)), 1.0, jnp.ones(3)))
    assert float(again.scale[...]) == 2.0 and not np.any(np.asarray(again.bias[...]))
