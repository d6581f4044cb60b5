"""The EV3 engine: explore → assess → adapt, one step.

A step is four stages, always in this order:

1. *explore, JAX parts*: the allocation's active mask and the candidates of every JAX source;
2. *explore, host parts*: the candidates of every host source (nevergrad, pycma, programs);
3. *assess and adapt*: every active candidate, the current and the stable model scored on the
   evaluation batch; the gate decides; the JAX sources are told; the allocation is updated;
4. *tell, host parts*.

Without host sources stages 2 and 4 do nothing and the whole step is one compiled program
(``jit``, and ``lax.scan`` over steps works); with host sources stages 1 and 3 are compiled
separately and the host stages run between them, with concrete arrays. ``EV3(timed=True)``
compiles explore, assess and the gate separately and times each (:mod:`ev3evo.timing`). A host source that
raises is isolated for the step: its slots are invalid, its state is kept, and the error is
reported in ``StepInfo.host_errors``.

Example::

    import jax, jax.numpy as jnp, optax
    import ev3evo

    apply = lambda p, x: x @ p["w"] + p["b"]
    key = jax.random.key(0)
    x = jax.random.normal(key, (256, 4)); y = (x[:, 0] > 0).astype(jnp.int32)
    batch = {"x": x, "y": y}
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    engine = ev3evo.EV3(
        sources=[ev3evo.gradient_rollouts([ev3evo.losses.cross_entropy(apply)],
                                          [optax.sgd(0.5)], steps=5),
                 ev3evo.gaussian(8, sigma=0.05)],
        metrics=[ev3evo.metrics.accuracy(apply)],
        gate=ev3evo.Gate(correction="holm"),
    )
    state = engine.init(key, params)
    state, info = engine.step(jax.random.key(1), state, batch, batch)
    assert int(state.step) == 1
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import _tree
from ._checks import check_positive_int
from .adapt import allocation as alloc
from .adapt.certification import FRESH, STATEFUL
from .adapt.gate import Gate, decide, initial_state
from .assess import objectives as obj
from .assess.evaluate import check_metrics, evaluate_population
from .assess.metrics import utility
from .explore import stateful
from .explore.mix import ask_parts, mix, tell_parts
from .parallel import constrain_population, sharded_evaluate, sharded_step
from .timing import Laps, StageSeconds
from .types import Array, Batch, Evaluation, Feedback, Metric, Params, PRNGKey, Source


class EV3State(NamedTuple):
    """The whole state of a run, a pytree (checkpointable).

    Attributes:
      current: the current model θ.
      stable: the certified model θ_s.
      sources: the mixed source's state (a :class:`~ev3evo.explore.mix.MixState`).
      allocation: credit and slot counts per source.
      step: steps taken (int32).
      since_certified: steps since the last certification (int32), for stall detection.
      gate: what the certification rule keeps between steps: ``()`` for the stateless rules;
        with ``Gate(correction="sequential")`` a :class:`GateState` (the challenger and its
        test).
    """

    current: Params
    stable: Params
    sources: Any
    allocation: alloc.AllocationState
    step: Array
    since_certified: Array
    gate: Any = ()


class GateState(NamedTuple):
    """The sequential gate's challenger: a frozen model and its running test."""

    challenger: Params
    rule: Any  # ev3evo.adapt.certification.SequentialState


class StepInfo(NamedTuple):
    """What happened in one step (device arrays; :meth:`EV3.record` makes a dict of them)."""

    step: Array
    accepted: Array
    certified: Array
    rolled_back: Array
    stalled: Array
    winner: Array  # slot index, -1 when no candidate was valid
    winner_source: Array  # source index, -1 when none
    current_values: Array  # (M,) metric values of the current model after the step
    stable_values: Array  # (M,)
    winner_values: Array  # (M,)
    counts: Array  # (S,) slots each source filled this step
    num_valid: Array
    num_invalid: Array  # active candidates with non-finite parameters or scores
    num_unused: Array  # slots their sources did not fill this step (Source.used)
    pvalue: Array  # the winner's uncorrected p-value against the stable model
    before_values: Array  # (2, M) values of the current and the stable model before the step
    # Host sources that raised this step (ev3evo.explore.mix.HostError); their slots counted
    # as invalid. Always () without host sources.
    host_errors: tuple = ()
    # With EV3(timed=True) the seconds of the step's stages (ev3evo.timing.StageSeconds).
    seconds: tuple = ()


