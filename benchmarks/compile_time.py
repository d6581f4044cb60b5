"""What the distill step's compile time is made of: the whole step, then one source at a time.

    OPENBLAS_NUM_THREADS=1 python benchmarks/compile_time.py [--data digits] [--student mlp:8]

Builds the engine ``ev3evo distill`` builds for ``--data`` and ``--student`` (a random linear
teacher stands in for the trained one: the step's program depends on the shapes only, and a
module teacher gives the same fresh-data gate as the built-in one), then times, without the
persistent compilation cache, ``jax.jit(step).lower(...)`` (tracing) and ``.compile()`` (XLA)
of the whole step, and of the step of an engine with each source alone (same metrics, gate and
objectives), with the size of each lowered program (StableHLO operations). The last row is
the fixed cost every step pays whatever its sources: the step of the cheapest source alone
(``gaussian``) is mostly assess and gate. One table per run; run it twice, the machine's load
moves the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # measure compilations, not cache hits

import jax
import jax.numpy as jnp
from flax import nnx

from ev3evo import EV3
from ev3evo.adapt.allocation import Allocation
from ev3evo.distillation import inputs
from ev3evo.distillation.engine import build_engine, distillation_sources, engine_settings
from ev3evo.distillation.pipeline import evaluation_batches
from ev3evo.distillation.teachers import teacher_of


def problem(data: str, student: str):
    """The engine of a distill run on ``data`` with ``student``, and one step's inputs."""
    c, _ = inputs.given(None, None, None, None, {"data": data, "student": student})
    ds = inputs.dataset(c, inputs.Given())
    classes = ds.num_classes
    features = int(jnp.prod(jnp.asarray(ds.feature_shape)))
    teacher = _Teacher(features, classes)
    objects = inputs.Given(teacher=teacher)
    learner = inputs.student(c, objects, ds)
    with tempfile.TemporaryDirectory() as out:
        splits, _, labeller = teacher_of(ds, teacher, c, out)
    settings = engine_settings(c, can_label=labeller is not None)
    evaluation = evaluation_batches(c, settings, splits, labeller)
    key = jax.random.key(0)
    batch = evaluation(key, 0) if callable(evaluation) else evaluation
    engine = build_engine(learner, c, settings, classes, len(splits["val"]["y"]))
    return c, learner, engine, (splits["train"], batch), learner.initial


class _Teacher(nnx.Module):
    """A random linear teacher on the flattened examples."""

    def __init__(self, features: int, classes: int):
        self.linear = nnx.Linear(features, classes, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.linear(x.reshape(x.shape[0], -1))


def compile_seconds(engine: EV3, model, train, batch) -> tuple[float, float, int]:
    """``(trace and lower seconds, compile seconds, StableHLO operations)`` of one step."""
    key = jax.random.key(1)
    state = engine.init(key, model)
    t0 = time.perf_counter()
    lowered = engine.step.lower(key, state, train, batch)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    ops = sum(1 for line in lowered.as_text().splitlines() if " = " in line)
    return t1 - t0, t2 - t1, ops


def alone(engine: EV3, source) -> EV3:
    """``engine`` with ``source`` as its only source (same metrics, objectives and gate)."""
    return EV3([source], engine.metrics, engine.objectives, engine.constraints, engine.gate,
               Allocation(population_size=source.size), engine.patience)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--student", default="mlp:8")
    args = parser.parse_args(argv)
    c, learner, engine, (train, batch), model = problem(args.data, args.student)
    print(f"{args.data}, student {args.student}, gate {engine.gate.correction}, "
          f"population {engine.population_size}, jax {jax.__version__}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'program':<14} {'slots':>5} {'trace s':>8} {'compile s':>9} {'HLO ops':>8}")
    rows = [("whole step", engine)]
    rows += [(s.name, alone(engine, s)) for s in distillation_sources(learner, c)]
    for name, e in rows:
        trace, comp, ops = compile_seconds(e, model, train, batch)
        print(f"{name:<14} {e.source.size:>5} {trace:>8.2f} {comp:>9.2f} {ops:>8}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
