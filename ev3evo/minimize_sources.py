"""Local sources used by :func:`ev3evo.minimize`: step-size-adapted mutations of the incumbent.

Each is an ordinary :class:`~ev3evo.Source` over a 1-D vector: ``ask`` samples around the
``params`` it is given (``minimize`` passes the best point found so far), ``tell`` adapts the
step size with the 1/5th success rule (Rechenberg 1973; Kern et al. 2004, "Learning
probability distributions in continuous evolutionary algorithms", eq. for the (1+1)-ES): the
step grows by ``exp(1/3)`` when one of the source's candidates became the new incumbent
(``feedback.selected``) and shrinks by ``exp(-1/12)`` otherwise, so it is stationary at a 20 %
success rate. Inactive slots (``active`` false) are not told as failures.

Example::

    import jax, jax.numpy as jnp, ev3evo
    from ev3evo.minimize_sources import local_search
    src = local_search(4, sigma=0.5)
    x = jnp.zeros(3)
    state = src.init(jax.random.key(0), x)
    pop, state = src.ask(jax.random.key(1), state, x, None, jnp.ones(4, bool))
    assert pop.shape == (4, 3)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import check_positive_int
from .types import Feedback, Source


class LocalState(NamedTuple):
    """Step size of a :func:`local_search` source (a float scalar)."""

    sigma: jax.Array


def local_search(size: int, sigma: float, kind: str = "gaussian", name: str | None = None):
    """Mutations ``x + sigma * noise`` of the incumbent, ``sigma`` adapted by the 1/5th rule.

    Args:
      size: candidates per step.
      sigma: initial step size.
      kind: ``"gaussian"`` (isotropic normal noise) or ``"cauchy"`` (heavy tails: long jumps
        out of a basin now and then).
      name: the source's name (defaults to ``"local_" + kind``).
    """
    check_positive_int(size, "size")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if kind not in ("gaussian", "cauchy"):
        raise ValueError(f"kind must be 'gaussian' or 'cauchy', got {kind!r}")
    draw = jax.random.normal if kind == "gaussian" else jax.random.cauchy

    def init(key, params):
        del key
        return LocalState(jnp.asarray(sigma, jnp.result_type(params)))

    def ask(key, state, params, batch, active):
        del batch, active
        noise = draw(key, (size, *jnp.shape(params)), jnp.result_type(params))
        return params + state.sigma * noise, state

    def tell(key, state, population, feedback: Feedback):
        del key, population
        tried = jnp.any(jnp.isfinite(feedback.fitness))
        won = jnp.any(feedback.selected)
        factor = jnp.where(won, jnp.exp(1.0 / 3.0), jnp.exp(-1.0 / 12.0))
        new = jnp.clip(state.sigma * jnp.where(tried, factor, 1.0), 1e-14, 1e6)
        return LocalState(new.astype(state.sigma.dtype))

    return Source(init, ask, tell, size, name or f"local_{kind}")
