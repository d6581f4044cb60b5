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

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


# ------------------------------------------------------------------------------ quadratic model


class QuadraticModel:
    """A host-side quadratic surrogate of ``f``: one Newton candidate per generation.

    :func:`ev3evo.minimize` records every evaluated point in an archive; :meth:`propose` fits

    .. math:: f(c + s \\odot z) \\approx a + g^\\top z + \\tfrac12 z^\\top H z

    by least squares on the ``k`` best archived points (centre ``c`` = the incumbent, ``s`` the
    per-coordinate spread of those points, ``k = 2p`` for ``p`` coefficients), and proposes the
    minimizer of the model, ``z* = -H⁺⁻¹ g`` with the eigenvalues of ``H`` floored to a small
    positive fraction of the largest one (a modified Newton step), shortened to a trust region of
    ``3 √D`` spreads. The full model (``p = (D+1)(D+2)/2``) is used once ``1.2 p`` points exist
    and ``D <= 25``; before that, or above, a separable (diagonal) model with ``2D + 1``
    coefficients. On convex quadratics (sphere, ellipsoids, at any conditioning) this reaches
    the optimum to machine precision in a few generations; on other functions its candidate
    simply loses and :func:`ev3evo.minimize` asks it less often.

    It lives on the host in numpy (tiny dense least squares, nothing to compile) because it
    learns from *every* evaluation, not only its own candidates, which a
    :class:`~ev3evo.Source` (told its own slice of the generation) cannot see.

    Reference: Hansen, "A global surrogate assisted CMA-ES", GECCO 2019 (lq-CMA-ES): the same
    full/diagonal quadratic regression, used here as a candidate generator.

    Example::

        import numpy as np
        from ev3evo.minimize_sources import QuadraticModel
        m = QuadraticModel(3, capacity=100)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(30, 3))
        m.add(x, np.sum((x - 1.0) ** 2, axis=1))
        assert np.allclose(m.propose(x[0]), 1.0)
    """

    def __init__(self, d: int, capacity: int = 20_000):
        self.d = int(d)
        self.full = self.d <= 25
        self.p_full = (self.d + 1) * (self.d + 2) // 2
        self.p_diag = 2 * self.d + 1
        self.capacity = max(int(capacity), 4 * self.p_full if self.full else 4 * self.p_diag)
        self.x = np.empty((self.capacity, self.d))
        self.f = np.empty(self.capacity)
        self.n = 0
        iu = np.triu_indices(self.d, 1)
        self._iu = iu

    def add(self, x: np.ndarray, f: np.ndarray) -> None:
        """Records evaluated points (non-finite values are skipped)."""
        ok = np.isfinite(f) & np.all(np.isfinite(x), axis=1)
        x, f = x[ok], f[ok]
        if self.n + len(f) > self.capacity:  # keep the best half: the model fits the best
            keep = np.argsort(self.f[: self.n])[: self.capacity // 2]
            self.x[: keep.size], self.f[: keep.size] = self.x[keep], self.f[keep]
            self.n = keep.size
            x, f = x[-(self.capacity - self.n) :], f[-(self.capacity - self.n) :]
        self.x[self.n : self.n + len(f)] = x
        self.f[self.n : self.n + len(f)] = f
        self.n += len(f)

    def ready(self) -> bool:
        return self.n >= 2 * self.p_diag

    def propose(self, center: np.ndarray) -> np.ndarray | None:
        """The model's minimizer near ``center`` (``None`` without enough points or a step)."""
        if not self.ready():
            return None
        full = self.full and self.n >= int(1.2 * self.p_full) + 1
        p = self.p_full if full else self.p_diag
        k = min(self.n, 2 * p)
        idx = np.argpartition(self.f[: self.n], k - 1)[:k] if k < self.n else np.arange(self.n)
        xs, fs = self.x[idx], self.f[idx]
        scale = np.std(xs, axis=0)
        top = np.max(scale)
        if not (np.isfinite(top) and top > 0):
            return None
        scale = np.maximum(scale, 1e-12 * top)
        z = (xs - center) / scale
        cols = [np.ones(k), z, 0.5 * z**2]
        if full:
            cols.append(z[:, self._iu[0]] * z[:, self._iu[1]])
        a = np.column_stack(cols)
        f0 = np.min(fs)
        spread = np.max(fs) - f0
        if not (np.isfinite(spread) and spread > 0):
            return None
        coef, *_ = np.linalg.lstsq(a, (fs - f0) / spread, rcond=None)
        d = self.d
        g = coef[1 : 1 + d]
        h = np.diag(coef[1 + d : 1 + 2 * d])
        if full:
            off = coef[1 + 2 * d :]
            h[self._iu] = off
            h[(self._iu[1], self._iu[0])] = off
        lam, vec = np.linalg.eigh(h)
        big = np.max(np.abs(lam))
        if not (np.isfinite(big) and big > 0):
            return None
        lam = np.maximum(lam, 1e-6 * big)
        step = -vec @ ((vec.T @ g) / lam)
        radius = 3.0 * math.sqrt(d)
        norm = float(np.linalg.norm(step))
        if not math.isfinite(norm) or norm == 0.0:
            return None
        if norm > radius:
            step *= radius / norm
        x = center + scale * step
        if np.array_equal(x, center):
            return None
        return x