class Program(NamedTuple):
    """Everything static a step closes over (immutable; built and validated by :class:`EV3`)."""

    source: Source
    metrics: tuple
    objectives: tuple
    constraints: tuple
    gate: Gate
    allocation: alloc.Allocation
    allocator: alloc.Allocator
    patience: int
    mesh: Any
    evidence: Metric | None = None  # the metric the fresh-data gates test (Gate.evidence)
    timed: bool = False  # the stages compiled apart and timed (ev3evo.timing)


def _evaluation(prog: Program, eval_batch) -> Evaluation:
    """The step's evaluation batches; the fresh-data gates need a fresh batch every step."""
    evaluation = eval_batch if isinstance(eval_batch, Evaluation) else Evaluation(eval_batch)
    if prog.gate.correction in FRESH and evaluation.fresh is None:
        raise ValueError(
            f'Gate(correction="{prog.gate.correction}") tests on a fresh batch every step: pass '
            "ev3evo.Evaluation(validation, fresh) as the evaluation batch (run(): an evaluation "
            "callable (key, step) -> Evaluation)"
        )
    return evaluation


def explore(prog: Program, keys, state: EV3State, train_batch: Batch):
    """Stage 1: the active mask and the JAX sources' candidates (host blocks left ``None``)."""
    layout = prog.source.layout
    active = alloc.active_mask(state.allocation.counts, layout.source_ids, layout.offsets)
    if prog.source.used is not None:  # slots a source will not fill are not asked for
        active = active & prog.source.used(state.sources)
    blocks, sources = ask_parts(layout, False, keys, state.sources, state.current, train_batch,
                                active)
    return blocks, sources, active


def _evaluate_arms(prog: Program, state: EV3State, population, active, evaluation: Evaluation):
    """Assess: the budgeted (active) slots, plus current and stable (and the challenger), in one
    call; the gate's evidence metric on the fresh batch too, when the gate tests there."""
    capacity, budget = prog.source.size, prog.allocation.population_size
    if budget < capacity:
        index = jnp.nonzero(active, size=budget, fill_value=0)[0]
        in_budget = jnp.arange(budget) < jnp.sum(active)
        evaluated = _tree.take(population, index)
    else:
        index, in_budget, evaluated = jnp.arange(capacity), active, population
    usable = in_budget & _tree.all_finite(evaluated)
    # Non-finite candidates are evaluated as copies of the current model (their result is
    # discarded) so that NaN never reaches a metric's internals.
    evaluated = _tree.population_where(usable, evaluated, _tree.broadcast(state.current, budget))
    extra = [state.gate.challenger] if isinstance(state.gate, GateState) else []
    arms = _tree.concat([evaluated, *(_tree.broadcast(m, 1) for m in
                                      (state.current, state.stable, *extra))])
    arms = constrain_population(arms, prog.mesh)
    live = jnp.concatenate([usable, jnp.ones(1 + 1 + len(extra), bool)])
    stats = _evaluate(prog, prog.metrics, arms, evaluation.validation, live)
    fresh = None
    if prog.gate.correction in FRESH:
        (fresh,) = _evaluate(prog, [prog.evidence], arms, evaluation.fresh, live)
        fresh = fresh[..., 0]
    selection = None
    if evaluation.selection is not None:
        selection = tuple(_evaluate(prog, prog.metrics, arms, evaluation.selection, live))
    return stats, fresh, index, in_budget, usable, selection


def _evaluate(prog: Program, metrics, arms, batch, live):
    if prog.mesh is not None:  # every device evaluates its own block of members
        return sharded_evaluate(metrics, arms, batch, prog.mesh)
    return evaluate_population(metrics, arms, batch, live=live)


def _feedback(prog: Program, d, index, slot, current) -> Feedback:
    """What every source is told: fitness per slot, the selected slot, the model kept."""
    capacity, p = prog.source.size, prog.allocation.population_size
    fitness = jnp.full((capacity,), -jnp.inf).at[index].max(d.fitness)
    selected = (jnp.arange(capacity) == slot) & d.accepted & ~d.rolled_back
    w = jnp.maximum(d.winner, 0)
    kept_arm = jnp.where(d.rolled_back, p + 1, jnp.where(d.accepted, w, p))
    names = [m.name for m in prog.metrics]
    primary = names.index(prog.objectives[0].metric)
    params_fitness = utility(prog.metrics[primary], d.values[kept_arm, primary])
    return Feedback(fitness, selected, current, d.rolled_back, params_fitness)


