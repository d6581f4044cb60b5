"""The student of a distillation run as the engine sees it: pure functions of a ``Stateful``.

A :class:`Student` wraps any flax nnx Module (the user's own, or a built-in
:class:`~ev3evo.distillation.models.MLP` / :class:`~ev3evo.distillation.models.CNN`) into
what the engine works on, an :class:`ev3evo.Stateful` model::

    Stateful(params={"model": <the module's nnx.Param values>, "head": <calibration head>},
             state=<every other variable: batch statistics, RNG streams (raw key data)>)

- :meth:`Student.apply` is the module in **eval mode** (``module.eval()``: running batch
  statistics, no dropout) followed by the head (:mod:`ev3evo.distillation.head`): what every
  metric assesses;
- :meth:`Student.train_apply` is the module in **train mode** (``module.train()``): it returns
  the logits and the updated state (batch statistics moved, RNG counters advanced), what the
  gradient rollouts' losses use, so a rollout trains the student the way ``nnx`` training
  would;
- :meth:`Student.module` turns an engine model back into an nnx Module of the student's own
  class (eval mode), :meth:`Student.certified` also folds the head into it.

A built-in MLP keeps its population rule (:mod:`ev3evo.assess.population`), the fast path for
evaluating a population of dense networks; any other module is vmapped through
``nnx.merge``.

Example::

    import jax, jax.numpy as jnp
    from flax import nnx
    from ev3evo.distillation.student import Student
    module = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.BatchNorm(8, rngs=nnx.Rngs(0)),
                            nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    student = Student(module, 3)
    x = jax.random.normal(jax.random.key(0), (16, 4))
    logits, state = student.train_apply(student.initial, x)      # batch statistics move
    assert not jnp.allclose(state["layers"][1]["mean"], 0.0)
    assert student.apply(student.initial, x).shape == (16, 3)
    assert isinstance(student.module(student.initial), nnx.Sequential)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..explore.stateful import Stateful
from . import head, models, nnx_state
from .scores import evaluate


def _graph(parts: nnx_state.Parts, mode: str):
    """The module's graph in ``mode`` ("train" or "eval"), on a copy (the module is untouched)."""
    rest = nnx_state.from_raw(parts.rest, parts.keys) if parts.keys else parts.rest
    copy = nnx.merge(parts.graphdef, parts.params, rest)
    getattr(copy, mode)()
    return nnx.split(copy, nnx.Param, ...)[0]


class Student:
    """A flax nnx student as pure functions of its engine model (see the module docstring).

    Args:
      module: the student, any nnx Module returning ``(N, num_classes)`` logits.
      num_classes: the number of classes.

    Attributes:
      name: the student's class name; ``arch`` its architecture dict when it is built in
        (``None`` otherwise: such a student does not grow).
      initial: the engine model of ``module``'s weights with the identity head.
      num_classes: the number of classes.
    """

    def __init__(self, module: nnx.Module, num_classes: int):
        parts = nnx_state.split(module)
        self.name, self.num_classes = type(module).__name__, int(num_classes)
        self.arch = models.arch_of(module) if isinstance(module, (models.MLP, models.CNN)) \
            else None
        self.keys = parts.keys
        self.graphs = {mode: _graph(parts, mode) for mode in ("train", "eval")}
        self.initial = Stateful({"model": parts.params, "head": head.identity(num_classes)},
                                parts.rest)
        # a built-in MLP (not a subclass) is evaluated by its population rule
        self._fast = models.functional(module).apply if type(module) is models.MLP else None

    @classmethod
    def build(cls, spec, feature_shape: Sequence[int], num_classes: int, seed: int):
        """A fresh built-in student (``"mlp:8"``, ``"cnn:8,16"`` or an arch dict)."""
        arch = models.arch_for(spec, feature_shape, num_classes)
        return cls(models.build(arch, seed=seed), num_classes)

    @classmethod
    def for_arch(cls, arch: dict, num_classes: int):
        """The student of a built-in ``arch`` without initializing weights (after growth)."""
        return cls(nnx.eval_shape(lambda: models.build(arch)), num_classes)

    # ------------------------------------------------------------------ pure functions
    def _merge(self, mode: str, model: Stateful) -> nnx.Module:
        return nnx_state.merge(self.graphs[mode], model.params["model"], model.state, self.keys)

    def logits(self, model: Stateful, x) -> jax.Array:
        """The student's own logits in eval mode (before the head)."""
        if self._fast is not None:
            return self._fast(model.params["model"], x)
        return self._merge("eval", model)(x)

    def apply(self, model: Stateful, x) -> jax.Array:
        """Eval-mode logits through the head: what the metrics assess."""
        return head.apply(model.params["head"], self.logits(model, x))

    def train_apply(self, model: Stateful, x) -> tuple[jax.Array, dict]:
        """Train-mode logits through the head, and the state the forward pass leaves."""
        if self._fast is not None:
            return head.apply(model.params["head"], self._fast(model.params["model"], x)), \
                model.state
        module = self._merge("train", model)
        logits = module(x)
        rest = nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[2])
        return head.apply(model.params["head"], logits), nnx_state.to_raw(rest)

    # ------------------------------------------------------------------ back to nnx
    def module(self, model: Stateful) -> nnx.Module:
        """The student of ``model``'s weights as an nnx Module of its own class, eval mode
        (the head not applied)."""
        return self._merge("eval", jax.tree.map(jnp.asarray, model))

    def certified(self, model: Stateful, x) -> tuple[nnx.Module, bool]:
        """``(module, folded)``: the student of ``model`` with its head folded into its output
        layer (``folded``), or inside :class:`~ev3evo.distillation.head.Calibrated`; checked on
        the examples ``x``."""
        module, h = self.module(model), jax.tree.map(jnp.asarray, model.params["head"])
        identity = bool(h["scale"] == 1.0) and not bool(jnp.any(h["bias"] != 0.0))
        if identity:
            return module, True
        run = jax.jit(lambda m, x: m(x))
        path = head.output_layer(module, self.num_classes, lambda m: run(m, x))
        if path is not None:
            folded = head.fold(module, h, path)
            want = np.asarray(head.apply(h, run(module, x)))
            if np.allclose(np.asarray(run(folded, x)), want, rtol=1e-4, atol=1e-4):
                return folded, True
        return head.Calibrated(module, h["scale"], h["bias"]), False

    # ------------------------------------------------------------------ bookkeeping
    def count(self, model: Stateful | None = None) -> int:
        """The number of scalar parameters of the student (the head not counted)."""
        return models.count_params((model or self.initial).params["model"])

    def describe(self) -> str:
        """``mlp:8``, ``cnn:8,16+1,0`` for a built-in student, else its class name."""
        return models.describe(self.arch) if self.arch is not None else self.name

    def zeros(self) -> Stateful:
        """A zero engine model of this student's shapes (a template to restore into)."""
        return jax.tree.map(lambda s: jnp.zeros(jnp.shape(s), jnp.result_type(s)), self.initial)

    def evaluate(self, model: Stateful, batch, names: Sequence[str]) -> dict[str, float]:
        """``{metric: value}`` of ``model`` on ``batch``."""
        return evaluate(self.apply, model, batch, names, self.num_classes)
