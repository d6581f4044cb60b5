"""``mix``: one population from many sources, like ``optax.chain`` for transforms."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _tree
from ..types import Feedback, Source


class Mixed(NamedTuple):
    """The result of :func:`mix`: a source, plus which source made each slot.

    Attributes:
      source: the combined :class:`~ev3evo.Source` (state is a tuple of the parts' states).
      parts: the mixed sources, in order.
      source_ids: ``(size,)`` numpy int array, the index in ``parts`` of each slot's source.
      offsets: start slot of each part (static ints), plus the total size at the end.
    """

    source: Source
    parts: tuple[Source, ...]
    source_ids: np.ndarray
    offsets: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)


def mix(*sources: Source) -> Mixed:
    """Concatenates the candidates of several sources into one population.

    Each part keeps its own state (a tuple of states); ``ask`` splits the key, the active mask
    and the batch-independent inputs per part; ``tell`` hands every part its own slice of the
    population and of the feedback.

    Example::

        import jax, jax.numpy as jnp, ev3evo
        mixed = ev3evo.mix(ev3evo.gaussian(4, 0.1), ev3evo.cauchy(2, 0.1))
        params = {"w": jnp.zeros(3)}
        state = mixed.source.init(jax.random.key(0), params)
        pop, state = mixed.source.ask(jax.random.key(1), state, params, None, jnp.ones(6, bool))
        assert pop["w"].shape == (6, 3) and list(mixed.source_ids) == [0, 0, 0, 0, 1, 1]
    """
    if not sources:
        raise ValueError("mix() needs at least one source")
    for i, s in enumerate(sources):
        if not isinstance(s, Source):
            raise TypeError(
                f"mix() argument {i} is {type(s).__name__}, not an ev3evo.Source; wrap a "
                "(key, params) -> params function with ev3evo.mutation(fn, size)"
            )
    names = [s.name for s in sources]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        # Unique names keep logs and allocation records readable.
        counts: dict[str, int] = {}
        renamed = []
        for s in sources:
            if s.name in dupes:
                counts[s.name] = counts.get(s.name, 0) + 1
                s = s._replace(name=f"{s.name}_{counts[s.name]}")
            renamed.append(s)
        sources = tuple(renamed)
    offsets = tuple(int(x) for x in np.cumsum([0] + [s.size for s in sources]))
    total = offsets[-1]
    source_ids = np.concatenate([np.full(s.size, i) for i, s in enumerate(sources)])

    def init(key, params):
        keys = jax.random.split(key, len(sources))
        return tuple(s.init(k, params) for s, k in zip(sources, keys))

    def ask(key, state, params, batch, active):
        keys = jax.random.split(key, len(sources))
        pops, states = [], []
        for i, (s, k, st) in enumerate(zip(sources, keys, state)):
            who = f"source {s.name!r}"
            try:
                pop, new_st = s.ask(k, st, params, batch, active[offsets[i] : offsets[i + 1]])
            except _SOURCE_ERRORS as e:  # name the failing source instead of a bare traceback
                raise ValueError(f"{who} failed to propose candidates: {_describe(e)}") from e
            _tree.check_population(pop, params, s.size, who)
            if not s.host:  # host sources hand back numpy arrays, cast by the engine
                _tree.check_dtypes(pop, params, who)
                _tree.check_same_state(st, new_st, f"{who} (in ask)")
            pops.append(pop)
            states.append(new_st)
        return _tree.concat(pops), tuple(states)

    def tell(key, state, population, feedback: Feedback):
        keys = jax.random.split(key, len(sources))
        new = []
        for i, (s, k, st) in enumerate(zip(sources, keys, state)):
            lo, hi = offsets[i], offsets[i + 1]
            part = Feedback(
                fitness=feedback.fitness[lo:hi],
                selected=feedback.selected[lo:hi],
                params=feedback.params,
                rolled_back=feedback.rolled_back,
                params_fitness=feedback.params_fitness,
            )
            who = f"source {s.name!r}"
            try:
                new_st = s.tell(k, st, _tree.slice_(population, lo, hi), part)
            except _SOURCE_ERRORS as e:
                raise ValueError(f"{who} failed in tell: {_describe(e)}") from e
            if not s.host:
                _tree.check_same_state(st, new_st, f"{who} (in tell)")
            new.append(new_st)
        return tuple(new)

    host = any(s.host for s in sources)
    source = Source(init, ask, tell, total, "+".join(s.name for s in sources), host)
    return Mixed(source, tuple(sources), source_ids, offsets)


# Errors a source raises while being traced (a loss that does not fit the batch, an operator
# with the wrong signature): re-raised as a ValueError that names the source.
_SOURCE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def source_ids_array(mixed: Mixed) -> jax.Array:
    """The slot-to-source map as a JAX int32 array."""
    return jnp.asarray(mixed.source_ids, dtype=jnp.int32)
