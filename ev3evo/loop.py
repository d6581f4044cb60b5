"""The EV3 engine: explore → assess → adapt, one compiled step.

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
    )
    state = engine.init(key, params)
    state, info = engine.step(jax.random.key(1), state, batch, batch)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _tree
from ._checks import check_nonnegative, check_positive_int, check_probability
from .adapt import allocation as alloc
from .adapt.gate import GateConfig, decide
from .assess.evaluate import check_metrics, evaluate_population
from .assess.metrics import utility
from .explore.mix import Mixed, mix
from .parallel import constrain_population, sharded_evaluate, sharded_step
from .types import Array, Batch, Constraint, Feedback, Metric, Objective, Params, PRNGKey, Source


class EV3State(NamedTuple):
    """The whole state of a run, a pytree (checkpointable).

    Attributes:
      params: the current model θ.
      stable: the certified model θ_s.
      sources: one state per source, in order.
      allocation: credit and slot counts per source.
      step: steps taken (int32).
      since_certified: steps since the last certification (int32), for stall detection.
    """

    params: Params
    stable: Params
    sources: tuple
    allocation: alloc.AllocationState
    step: Array
    since_certified: Array


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
    pvalue: Array  # the winner's uncorrected p-value against the stable model
    # Host sources that raised this step, as (source name, "ask"/"tell", message) tuples; the
    # raising source's slots counted as invalid. Always () on the all-JAX path.
    host_errors: tuple = ()


def parse_constraint(text: str) -> Constraint:
    """``"agreement>=0.95"`` → ``Constraint("agreement", ">=", 0.95)``."""
    for op in (">=", "<="):
        if op in text:
            name, _, threshold = text.partition(op)
            try:
                return Constraint(name.strip(), op, float(threshold))
            except ValueError:
                break
    raise ValueError(
        f"cannot read constraint {text!r}; write it as METRIC>=VALUE or METRIC<=VALUE, "
        "e.g. agreement>=0.95"
    )


class EV3:
    """The EV3 meta-optimizer: explore with sources, assess with metrics, adapt with a gate.

    The configuration is static and immutable; all evolving data lives in :class:`EV3State`.
    ``step`` is compiled once (when every source and metric is JAX) and reused.

    Args:
      sources: the candidate sources (see :mod:`ev3evo.explore`), or a :class:`Mixed`.
      metrics: every metric to assess (see :mod:`ev3evo.assess.metrics`).
      objectives: metric names or :class:`Objective` s in priority order; defaults to the first
        metric. Ties within an objective's tolerance are broken by the next one.
      constraints: :class:`Constraint` s or strings like ``"agreement>=0.95"``.
      population_size: slots evaluated per step (the budget shared by the sources); defaults
        to the sum of the sources' sizes. Smaller values make allocation matter.
      alpha: error level of the gate's confidence bounds (family-wise for certification).
      correction: multiplicity control across the candidates of a step: ``"holm"``,
        ``"bonferroni"``, ``"none"``, or ``"split"`` (select the winner on half of the
        evaluation examples, test it alone on the other half; see :mod:`ev3evo.adapt.gate`).
      accept: ``"not_worse"``, ``"better"`` or ``"lexicographic"`` (see
        :mod:`ev3evo.adapt.gate`).
      certify: ``"primary"`` or ``"lexicographic"`` (with ``correction="split"``: a winner
        tied on the primary objective and significantly better on a later one is certified
        too; see :mod:`ev3evo.adapt.gate`).
      bootstrap: bootstrap resamples for non-decomposable metrics.
      min_slots: the floor of slots every source keeps.
      credit_decay: EMA factor of source credit, in ``[0, 1)``.
      credit_prior: pseudo-credit that keeps shares from collapsing, ``> 0``.
      patience: steps without certification after which the run counts as stalled.
      mesh: a one-axis ``jax.sharding.Mesh`` (see :func:`ev3evo.parallel.population_mesh`):
        the population is split over its devices, everything else replicated.
    """

    def __init__(
        self,
        sources: Sequence[Source] | Mixed,
        metrics: Sequence[Metric],
        objectives: Sequence[str | Objective] | None = None,
        constraints: Sequence[str | Constraint] = (),
        population_size: int | None = None,
        alpha: float = 0.05,
        correction: str = "holm",
        accept: str = "not_worse",
        bootstrap: int = 500,
        certify: str = "primary",
        min_slots: int = 1,
        credit_decay: float = 0.8,
        credit_prior: float = 0.25,
        patience: int = 20,
        mesh=None,
    ):
        self.mixed = sources if isinstance(sources, Mixed) else mix(*sources)
        if isinstance(metrics, Metric):
            metrics = [metrics]
        if not metrics:
            raise ValueError("EV3 needs at least one metric")
        for m in metrics:
            if not isinstance(m, Metric):
                raise TypeError(f"metrics must be ev3evo.Metric values, got {m!r}")
        self.metrics = tuple(metrics)
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        objectives = objectives or [names[0]]
        self.objectives = tuple(o if isinstance(o, Objective) else Objective(o) for o in objectives)
        self.constraints = tuple(
            c if isinstance(c, Constraint) else parse_constraint(c) for c in constraints
        )
        for what, name in [("objective", o.metric) for o in self.objectives] + [
            ("constraint", c.metric) for c in self.constraints
        ]:
            if name not in names:
                raise ValueError(f"{what} names unknown metric {name!r}; metrics: {names}")
        for c in self.constraints:
            if c.op not in (">=", "<="):
                raise ValueError(f"constraint operator must be '>=' or '<=', got {c.op!r}")
        for o in self.objectives:
            check_nonnegative(o.tolerance, f"tolerance of objective {o.metric!r}")
        if correction not in ("holm", "bonferroni", "none", "split"):
            raise ValueError(
                f"correction must be 'holm', 'bonferroni', 'none' or 'split', got {correction!r}"
            )
        if accept not in ("not_worse", "better", "lexicographic"):
            raise ValueError(
                f"accept must be 'not_worse', 'better' or 'lexicographic', got {accept!r}")
        if certify not in ("primary", "lexicographic"):
            raise ValueError(f"certify must be 'primary' or 'lexicographic', got {certify!r}")
        if certify == "lexicographic" and correction != "split":
            raise ValueError('certify="lexicographic" needs correction="split" (the winner is '
                             "then tested alone, so the paths need no correction over candidates)")
        self.gate = GateConfig(
            alpha=check_probability(alpha, "alpha"),
            correction=correction,
            accept=accept,
            bootstrap=check_positive_int(bootstrap, "bootstrap"),
            certify=certify,
        )
        capacity = self.mixed.source.size
        self.population_size = (
            capacity if population_size is None else check_positive_int(population_size, "population_size")
        )
        self.min_slots = check_positive_int(min_slots, "min_slots")
        num_sources = len(self.mixed.parts)
        if self.population_size > capacity:
            raise ValueError(
                f"population_size {self.population_size} exceeds the sources' total size "
                f"{capacity}; give the sources more slots or lower population_size"
            )
        floor = sum(min(self.min_slots, p.size) for p in self.mixed.parts)
        if self.population_size < floor:
            raise ValueError(
                f"population_size {self.population_size} is below the {floor} slots needed to "
                f"give each of the {num_sources} sources min_slots={self.min_slots}"
            )
        if not 0.0 <= credit_decay < 1.0:
            raise ValueError(f"credit_decay must be in [0, 1), got {credit_decay}")
        if not credit_prior > 0:
            raise ValueError(f"credit_prior must be > 0, got {credit_prior}")
        self.credit_decay = float(credit_decay)
        self.credit_prior = float(credit_prior)
        self.patience = check_positive_int(patience, "patience")
        self.capacities = np.array([p.size for p in self.mixed.parts], np.int32)
        self.allocator = alloc.proportional(
            self.capacities, self.population_size,
            alloc.Allocation(self.population_size, self.min_slots, self.credit_decay,
                             self.credit_prior))
        self.host = self.mixed.source.host
        # The compiled step, built once and cached on this immutable configuration.
        self.step = self._staged_step if self.host else jax.jit(self._step)
        if self.host:
            # Host sources: the JAX parts run in two compiled stages around the host calls.
            self._ask_jax = jax.jit(self._ask_jax_stage)
            self._adapt_jax = jax.jit(self._adapt_stage)
        self.mesh = mesh
        if mesh is not None:
            if self.host:
                raise ValueError("mesh= needs every source to be a JAX source (no host source)")
            self.step = sharded_step(self._step, mesh)

    # ------------------------------------------------------------------ public API
    @property
    def source_names(self) -> tuple[str, ...]:
        return self.mixed.names

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def init(self, key: PRNGKey, params: Params) -> EV3State:
        """Initial state: current and stable models are ``params``; sources initialized."""
        leaves = jax.tree.leaves(params)
        if not leaves:
            raise ValueError("params is an empty pytree")
        for x in leaves:
            if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
                raise TypeError(
                    f"every parameter must be a floating-point array; got dtype "
                    f"{jnp.result_type(x)} in {_tree.describe(params)}"
                )
        params = jax.tree.map(jnp.asarray, params)
        sources = self.mixed.source.init(key, params)
        allocation = self.allocator.init()
        zero = jnp.zeros((), jnp.int32)
        state = EV3State(params, params, sources, allocation, zero, zero)
        # Strong-type every leaf so the first and later steps see identical avals (a
        # weak-typed leaf would compile the step twice).
        return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.result_type(a)), state)

    def replace_params(self, key: PRNGKey, state: EV3State, params: Params, stable: Params) -> EV3State:
        """New current and stable models (e.g. after growth): sources are re-initialized.

        The allocation record and step counter are kept; the stall counter restarts.
        """
        sources = self.mixed.source.init(key, params)
        return state._replace(
            params=params, stable=stable, sources=sources, since_certified=jnp.zeros((), jnp.int32)
        )

    def record(self, info: StepInfo) -> dict:
        """A JSON-ready dict of one step's :class:`StepInfo`."""
        host_errors = tuple(info.host_errors)
        info = jax.device_get(info._replace(host_errors=()))
        names = self.metric_names
        src = int(info.winner_source)
        return {
            "step": int(info.step),
            "accepted": bool(info.accepted),
            "certified": bool(info.certified),
            "rolled_back": bool(info.rolled_back),
            "stalled": bool(info.stalled),
            "winner_source": self.source_names[src] if src >= 0 else None,
            "current": {n: float(v) for n, v in zip(names, info.current_values)},
            "stable": {n: float(v) for n, v in zip(names, info.stable_values)},
            "winner": (
                {n: float(v) for n, v in zip(names, info.winner_values)} if src >= 0 else None
            ),
            "allocation": {n: int(c) for n, c in zip(self.source_names, info.counts)},
            "num_valid": int(info.num_valid),
            "num_invalid": int(info.num_invalid),
            "pvalue": float(info.pvalue),
            "host_errors": [
                {"source": n, "phase": phase, "error": msg} for n, phase, msg in host_errors
            ],
        }

    # ------------------------------------------------------------------ the step
    def _step(
        self, key: PRNGKey, state: EV3State, train_batch: Batch, eval_batch: Batch
    ) -> tuple[EV3State, StepInfo]:
        """One explore → assess → adapt step. Compiled with ``jax.jit`` (see ``self.step``)."""
        check_metrics(self.metrics, state.params, eval_batch)
        key_ask, key_gate, key_tell = jax.random.split(key, 3)
        mixed = self.mixed
        capacity = mixed.source.size
        counts = state.allocation.counts
        active = alloc.active_mask(counts, mixed.source_ids, mixed.offsets)

        # EXPLORE
        population, source_states = mixed.source.ask(
            key_ask, state.sources, state.params, train_batch, active
        )
        _tree.check_population(population, state.params, capacity, "the sources")
        new_state, info, _ = self._assess_adapt(
            key_gate, key_tell, state, population, source_states, active, eval_batch,
            mixed.source.tell,
        )
        return new_state, info

    def _assess_adapt(
        self, key_gate, key_tell, state, population, source_states, active, eval_batch, tell
    ):
        """Assess the population, adapt, and ``tell`` the sources; returns the feedback too."""
        mixed = self.mixed
        capacity = mixed.source.size
        budget = self.population_size
        counts = state.allocation.counts
        population = constrain_population(population, self.mesh)

        # ASSESS: only the budgeted (active) slots, plus current and stable, in one call.
        if budget < capacity:
            index = jnp.nonzero(active, size=budget, fill_value=0)[0]
            in_budget = jnp.arange(budget) < jnp.sum(active)
            evaluated = _tree.take(population, index)
        else:
            index = jnp.arange(capacity)
            in_budget = active
            evaluated = population
        usable = in_budget & _tree.all_finite(evaluated)
        # Non-finite candidates are evaluated as copies of the current model (their result is
        # discarded) so that NaN never reaches a metric's internals.
        evaluated = _tree.population_where(usable, evaluated, _tree.broadcast(state.params, budget))
        arms = _tree.concat(
            [evaluated, _tree.broadcast(state.params, 1), _tree.broadcast(state.stable, 1)]
        )
        arms = constrain_population(arms, self.mesh)
        if self.mesh is not None:  # every device evaluates its own block of members
            stats = sharded_evaluate(self.metrics, arms, eval_batch, self.mesh)
        else:
            stats = evaluate_population(self.metrics, arms, eval_batch)

        # ADAPT
        d = decide(key_gate, self.metrics, stats, self.objectives, self.constraints, usable, self.gate)
        w = jnp.maximum(d.winner, 0)
        slot = index[w]
        winner_params = _tree.take(population, slot)
        params = _tree.where(d.accepted, winner_params, state.params)
        stable = _tree.where(d.certified, winner_params, state.stable)
        params = _tree.where(d.rolled_back, stable, params)

        fitness = jnp.full((capacity,), -jnp.inf).at[index].max(d.fitness)
        selected = (jnp.arange(capacity) == slot) & d.accepted & ~d.rolled_back
        p = budget
        kept_arm = jnp.where(d.rolled_back, p + 1, jnp.where(d.accepted, w, p))
        primary = self.metric_names.index(self.objectives[0].metric)
        params_fitness = utility(self.metrics[primary], d.values[kept_arm, primary])
        feedback = Feedback(fitness, selected, params, d.rolled_back, params_fitness)
        source_states = tell(key_tell, source_states, population, feedback)

        source_ids = jnp.asarray(mixed.source_ids, jnp.int32)
        winner_source = jnp.where(d.winner >= 0, source_ids[slot], -1)
        credit = alloc.winner_credit(len(mixed.parts), winner_source, d.accepted, d.certified)
        allocation = self.allocator.update(state.allocation, credit)
        since = jnp.where(d.certified, 0, state.since_certified + 1).astype(jnp.int32)
        stable_arm = jnp.where(d.certified, w, p + 1)
        new_state = EV3State(params, stable, source_states, allocation, state.step + 1, since)
        info = StepInfo(
            step=state.step + 1,
            accepted=d.accepted,
            certified=d.certified,
            rolled_back=d.rolled_back,
            stalled=since >= self.patience,
            winner=d.winner,
            winner_source=winner_source,
            current_values=d.values[kept_arm],
            stable_values=d.values[stable_arm],
            winner_values=d.values[w],
            counts=counts,
            num_valid=jnp.sum(d.valid),
            num_invalid=jnp.sum(in_budget & ~d.valid),
            pvalue=d.pvalue,
        )
        return new_state, info, feedback

    # ------------------------------------------------------------------ the staged host step
    def _ask_jax_stage(self, ask_keys, state: EV3State, train_batch: Batch):
        """Compiled stage 1: the active mask and the JAX sources' candidates (host parts: None)."""
        mixed = self.mixed
        active = alloc.active_mask(state.allocation.counts, mixed.source_ids, mixed.offsets)
        pops, states = [], []
        for i, part in enumerate(mixed.parts):
            if part.host:
                pops.append(None)
                states.append(state.sources[i])
                continue
            lo, hi = mixed.offsets[i], mixed.offsets[i + 1]
            pop, st = part.ask(ask_keys[i], state.sources[i], state.params, train_batch,
                               active[lo:hi])
            _tree.check_population(pop, state.params, part.size, f"source {part.name!r}")
            pops.append(pop)
            states.append(st)
        return tuple(pops), tuple(states), active

    def _tell_jax_parts(self, key_tell, source_states, population, feedback: Feedback):
        """``mix``'s tell restricted to the JAX parts (same per-part keys); host parts kept."""
        mixed = self.mixed
        keys = jax.random.split(key_tell, len(mixed.parts))
        new = list(source_states)
        for i, part in enumerate(mixed.parts):
            if part.host:
                continue
            new[i] = part.tell(keys[i], source_states[i], _slice_population(mixed, population, i),
                               _slice_feedback(mixed, feedback, i))
        return tuple(new)

    def _adapt_stage(self, key_gate, key_tell, state, population, source_states, active,
                     eval_batch):
        """Compiled stage 2: assess + adapt, and tell the JAX sources."""
        return self._assess_adapt(key_gate, key_tell, state, population, source_states, active,
                                  eval_batch, self._tell_jax_parts)

    def _staged_step(
        self, key: PRNGKey, state: EV3State, train_batch: Batch, eval_batch: Batch
    ) -> tuple[EV3State, StepInfo]:
        """One step with host sources: JAX ask (compiled) → host ask → assess + adapt + JAX tell
        (compiled) → host tell. Same keys per source as the fused step. A host source that
        raises is isolated for the step: its slots are NaN (invalid, ``-inf`` fitness), its
        state is kept, and the error is reported in ``StepInfo.host_errors``.
        """
        check_metrics(self.metrics, state.params, eval_batch)
        mixed = self.mixed
        key_ask, key_gate, key_tell = jax.random.split(key, 3)
        ask_keys = jax.random.split(key_ask, len(mixed.parts))
        pops, states, active = self._ask_jax(ask_keys, state, train_batch)
        pops, states = list(pops), list(states)
        errors = []
        for i, part in enumerate(mixed.parts):
            if not part.host:
                continue
            lo, hi = mixed.offsets[i], mixed.offsets[i + 1]
            try:
                pop, st = part.ask(ask_keys[i], state.sources[i], state.params, train_batch,
                                   active[lo:hi])
                _tree.check_population(pop, state.params, part.size, f"source {part.name!r}")
                pop = jax.tree.map(lambda x, p: jnp.asarray(x, jnp.result_type(p)), pop,
                                   state.params)
            except Exception as e:  # isolate the host source for this step
                errors.append((part.name, "ask", f"{type(e).__name__}: {e}"))
                pop = jax.tree.map(
                    lambda x, n=part.size: jnp.full((n, *jnp.shape(x)), jnp.nan,
                                                     jnp.result_type(x)),
                    state.params,
                )
                st = state.sources[i]
            pops[i], states[i] = pop, st
        population = _tree.concat(pops)
        new_state, info, feedback = self._adapt_jax(
            key_gate, key_tell, state, population, tuple(states), active, eval_batch
        )
        tell_keys = jax.random.split(key_tell, len(mixed.parts))
        told = list(new_state.sources)
        for i, part in enumerate(mixed.parts):
            if not part.host:
                continue
            if any(name == part.name and phase == "ask" for name, phase, _ in errors):
                continue  # nothing was asked: nothing to tell
            try:
                told[i] = part.tell(tell_keys[i], states[i],
                                    _slice_population(mixed, population, i),
                                    _slice_feedback(mixed, feedback, i))
            except Exception as e:
                errors.append((part.name, "tell", f"{type(e).__name__}: {e}"))
                told[i] = states[i]
        new_state = new_state._replace(sources=tuple(told))
        return new_state, info._replace(host_errors=tuple(errors))


def _slice_population(mixed: Mixed, population, i: int):
    return _tree.slice_(population, mixed.offsets[i], mixed.offsets[i + 1])


def _slice_feedback(mixed: Mixed, feedback: Feedback, i: int) -> Feedback:
    lo, hi = mixed.offsets[i], mixed.offsets[i + 1]
    return feedback._replace(fitness=feedback.fitness[lo:hi], selected=feedback.selected[lo:hi])
