"""The JAX members of :func:`ev3evo.minimize`: sources mixed with :func:`ev3evo.mix`, compiled.

The built-in ``"cma_evosax"`` (evosax's ``CMA_ES`` with BIPOP restarts through
:func:`ev3evo.evosax_source`) and ``"de"`` (evosax's ``DifferentialEvolution``), and any
:class:`~ev3evo.Source` a user passes, are mixed into one source and asked around the
incumbent. A generation costs one compiled call: the previous generation's ``tell`` fused with
this generation's ``ask``. When the quadratic model's candidate became the incumbent, evosax's
CMA-ES continues from it (every rung's mean is moved there; step size and covariance kept).

Sources are told ``-f`` (EV3's fitness is higher-is-better), ``-inf`` for candidates that were
not evaluated or returned NaN, and which candidate became the incumbent.

Example::

    import numpy as np, ev3evo
    res = ev3evo.minimize(lambda x: float(np.sum(x**2)), np.ones(2), budget=60,
                          sources=[ev3evo.gaussian(8, 0.3)], sigma0=0.5)
    assert res.nfev == 60 and set(res.source_evals) == {"gaussian"}
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..explore.mix import mix
from ..types import Feedback, Source
from .member import Outcome, Proposal

#: The built-in JAX members.
DEVICE_NAMES = ("cma_evosax", "de")
# The step is a few small matrix operations per rung of the restart ladder, bound by dispatch,
# not arithmetic: LLVM's optimization passes lengthen its compilation for no speed.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


class DeviceStep(NamedTuple):
    """The mixed JAX members and their compiled functions.

    Attributes:
      mixed: the :func:`ev3evo.mix` of the members (a Source).
      init: ``(key, x) -> state`` (eager: each evosax source compiles its own init once per
        shape).
      ask: ``(seed_key, generation, state, x) -> (population, state)``.
      tell_ask: ``(seed_key, generation, state, population, feedback, x, move) ->
        (population, state)``: tell, move evosax CMA-ES's means to ``x`` when ``move``, ask.
      built_in: every member is built in (no user source).
    """

    mixed: Any
    init: Callable
    ask: Callable
    tell_ask: Callable
    built_in: bool


def _levels(budget: int, lam: int) -> int:
    # Enough ladder rungs that a top-rung run still gets ~50 generations of the budget.
    return int(np.clip(1 + math.floor(math.log2(max(budget / (lam * 50), 1.0))), 1, 6))


def _built_in(name: str, lam: int, sigma0: float, levels: int) -> Source:
    # Imported here: evosax starts JAX's backend when imported, which a host-only portfolio
    # never needs.
    from ..explore.evosax import bipop, evosax_source

    if name == "cma_evosax":
        return evosax_source("CMA_ES", lam, init_std=sigma0, recenter=False,
                             restart=bipop(levels=levels, min_num_gens=20), name=name,
                             compile_params=True)  # fmt: skip
    return evosax_source("DifferentialEvolution", max(8, 2 * lam), init_std=sigma0,
                         recenter=False, name=name, compile_params=True)  # fmt: skip


def _compile(names: tuple, user: tuple, lam: int, sigma0: float, levels: int) -> DeviceStep:
    source = mix(*(_built_in(n, lam, sigma0, levels) for n in names), *user)
    # Host sources (nevergrad) cannot be jitted; JAX ones are compiled.
    wrap = (lambda f: f) if source.host else functools.partial(
        jax.jit, compiler_options=_FAST_COMPILE)  # fmt: skip
    cma_ids = tuple(i for i, n in enumerate(names) if n == "cma_evosax")
    if cma_ids:
        from ..explore.evosax.distribution import recentered

    def keys(seed_key, gen):  # the generation's keys, folded in on the device
        return jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(seed_key), gen))

    def tell_ask(seed_key, gen, state, population, feedback, x, move):
        k_tell, k_ask = keys(seed_key, gen)
        state = source.tell(k_tell, state, population, feedback)
        if cma_ids:  # the model's point became the incumbent: CMA-ES continues from there
            parts = list(state.parts)
            for i in cma_ids:
                st = parts[i]
                rungs = tuple(recentered(r, jnp.where(move, x, r.es.mean)) for r in st.rungs)
                parts[i] = st._replace(rungs=rungs)
            state = state._replace(parts=tuple(parts))
        return source.ask(k_ask, state, x, None, jnp.ones(source.size, bool))

    def ask(seed_key, gen, state, x):
        return source.ask(keys(seed_key, gen)[1], state, x, None, jnp.ones(source.size, bool))

    return DeviceStep(source, source.init, wrap(ask), wrap(tell_ask), not user)


# Compiling a step costs seconds (a CMA-ES per rung of the restart ladder), so repeated calls
# with the built-in members reuse it. The cache is bounded and keyed by hashable configuration
# only; a step with user sources is built per call (keying by the user's objects would keep
# them, and everything they hold, alive for the life of the process).
@functools.lru_cache(maxsize=8)
def _built_in_step(names: tuple, d: int, dtype: str, sigma0: float, levels: int) -> DeviceStep:
    del dtype  # part of the key: the compiled functions are specialized to it
    return _compile(names, (), 4 + int(3 * math.log(d)), sigma0, levels)


def device_step(names: tuple, user: tuple, d: int, dtype, sigma0: float,
                budget: int) -> DeviceStep:  # fmt: skip
    """The compiled step of the built-in JAX members ``names`` and the user's sources."""
    lam = 4 + int(3 * math.log(d))  # pycma's default population size
    levels = _levels(budget, lam) if "cma_evosax" in names else 1
    if user:
        return _compile(names, user, lam, float(sigma0), levels)
    return _built_in_step(names, d, jnp.dtype(dtype).name, float(sigma0), levels)


