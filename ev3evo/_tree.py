"""Small pytree helpers for populations (pytrees with a leading population axis).

optax.tree covers arithmetic; these cover the population axis, which no library names.

Example::

    import jax.numpy as jnp
    from ev3evo import _tree
    population = _tree.broadcast({"w": jnp.zeros(3)}, 4)       # 4 copies
    assert _tree.num_members(population) == 4
    assert _tree.all_finite(population).tolist() == [True] * 4
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .types import Array, Params, Population


def stack(trees) -> Population:
    """Stacks a list of pytrees with identical structure along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def concat(populations) -> Population:
    """Concatenates populations along their leading axis."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *populations)


def take(population: Population, index) -> Population:
    """Selects members (an int, or an array of ints) along the population axis."""
    return jax.tree.map(lambda x: x[index], population)


def slice_(population: Population, start: int, stop: int) -> Population:
    """Members ``start:stop`` (static bounds) of a population."""
    return jax.tree.map(lambda x: x[start:stop], population)


def broadcast(params: Params, size: int) -> Population:
    """A population of ``size`` copies of ``params``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (size, *jnp.shape(x))), params)


def where(condition, x, y):
    """``jnp.where`` leaf by leaf with a scalar condition."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def population_where(mask: Array, x: Population, y: Population) -> Population:
    """Member-wise select: member ``i`` from ``x`` where ``mask[i]`` else from ``y``."""

    def pick(a, b):
        m = jnp.reshape(mask, mask.shape + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, x, y)


def all_finite(population: Population) -> Array:
    """``(P,)`` bool: every entry of member ``i`` is finite."""
    leaves = jax.tree.leaves(population)
    if not leaves:
        raise ValueError("the population is an empty pytree")
    flags = [jnp.all(jnp.isfinite(jnp.reshape(x, (x.shape[0], -1))), axis=1) for x in leaves]
    return jnp.all(jnp.stack(flags), axis=0)


def num_members(population: Population) -> int:
    """The (static) length of the leading axis; raises if leaves disagree."""
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(population)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"population leaves disagree on the leading axis: {sorted(map(str, sizes))}")
    return sizes.pop()


def describe(tree) -> str:
    """A short human-readable description of a pytree's structure, shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(tree)
    shapes = ", ".join(f"{_dtype_name(x)}{list(jnp.shape(x))}" for x in leaves[:6])
    more = f", ... ({len(leaves)} leaves)" if len(leaves) > 6 else ""
    return f"{treedef} with leaves [{shapes}{more}]"


def _dtype_name(x) -> str:
    dtype = getattr(x, "dtype", None)
    return str(dtype) if dtype is not None else jnp.dtype(type(x)).name  # PRNG keys: key<fry>


def check_population(population: Population, params: Params, size: int, who: str) -> None:
    """Raises a clear ``ValueError`` unless ``population`` is ``size`` members shaped like params.

    Works on concrete arrays and on tracers / ``jax.ShapeDtypeStruct`` (only shapes are read).
    """
    p_def = jax.tree.structure(params)
    q_def = jax.tree.structure(population)
    if p_def != q_def:
        raise ValueError(
            f"{who} returned candidates whose pytree structure differs from the model "
            f"parameters:\n  params:     {p_def}\n  candidates: {q_def}"
        )
    for (path, p), q in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        jax.tree.leaves(population),
    ):
        name = jax.tree_util.keystr(path) or "<root>"
        expected = (size, *jnp.shape(p))
        if tuple(jnp.shape(q)) != expected:
            raise ValueError(
                f"{who} returned leaf {name} with shape {tuple(jnp.shape(q))}; expected "
                f"{expected} (population size {size} followed by the parameter's shape)"
            )


def check_dtypes(population: Population, params: Params, who: str) -> None:
    """Raises a clear ``TypeError`` unless every candidate leaf has its parameter's dtype.

    A candidate of another dtype (an integer operator, a float64 numpy draw) would silently
    change the model's dtype when accepted, and the compiled step with it.
    """
    for (path, p), q in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(population)
    ):
        if jnp.result_type(q) != jnp.result_type(p):
            name = jax.tree_util.keystr(path) or "<root>"
            raise TypeError(
                f"{who} returned leaf {name} with dtype {jnp.result_type(q)}; the model "
                f"parameter has dtype {jnp.result_type(p)} (cast the candidates to it)"
            )


def check_same_state(before, after, who: str) -> None:
    """Raises a clear ``ValueError`` when a state changes structure, shape or dtype.

    A source's state must keep its structure from step to step: ``lax.scan`` requires it, and
    under ``jit`` any change recompiles the step.
    """
    b_def, a_def = jax.tree.structure(before), jax.tree.structure(after)
    if b_def != a_def:
        raise ValueError(
            f"{who} changed the structure of its state:\n  before: {b_def}\n  after:  {a_def}"
        )
    for (path, b), a in zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(after)):
        b_sig = (tuple(jnp.shape(b)), jnp.result_type(b))
        a_sig = (tuple(jnp.shape(a)), jnp.result_type(a))
        if a_sig != b_sig:
            name = jax.tree_util.keystr(path) or "<root>"
            raise ValueError(
                f"{who} changed state leaf {name} from {b_sig[1]}{list(b_sig[0])} to "
                f"{a_sig[1]}{list(a_sig[0])}; a source's state must keep its shapes and dtypes"
            )