class Assessed(NamedTuple):
    """The assess stage's output: the population and every arm's scores."""

    population: Any
    stats: tuple
    fresh: Any
    index: Array
    in_budget: Array
    usable: Array
    selection: Any  # the metrics' statistics on Evaluation.selection (None without one)
    unused: Array  # slots the sources did not fill


def assess(prog: Program, state: EV3State, blocks, active, evaluation: Evaluation) -> Assessed:
    """Stage 3a: the population, the current, stable (and challenger) models, scored."""
    population = constrain_population(_tree.concat(blocks), prog.mesh)
    unused = jnp.zeros((), jnp.int32)
    if prog.source.used is not None:
        unused = jnp.sum(~prog.source.used(state.sources)).astype(jnp.int32)
    return Assessed(population, *_evaluate_arms(prog, state, population, active, evaluation),
                    unused)


def settle(prog: Program, key_gate, tell_keys, state: EV3State, sources, blocks,
           a: Assessed):
    """Stage 3b: the gate decides, the JAX sources are told, the allocation is updated."""
    layout = prog.source.layout
    rule_state = state.gate.rule if isinstance(state.gate, GateState) else state.gate
    d = decide(key_gate, prog.metrics, a.stats, prog.objectives, prog.constraints, a.usable,
               prog.gate, a.fresh, rule_state, a.selection)
    w = jnp.maximum(d.winner, 0)
    slot = a.index[w]
    winner = _tree.take(a.population, slot)
    certified_model = winner
    if isinstance(state.gate, GateState):  # the sequential rule certifies its challenger
        certified_model = _tree.where(d.certified_arm == a.usable.shape[0] + 2,
                                      state.gate.challenger, winner)
    stable = _tree.where(d.certified, certified_model, state.stable)
    current = _tree.where(d.rolled_back, stable, _tree.where(d.accepted, winner, state.current))
    feedback = _feedback(prog, d, a.index, slot, current)
    sources = tell_parts(layout, False, tell_keys, sources, blocks, feedback)
    winner_source = jnp.where(d.winner >= 0, jnp.asarray(layout.source_ids)[slot], -1)
    credit = alloc.winner_credit(len(layout.parts), winner_source, d.accepted, d.certified)
    since = jnp.where(d.certified, 0, state.since_certified + 1).astype(jnp.int32)
    new_state = EV3State(current, stable, sources, prog.allocator.update(state.allocation, credit),
                         state.step + 1, since, _next_gate_state(state.gate, d.gate_state, current))
    p = prog.allocation.population_size
    kept_arm = jnp.where(d.rolled_back, p + 1, jnp.where(d.accepted, w, p))
    info = StepInfo(
        step=state.step + 1, accepted=d.accepted, certified=d.certified,
        rolled_back=d.rolled_back, stalled=since >= prog.patience, winner=d.winner,
        winner_source=winner_source, current_values=d.values[kept_arm],
        stable_values=d.values[jnp.where(d.certified, d.certified_arm, p + 1)],
        winner_values=d.values[w], counts=state.allocation.counts, num_valid=jnp.sum(d.valid),
        num_invalid=jnp.sum(a.in_budget & ~d.valid), num_unused=a.unused, pvalue=d.pvalue,
        before_values=d.values[p:p + 2],
    )
    return new_state, info, feedback


def adapt(prog: Program, key_gate, tell_keys, state: EV3State, blocks, sources, active,
          evaluation: Evaluation):
    """Stage 3: assess, decide, tell the JAX sources, update the allocation."""
    assessed = assess(prog, state, blocks, active, evaluation)
    return settle(prog, key_gate, tell_keys, state, sources, blocks, assessed)


def _next_gate_state(gate_state, rule_state, current):
    """The rule's new state; a challenger that left the test is replaced by the current model."""
    if not isinstance(gate_state, GateState):
        return rule_state
    renew = ~rule_state.active
    challenger = _tree.where(renew, current, gate_state.challenger)
    return GateState(challenger, rule_state._replace(active=jnp.ones((), bool)))


