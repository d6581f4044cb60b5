r"""A quadratic surrogate of ``f``: one Newton candidate per generation (the ``"model"`` member).

:class:`QuadraticModel` records every evaluated point in an archive; :meth:`~QuadraticModel.propose`
fits

.. math:: f(c + s \odot z) \approx a + g^\top z + \tfrac12 z^\top H z

by least squares on the ``k`` best archived points (centre ``c`` = the incumbent, ``s`` the
per-coordinate spread of those points, ``k = 2p`` for ``p`` coefficients), and proposes the
minimizer of the model, ``z* = -H⁺⁻¹ g`` with the eigenvalues of ``H`` floored to a small
positive fraction of the largest one (a modified Newton step), shortened to a trust region of
``3 √D`` spreads. The full model (``p = (D+1)(D+2)/2``) is used once ``1.2 p`` points exist
and ``D <= 25``; before that, or above, a separable (diagonal) model with ``2D + 1``
coefficients. On convex quadratics (sphere, ellipsoids, at any conditioning) this reaches the
optimum to machine precision in a few generations; on other functions its candidate simply
loses.

:class:`ModelMember` puts it in the portfolio: it proposes the model's minimizer around the
incumbent, and learns from *every* evaluated point of a generation, not only its own
candidates (which is why it is a host member and not a :class:`~ev3evo.Source`, told its own
slice of the generation only). It lives on the host in numpy: tiny dense least squares,
nothing to compile.

Reference: Hansen, "A global surrogate assisted CMA-ES", GECCO 2019 (lq-CMA-ES): the same
full/diagonal quadratic regression, used here as a candidate generator.

Example::

    import numpy as np
    from ev3evo.blackbox.model import QuadraticModel
    m = QuadraticModel(3, capacity=100)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    m.add(x, np.sum((x - 1.0) ** 2, axis=1))
    assert np.allclose(m.propose(x[0]), 1.0)
"""

from __future__ import annotations

import math

import numpy as np

from .member import Outcome, Proposal
from .surrogate import _least_squares


class QuadraticModel:
    """A host-side quadratic surrogate of ``f`` fitted to its best points (see the module doc).

    Args:
      d: the dimension.
      capacity: points kept in the archive (at least 4 coefficients' worth); when it is full,
        the best half is kept.
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
        self.added = 0  # points ever added (the archive itself is trimmed at capacity)
        self._fitted_at = -(10**9)
        self._iu = np.triu_indices(self.d, 1)

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
        self.added += len(f)

    def ready(self) -> bool:
        """Enough points for the diagonal model."""
        return self.n >= 2 * self.p_diag

    def propose(self, center: np.ndarray) -> np.ndarray | None:
        """The model's minimizer near ``center`` (``None`` without enough points or a step)."""
        if not self.ready():
            return None
        full = self.full and self.n >= int(1.2 * self.p_full) + 1
        p = self.p_full if full else self.p_diag
        # Refit once at least p/2 new points came in: before that the fit on the 2p best points
        # has barely changed. With minimize's populations this is every generation up to D = 5
        # and every few generations at D = 20, where one full fit has 231 coefficients.
        if self.added - self._fitted_at < p / 2:
            return None
        self._fitted_at = self.added
        fit = self._fit(center, full, p)
        if fit is None:
            return None
        coef, scale = fit
        step = self._newton_step(coef, full)
        if step is None:
            return None
        x = center + scale * step
        if np.array_equal(x, center):
            return None
        return x

    def _fit(self, center: np.ndarray, full: bool, p: int):
        """``(coefficients, spread)`` of the least-squares fit on the ``2p`` best points."""
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
        y = (fs - f0) / spread
        coef = _least_squares(a, y)
        return None if coef is None else (coef, scale)

    def _newton_step(self, coef: np.ndarray, full: bool) -> np.ndarray | None:
        """The model's modified Newton step in standardized coordinates, in the trust region."""
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
        return step


class ModelMember:
    """The ``"model"`` member: proposes :class:`QuadraticModel`'s minimizer around the incumbent.

    Args:
      d: the dimension.
      capacity: the archive's size.
      x0: the start point, ``(D,)``, and ``f0`` its value: the first archived point.
    """

    names = ("model",)

    def __init__(self, d: int, capacity: int, x0: np.ndarray, f0: float):
        self.model = QuadraticModel(d, capacity)
        self.model.add(x0[None], np.array([f0]))

    def ask(self, incumbent: np.ndarray, generation: int) -> Proposal | None:
        x = self.model.propose(incumbent) if self.model.ready() else None
        return None if x is None else Proposal(x[None], np.zeros(1, np.int32))

    def tell(self, outcome: Outcome) -> None:
        self.model.add(outcome.x[outcome.evaluated], outcome.f[outcome.evaluated])
