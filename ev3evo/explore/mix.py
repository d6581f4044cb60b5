"""``mix``: one population from many sources, like ``optax.chain`` for transforms.

A mix is a :class:`~ev3evo.Source` again (composition is closed): its state is a
:class:`MixState` with one state per part, ``source.layout`` says which part fills which slot,
and mixing mixes flattens them, so ``mix(mix(a, b), c)`` is ``mix(a, b, c)``.

Parts run where they must: a JAX part inside the compiled step, a *host* part
(``Source.host``, e.g. nevergrad) in Python with concrete arrays. :func:`ask_parts` and
:func:`tell_parts` ask or tell one of the two groups and leave the other untouched; the mix's
own ``ask``/``tell`` run the JAX group, then the host group, and :class:`ev3evo.EV3` stages the
same two calls around its compiled programs.

Example::

    import jax, jax.numpy as jnp, ev3evo
    source = ev3evo.mix(ev3evo.mix(ev3evo.gaussian(4, 0.1), ev3evo.cauchy(2, 0.1)),
                        ev3evo.gaussian(3, 0.2))
    params = {"w": jnp.zeros(3)}
    state = source.init(jax.random.key(0), params)
    pop, state = source.ask(jax.random.key(1), state, params, None, jnp.ones(9, bool))
    assert pop["w"].shape == (9, 3) and len(state.parts) == 3
    assert source.layout.names == ("gaussian_1", "cauchy", "gaussian_2")
    assert source.layout.source_ids.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import _tree
from ..types import Feedback, Layout, Source


class MixState(NamedTuple):
    """State of a :func:`mix`: ``parts[i]`` is the state of ``layout.parts[i]``."""

    parts: tuple


class HostError(NamedTuple):
    """A host part that raised while the engine isolated it (its slots became invalid)."""

    source: str
    phase: str  # "ask" or "tell"
    message: str


# Errors a source raises while being traced (a loss that does not fit the batch, an operator
# with the wrong signature): re-raised as a ValueError that names the source.
_SOURCE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)


def _flatten(sources) -> tuple[Source, ...]:
    parts = []
    for i, s in enumerate(sources):
        if not isinstance(s, Source):
            raise TypeError(
                f"mix() argument {i} is {type(s).__name__}, not an ev3evo.Source; wrap a "
                "(key, params) -> params function with ev3evo.mutation(fn, size)"
            )
        parts.extend(s.parts or (s,))
    # Unique names keep logs and allocation records readable: repeated names are numbered.
    names = [p.name for p in parts]
    seen: dict[str, int] = {}
    renamed = []
    for p in parts:
        if names.count(p.name) > 1:
            seen[p.name] = seen.get(p.name, 0) + 1
            p = p._replace(name=f"{p.name}_{seen[p.name]}")
        renamed.append(p)
    return tuple(renamed)


def mix(*sources: Source) -> Source:
    """Concatenates the candidates of several sources into one population.

    Each part keeps its own state; ``ask`` splits the key and the active mask per part; ``tell``
    hands every part its own slice of the population and of the feedback. Nested mixes are
    flattened into their parts.

    Returns:
      A :class:`~ev3evo.Source` whose state is a :class:`MixState` and whose ``parts`` are the
      single sources, in slot order (``source.layout``).
    """
    if not sources:
        raise ValueError("mix() needs at least one source")
    parts = _flatten(sources)
    layout = Layout(parts)
    size = layout.offsets[-1]

    def init(key, params):
        keys = jax.random.split(key, len(parts))
        return MixState(tuple(p.init(k, params) for p, k in zip(parts, keys)))

    def ask(key, state, params, batch, active):
        keys = jax.random.split(key, len(parts))
        blocks, states = ask_parts(layout, False, keys, state, params, batch, active)
        blocks, states = ask_parts(layout, True, keys, states, params, batch, active, blocks)
        return _tree.concat(blocks), states

    def tell(key, state, population, feedback: Feedback):
        keys = jax.random.split(key, len(parts))
        blocks = [_tree.slice_(population, lo, hi)
                  for lo, hi in zip(layout.offsets[:-1], layout.offsets[1:])]
        state = tell_parts(layout, False, keys, state, blocks, feedback)
        return tell_parts(layout, True, keys, state, blocks, feedback)

    host = any(p.host for p in parts)
    dump = load = None
    if any(p.dump is not None for p in parts):
        dump, load = _dump(parts), _load(parts)
    used = _used(parts) if any(p.used is not None for p in parts) else None
    name = "+".join(p.name for p in parts)
    return Source(init, ask, tell, size, name, host, dump, load, parts, used)


def ask_parts(layout: Layout, host: bool, keys, state: MixState, params, batch, active,
              blocks=None, errors: list | None = None):
    """Asks the parts whose ``host`` flag equals ``host``; the others keep block and state.

    Args:
      layout: the mix's layout.
      host: which group to ask.
      keys: one key per part (the same keys for both groups).
      state: the mix's :class:`MixState`.
      blocks: the population blocks so far (``None`` entries where nothing was asked yet).
      errors: when given (the engine, host group), a host part that raises is isolated: its
        block is NaN (invalid candidates), its state kept, and a :class:`HostError` appended.

    Returns:
      ``(blocks, state)``: a list of per-part populations (``None`` where not asked) and the
      new :class:`MixState`.
    """
    offsets = layout.offsets
    blocks = list(blocks) if blocks is not None else [None] * len(layout.parts)
    states = list(state.parts)
    for i, part in enumerate(layout.parts):
        if part.host != host:
            continue
        who = f"source {part.name!r}"
        try:
            pop, new = part.ask(keys[i], states[i], params, batch, active[offsets[i]:offsets[i + 1]])
            if part.host:  # host sources hand back numpy: checked, then cast to the model's dtypes
                _tree.check_population(pop, params, part.size, who)
                pop = jax.tree.map(lambda x, p: jnp.asarray(x, jnp.result_type(p)), pop, params)
        except Exception as e:
            if errors is None or not part.host:
                if isinstance(e, _SOURCE_ERRORS):  # name the failing source, not a bare traceback
                    raise ValueError(f"{who} failed to propose candidates: {_describe(e)}") from e
                raise
            errors.append(HostError(part.name, "ask", _describe(e)))
            pop, new = _invalid_block(params, part.size), states[i]
        if not part.host:
            _tree.check_population(pop, params, part.size, who)
            _tree.check_dtypes(pop, params, who)
            _tree.check_same_state(states[i], new, f"{who} (in ask)")
        blocks[i], states[i] = pop, new
    return blocks, MixState(tuple(states))


def tell_parts(layout: Layout, host: bool, keys, state: MixState, blocks,
               feedback: Feedback, errors: list | None = None, skip=()) -> MixState:
    """Tells the parts whose ``host`` flag equals ``host`` their block and feedback slice.

    ``blocks`` are the per-part populations (as :func:`ask_parts` returns them); ``skip``
    names parts not to tell (a host part whose ask failed); ``errors`` isolates a raising host
    part as in :func:`ask_parts`.
    """
    offsets = layout.offsets
    states = list(state.parts)
    for i, part in enumerate(layout.parts):
        if part.host != host or part.name in skip:
            continue
        lo, hi = offsets[i], offsets[i + 1]
        who = f"source {part.name!r}"
        part_feedback = feedback._replace(fitness=feedback.fitness[lo:hi],
                                          selected=feedback.selected[lo:hi])
        try:
            new = part.tell(keys[i], states[i], blocks[i], part_feedback)
            if not part.host:
                _tree.check_same_state(states[i], new, f"{who} (in tell)")
        except Exception as e:
            if errors is None or not part.host:
                if isinstance(e, _SOURCE_ERRORS):
                    raise ValueError(f"{who} failed in tell: {_describe(e)}") from e
                raise
            errors.append(HostError(part.name, "tell", _describe(e)))
            new = states[i]
        states[i] = new
    return MixState(tuple(states))


def _used(parts):
    def used(state: MixState):
        return jnp.concatenate([
            p.used(s) if p.used is not None else jnp.ones(p.size, bool)
            for p, s in zip(parts, state.parts)
        ])

    return used


def _invalid_block(params, size: int):
    return jax.tree.map(lambda x: jnp.full((size, *jnp.shape(x)), jnp.nan, jnp.result_type(x)),
                        params)


def _dump(parts):
    def dump(state: MixState) -> dict:
        return {str(i): p.dump(s) for i, (p, s) in enumerate(zip(parts, state.parts))
                if p.dump is not None}

    return dump


def _load(parts):
    def load(state: MixState, data: dict) -> MixState:
        states = list(state.parts)
        for i, p in enumerate(parts):
            if p.dump is not None:
                if p.load is None:
                    raise ValueError(f"source {p.name!r} has a dump hook but no load hook")
                states[i] = p.load(states[i], data[str(i)])
        return MixState(tuple(states))

    return load


def _describe(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"