def build_step(prog: Program):
    """The step function ``(key, state, train_batch, eval_batch) -> (state, info)``.

    Compiled as one program without host sources; otherwise its JAX stages are compiled apart
    and the host stages run between them (see the module docstring). Timed (``prog.timed``),
    explore, assess and the gate are three programs, each waited for and timed.
    """
    layout, host, timed = prog.source.layout, prog.source.host, prog.timed
    explore_stage = functools.partial(explore, prog)
    adapt_stages = ((functools.partial(assess, prog), functools.partial(settle, prog)) if timed
                    else (functools.partial(adapt, prog),))
    if host or timed:
        explore_stage = jax.jit(explore_stage)
        adapt_stages = tuple(jax.jit(s) for s in adapt_stages)

    def step(key, state: EV3State, train_batch: Batch, eval_batch: Batch | Evaluation):
        evaluation = _evaluation(prog, eval_batch)
        check_metrics(prog.metrics, state.current, evaluation.validation)
        if evaluation.fresh is not None and prog.gate.correction in FRESH:
            check_metrics([prog.evidence], state.current, evaluation.fresh)
        if evaluation.selection is not None:
            check_metrics(prog.metrics, state.current, evaluation.selection)
        key_ask, key_gate, key_tell = jax.random.split(key, 3)
        ask_keys = jax.random.split(key_ask, len(layout.parts))
        tell_keys = jax.random.split(key_tell, len(layout.parts))
        laps = Laps() if timed else None
        blocks, sources, active = explore_stage(ask_keys, state, train_batch)
        errors: list = []
        if host:
            blocks, sources = ask_parts(layout, True, ask_keys, sources, state.current,
                                        train_batch, active, blocks, errors)
        if timed:
            seconds = [laps.lap((blocks, sources, active))]
            assessed = adapt_stages[0](state, blocks, active, evaluation)
            seconds.append(laps.lap(assessed))
            new_state, info, feedback = adapt_stages[1](key_gate, tell_keys, state, sources,
                                                        blocks, assessed)
        else:
            new_state, info, feedback = adapt_stages[0](key_gate, tell_keys, state, blocks,
                                                        sources, active, evaluation)
        if host:
            failed = {e.source for e in errors}
            told = tell_parts(layout, True, tell_keys, new_state.sources, blocks, feedback,
                              errors, skip=failed)
            new_state = new_state._replace(sources=told)
        info = info._replace(host_errors=tuple(errors))
        if timed:
            info = info._replace(seconds=StageSeconds(*seconds, laps.lap((new_state, info))))
        return new_state, info

    if host or timed:
        step.stages = (explore_stage, *adapt_stages)
        return step
    if prog.mesh is not None:
        return sharded_step(step, prog.mesh)
    return jax.jit(step)