class DeviceMembers:
    """The JAX members as one member of the portfolio (see the module doc).

    Args:
      step: their :class:`DeviceStep`.
      seed: the run's seed (the generation's keys are folded in from it).
      x0: the start point, ``(D,)``.
      dtype: JAX's float dtype (float32 unless ``jax_enable_x64``).
      follow: part names whose new incumbents evosax's CMA-ES continues from.
    """

    def __init__(self, step: DeviceStep, seed: int, x0: np.ndarray, dtype,
                 follow: tuple[str, ...] = ()):  # fmt: skip
        self.step = step
        self.names = step.mixed.layout.names
        self.follow = tuple(follow)
        self.dtype = dtype
        self._ids = np.asarray(step.mixed.layout.source_ids, np.int32)
        self._seed_key = np.asarray(jax.random.key_data(jax.random.key(seed)))
        key = jax.random.fold_in(jax.random.key(seed), 2**31 - 1)
        self.state = step.init(key, jnp.asarray(x0, dtype))
        self.move = False  # continue evosax's CMA-ES from the incumbent at the next tell
        self.pending = None  # (population, feedback) still to be told
        if step.built_in:
            # A first "tell" of nothing (every fitness -inf is a no-op for the built-in
            # sources) lets every generation go through the one compiled tell-then-ask step.
            size = step.mixed.size
            self.pending = (np.zeros((size, x0.size), dtype),
                            Feedback(np.full(size, -np.inf, dtype), np.zeros(size, bool),
                                     x0.astype(dtype), np.False_))  # fmt: skip

    def ask(self, incumbent: np.ndarray, generation: int) -> Proposal:
        x = incumbent.astype(self.dtype)
        gen = np.int32(generation)
        if self.pending is None:
            pop, self.state = self.step.ask(self._seed_key, gen, self.state, x)
        else:  # the previous generation's tell, fused with this generation's ask
            told, feedback = self.pending
            pop, self.state = self.step.tell_ask(self._seed_key, gen, self.state, told,
                                                 feedback, x, np.bool_(self.move))  # fmt: skip
        return Proposal(np.asarray(pop, dtype=np.float64), self._ids)

    def tell(self, outcome: Outcome) -> None:
        block = outcome.block
        f = outcome.f[block]
        fitness = np.where(np.isnan(f), -np.inf, -f)
        selected = np.arange(block.start, block.stop) == outcome.win
        feedback = Feedback(fitness.astype(self.dtype), selected,
                            outcome.best_x.astype(self.dtype), np.False_)  # fmt: skip
        self.pending = (outcome.x[block].astype(self.dtype), feedback)
        self.move = outcome.winner in self.follow