class EV3:
    """The EV3 meta-optimizer: explore with sources, assess with metrics, adapt with a gate.

    The engine is immutable: its settings are fixed at construction and validated there, all
    evolving data lives in :class:`EV3State`, and :attr:`step` is built once from the
    settings (one compiled program when every source is JAX).

    Args:
      sources: the candidate sources (see :mod:`ev3evo.explore`), or one (mixed) source.
      metrics: every metric to assess (see :mod:`ev3evo.assess.metrics`).
      objectives: metric names (``"name"`` or ``"name:tolerance"``) or
        :class:`~ev3evo.Objective` s in priority order; defaults to the first metric. Ties
        within an objective's tolerance are broken by the next one.
      constraints: :class:`~ev3evo.Constraint` s or strings like ``"agreement>=0.95"``.
      gate: the gate's settings (:class:`~ev3evo.Gate`: ``alpha``, ``correction``,
        ``accept``, ``certify``, ``bootstrap``; see :mod:`ev3evo.adapt.gate`).
      allocation: the allocation's settings (:class:`~ev3evo.Allocation`:
        ``population_size``, ``min_slots``, ``credit_decay``, ``credit_prior``).
      patience: steps without certification after which the run counts as stalled.
      mesh: a one-axis ``jax.sharding.Mesh`` (see :func:`ev3evo.parallel.population_mesh`):
        the population is split over its devices, everything else replicated.
      timed: compile explore, assess and the gate as three programs and time each step's
        stages (``StepInfo.seconds``, ``record["stage_seconds"]``; see :mod:`ev3evo.timing`).
        The decisions are the same; the step waits for each stage.
    """

    __slots__ = ("program", "step")

    def __init__(
        self,
        sources: Sequence[Source] | Source,
        metrics: Sequence[Metric] | Metric,
        objectives: Sequence | None = None,
        constraints: Sequence = (),
        gate: Gate = Gate(),
        allocation: alloc.Allocation = alloc.Allocation(),
        patience: int = 20,
        mesh=None,
        timed: bool = False,
    ):
        source = mix(sources) if isinstance(sources, Source) else mix(*sources)
        metrics = _check_metrics(metrics)
        objectives, constraints = obj.resolve([m.name for m in metrics], objectives, constraints,
                                              {m.name: m.bounds for m in metrics})
        if not isinstance(gate, Gate):
            raise TypeError(f"gate must be an ev3evo.Gate, got {gate!r}")
        if not isinstance(allocation, alloc.Allocation):
            raise TypeError(f"allocation must be an ev3evo.Allocation, got {allocation!r}")
        settings = allocation.validated(source.layout.sizes)
        if mesh is not None and (source.host or timed):
            raise ValueError("mesh= needs every source to be a JAX source (no host source) "
                             "and timed=False")
        gate = gate.validated()
        prog = Program(source, metrics, objectives, constraints, gate, settings,
                       alloc.proportional(source.layout.sizes, settings.population_size,
                                          settings),
                       check_positive_int(patience, "patience"), mesh,
                       _evidence_metric(gate, metrics), bool(timed))
        object.__setattr__(self, "program", prog)
        object.__setattr__(self, "step", build_step(prog))

    def __setattr__(self, name, value):
        raise AttributeError(f"EV3 engines are immutable (cannot set {name!r}); build a new one")

    # ------------------------------------------------------------------ settings
    source = property(lambda self: self.program.source, doc="the mixed source")
    metrics = property(lambda self: self.program.metrics)
    objectives = property(lambda self: self.program.objectives)
    constraints = property(lambda self: self.program.constraints)
    gate = property(lambda self: self.program.gate)
    allocation = property(lambda self: self.program.allocation,
                          doc="the validated allocation settings (population_size filled in)")
    patience = property(lambda self: self.program.patience)
    mesh = property(lambda self: self.program.mesh)
    host = property(lambda self: self.program.source.host, doc="some source runs on the host")
    timed = property(lambda self: self.program.timed, doc="the step's stages are timed")
    population_size = property(lambda self: self.program.allocation.population_size)

    @property
    def source_names(self) -> tuple[str, ...]:
        return self.program.source.layout.names

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.program.metrics)

    def describe(self) -> dict:
        """A JSON-ready summary of the configuration (for logs and checkpoint fingerprints)."""
        p = self.program
        return {
            "sources": [[s.name, int(s.size), bool(s.host)] for s in p.source.layout.parts],
            "metrics": [[m.name, bool(m.maximize), bool(m.decomposable), bool(m.host)]
                        for m in p.metrics],
            "objectives": [[o.metric, float(o.tolerance)] for o in p.objectives],
            "constraints": [[c.metric, c.op, float(c.threshold)] for c in p.constraints],
            "gate": dict(p.gate._asdict()),
            "allocation": dict(p.allocation._asdict()),
            "patience": int(p.patience),
        }

    # ------------------------------------------------------------------ state
    def init(self, key: PRNGKey, params: Params) -> EV3State:
        """Initial state: current and stable models are ``params``; sources initialized."""
        _check_params(params)
        params = jax.tree.map(jnp.asarray, params)
        sources = self.program.source.init(key, params)
        zero = jnp.zeros((), jnp.int32)
        gate = initial_state(self.program.gate)
        if self.program.gate.correction in STATEFUL:
            gate = GateState(params, gate)
        state = EV3State(params, params, sources, self.program.allocator.init(), zero, zero,
                         gate)
        # Strong-type every leaf so the first and later steps see identical avals (a
        # weak-typed leaf would compile the step twice).
        return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), state)

    def replace_params(self, key: PRNGKey, state: EV3State, current: Params,
                       stable: Params) -> EV3State:
        """New current and stable models (e.g. after growth): sources are re-initialized.

        The allocation record and step counter are kept; the stall counter restarts.
        """
        sources = self.program.source.init(key, current)
        gate = initial_state(self.program.gate)
        if self.program.gate.correction in STATEFUL:  # a new challenger test for the new shapes
            gate = GateState(current, gate)
        return state._replace(current=current, stable=stable, sources=sources,
                              since_certified=jnp.zeros((), jnp.int32), gate=gate)

    def profile(self, key: PRNGKey, state: EV3State, train_batch: Batch,
                eval_batch: Batch | Evaluation, repeats: int = 3) -> dict:
        """Where a step's time goes: each stage compiled alone and timed on these inputs
        (:func:`ev3evo.timing.profile`)."""
        from .timing import profile

        return profile(self, key, state, train_batch, eval_batch, repeats)

    def initial_record(self, info: StepInfo) -> dict:
        """The record of the models a run starts from, from its first step's :class:`StepInfo`
        (the current and stable models' values before that step, on its evaluation batch)."""
        info = jax.device_get(info._replace(host_errors=(), seconds=()))
        names, sources = self.metric_names, self.source_names
        current, stable = ({n: float(v) for n, v in zip(names, values)}
                           for values in info.before_values)
        return {
            "step": int(info.step) - 1, "initial": True, "accepted": False, "certified": False,
            "rolled_back": False, "stalled": False, "winner_source": None, "current": current,
            "stable": stable, "winner": None,
            "allocation": {n: int(c) for n, c in zip(sources, info.counts)},
            "num_valid": 0, "num_invalid": 0, "num_unused": 0, "pvalue": 1.0, "host_errors": [],
        }

    def record(self, info: StepInfo) -> dict:
        """A JSON-ready dict of one step's :class:`StepInfo`."""
        host_errors, seconds = tuple(info.host_errors), info.seconds
        info = jax.device_get(info._replace(host_errors=(), seconds=()))
        names, sources = self.metric_names, self.source_names
        src = int(info.winner_source)
        as_dict = lambda values: {n: float(v) for n, v in zip(names, values)}
        return {
            "step": int(info.step),
            "accepted": bool(info.accepted),
            "certified": bool(info.certified),
            "rolled_back": bool(info.rolled_back),
            "stalled": bool(info.stalled),
            "winner_source": sources[src] if src >= 0 else None,
            "current": as_dict(info.current_values),
            "stable": as_dict(info.stable_values),
            "winner": as_dict(info.winner_values) if src >= 0 else None,
            "allocation": {n: int(c) for n, c in zip(sources, info.counts)},
            "num_valid": int(info.num_valid),
            "num_invalid": int(info.num_invalid),
            "num_unused": int(info.num_unused),
            "pvalue": float(info.pvalue),
            "host_errors": [{"source": e.source, "phase": e.phase, "error": e.message}
                            for e in host_errors],
            **({"stage_seconds": dict(seconds._asdict())} if seconds else {}),
        }


def _evidence_metric(gate: Gate, metrics) -> Metric | None:
    """The metric a fresh-data gate tests (``Gate.evidence``): one of the metrics, per example."""
    if gate.correction not in FRESH:
        return None
    found = [m for m in metrics if m.name == gate.evidence]
    if not found:
        raise ValueError(f"Gate(evidence={gate.evidence!r}) names none of the metrics "
                         f"{[m.name for m in metrics]}")
    if not found[0].decomposable:
        raise ValueError(f"Gate(evidence={gate.evidence!r}) must be a per-example score in "
                         "[0, 1] (a decomposable metric such as agreement or accuracy)")
    return found[0]


def _check_metrics(metrics) -> tuple[Metric, ...]:
    if isinstance(metrics, Metric):
        metrics = [metrics]
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError("EV3 needs at least one metric")
    for m in metrics:
        if not isinstance(m, Metric):
            raise TypeError(f"metrics must be ev3evo.Metric values, got {m!r}")
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names must be unique, got {names}")
    return metrics


_SPLIT_HINT = (
    "EV3 explores floating-point parameters; carry any other state (batch statistics, RNG "
    "streams) beside them as ev3evo.Stateful(params, state), e.g. for a flax nnx model "
    "graphdef, params, rest = nnx.split(model, nnx.Param, ...), with the RNG keys of rest as "
    "their raw data (jax.random.key_data)")


def _check_params(params) -> None:
    explored = stateful.explored(params)
    leaves = jax.tree.leaves(explored)
    if not leaves:
        raise ValueError("params is an empty pytree")
    for path, x in jax.tree_util.tree_flatten_with_path(explored)[0]:
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            raise TypeError(
                f"every parameter must be a floating-point array; got dtype "
                f"{jnp.result_type(x)} at {jax.tree_util.keystr(path) or '<root>'} of "
                f"{_tree.describe(explored)}. {_SPLIT_HINT}"
            )
    if isinstance(params, stateful.Stateful):
        for path, x in jax.tree_util.tree_flatten_with_path(params.state)[0]:
            if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
                raise TypeError(
                    f"the carried state holds a typed PRNG key at "
                    f"{jax.tree_util.keystr(path)}: store its raw data (jax.random.key_data) "
                    "and wrap it back (jax.random.wrap_key_data) where the model is applied")
