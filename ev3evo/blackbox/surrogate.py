r"""A global linear-quadratic surrogate of ``f``, as lq-CMA-ES fits it, in vectorized numpy.

:class:`LQSurrogate` keeps the most recent evaluated points (an archive of at most
``max(2 p_full, λ)`` points, ``p_full = (D+1)(D+2)/2``) and fits, by weighted least squares,

.. math:: f(c + z) \approx a + b^\top z + \textstyle\sum_i h_{ii} z_i^2
          + \sum_{i<j} h_{ij} z_i z_j

(centre ``c`` the best archived point): linear (``D + 1`` coefficients) at first, separable
quadratic (``2D + 1``) once ``0.75 n >= 1.1 (2D + 1)`` points exist, full (``p_full``) once
``0.75 n >= 1.1 p_full`` (Hansen 2019, section 2). The fit uses the best
``max(p + 2, 0.75 (n + 1))`` points, weighted linearly from 20 (the best) down to 1, as
pycma's ``cma.fitness_models.LQModel`` does. Unlike it, the design matrix is built in one
vectorized expression and its columns are normalized before ``lstsq`` (so that ``z_i^2`` of a
converged search, ``~σ^4``, is not lost against the intercept), and the fit is recomputed only
once ``refit`` new points came in: by default at every new point for up to 100 coefficients
(D <= 12), where a fit costs a fraction of a CMA-ES generation, and every ``p / 10`` points
above, where one costs several (pycma refits on every access after an addition, in pure
Python: most of lq-CMA-ES's wall time).

:meth:`~LQSurrogate.kendall` is Kendall's rank correlation (tau-a) between the model and the
true values of the most recent points: the test by which lq-CMA-ES decides how much of a
population the model may rank. :meth:`~LQSurrogate.optimum` is the model's minimizer (Newton
step on ``|H|``, the absolute eigenvalues floored), injected into CMA-ES.

Reference: Hansen, "A global surrogate assisted CMA-ES", GECCO 2019.

Example::

    import numpy as np
    from ev3evo.blackbox.surrogate import LQSurrogate
    rng = np.random.default_rng(0)
    m = LQSurrogate(3, lam=7)
    x = rng.normal(size=(40, 3))
    m.add(x, np.sum((x - 1.0) ** 2 * [1.0, 10.0, 100.0], axis=1))
    assert m.kind == "full" and np.allclose(m.optimum(), 1.0, atol=1e-6)
    assert m.kendall(15) > 0.99
"""

from __future__ import annotations

import math

import numpy as np

#: The model kinds, by increasing number of coefficients.
KINDS = ("linear", "diagonal", "full")
_TRUNCATION = 0.75  # the share of the archive (best first) that the fit uses
_MIN_RELATIVE = 1.1  # points per coefficient (times _TRUNCATION) before a kind is used
_MAX_WEIGHT = 20.0  # the best point's regression weight; the worst used has weight 1


class LQSurrogate:
    """A linear → separable → full quadratic surrogate of recent points (see the module doc).

    Args:
      d: the dimension.
      lam: the population size (the archive holds at least that many points).
      refit: refit once this many points were added since the last fit (default: 1 for
        ``p <= 100`` coefficients, ``p / 10`` above).
    """

    def __init__(self, d: int, lam: int, refit: int | None = None):
        self.d = int(d)
        self.p = {"linear": d + 1, "diagonal": 2 * d + 1, "full": (d + 1) * (d + 2) // 2}
        self.size = max(2 * self.p["full"], int(lam),
                        math.ceil(self.p["full"] * _MIN_RELATIVE / _TRUNCATION))  # fmt: skip
        self.x = np.empty((self.size, self.d))
        self.f = np.empty(self.size)
        self.n = 0  # points held (the newest last)
        self.added = 0
        self._refit = refit
        self._fitted = -1  # self.added at the last fit
        self._coef = self._center = None
        self._kind = "linear"
        self._iu = np.triu_indices(self.d, 1)

    @property
    def kind(self) -> str:
        """The model kind the points held allow."""
        for kind in ("full", "diagonal"):
            if _TRUNCATION * self.n >= _MIN_RELATIVE * self.p[kind]:
                return kind
        return "linear"

    def add(self, x: np.ndarray, f: np.ndarray) -> None:
        """Records evaluated points (non-finite ones are skipped); the oldest leave first."""
        ok = np.isfinite(f) & np.all(np.isfinite(x), axis=1)
        self.added += int(ok.sum())
        x = np.asarray(x, np.float64)[ok][-self.size :]
        f = np.asarray(f, np.float64)[ok][-self.size :]
        k = len(f)
        if not k:
            return
        keep = min(self.n, self.size - k)
        self.x[:keep] = self.x[self.n - keep : self.n]
        self.f[:keep] = self.f[self.n - keep : self.n]
        self.x[keep : keep + k], self.f[keep : keep + k] = x, f
        self.n = keep + k

    def reset(self) -> None:
        """Forgets every point (a restart of the search starts a new model)."""
        self.n, self.added, self._fitted, self._coef = 0, 0, -1, None

    def ready(self) -> bool:
        """Enough points for a ranking (at least ``3 / 0.75`` of them, as lq-CMA-ES waits)."""
        return self.n >= math.ceil(3 / _TRUNCATION)

    def _features(self, z: np.ndarray, kind: str) -> np.ndarray:
        cols = [np.ones((len(z), 1)), z]
        if kind != "linear":
            cols.append(z * z)
        if kind == "full":
            cols.append(z[:, self._iu[0]] * z[:, self._iu[1]])
        return np.concatenate(cols, axis=1)

    def _stale(self) -> bool:
        if self._coef is None or self.kind != self._kind:
            return True
        p = self.p[self._kind]
        every = self._refit or (1 if p <= 100 else p // 10)
        return self.added - self._fitted >= every

    def fit(self) -> bool:
        """Refits when stale (see the module doc); ``False`` when no model can be fitted."""
        if not self.ready():
            return False
        if not self._stale():
            return True
        kind = self.kind
        p = self.p[kind]
        m = min(self.n, max(p + 2, int(_TRUNCATION * (self.n + 1))))
        f = self.f[: self.n]
        best = np.argsort(f, kind="stable")[:m]
        center = self.x[best[0]].copy()
        w = np.linspace(_MAX_WEIGHT, 1.0, m)
        a = self._features(self.x[best] - center, kind) * w[:, None]
        y = (f[best] - f[best[0]]) * w
        norms = np.sqrt(np.einsum("ij,ij->j", a, a))
        norms[norms == 0] = 1.0
        coef = _least_squares(a / norms, y)
        if coef is None:
            return False
        self._coef, self._center, self._kind = coef / norms, center, kind
        self._offset = float(f[best[0]])
        self._fitted = self.added
        return True

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model values of ``(n, D)`` points (call :meth:`fit` first)."""
        return self._features(np.atleast_2d(x) - self._center, self._kind) @ self._coef + \
            self._offset  # fmt: skip

    def kendall(self, n: int) -> float:
        """Kendall's tau-a between the model and the true values of the ``n`` newest points
        (0 with fewer than 3 points or no model)."""
        n = min(int(n), self.n)
        if n < 3 or not self.fit():
            return 0.0
        return kendall_tau(self.predict(self.x[self.n - n : self.n]), self.f[self.n - n : self.n])

    def hessian(self) -> np.ndarray | None:
        """The model's Hessian (``None`` for a linear model)."""
        if self._kind == "linear":
            return None
        d = self.d
        h = np.diag(2.0 * self._coef[1 + d : 1 + 2 * d])
        if self._kind == "full":
            off = self._coef[1 + 2 * d :]
            h[self._iu] = off
            h[(self._iu[1], self._iu[0])] = off
        return h

    def optimum(self) -> np.ndarray | None:
        """The model's minimizer, a Newton step on ``|H|`` from the centre (``None`` when the
        model is linear or degenerate)."""
        if not self.fit():
            return None
        h = self.hessian()
        if h is None:
            return None
        lam, vec = np.linalg.eigh(h)
        lam = np.abs(lam)
        top = float(np.max(lam))
        if not (math.isfinite(top) and top > 0):
            return None
        lam = np.maximum(lam, 1e-12 * top)
        g = self._coef[1 : 1 + self.d]
        step = -vec @ ((vec.T @ g) / lam)
        x = self._center + step
        return x if np.all(np.isfinite(x)) else None


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a of two ``(n,)`` vectors, ``Σ_{i≠j} sign(a_i - a_j) sign(b_i - b_j) /
    (n (n - 1))`` (vectorized; ``n`` is small: a population)."""
    n = len(a)
    if n < 2:
        return 0.0
    s = np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :])
    return float(s.sum() / (n * (n - 1)))


def _least_squares(a: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``argmin |a c - y|`` for ``a`` with normalized columns; ``None`` if not finite.

    A reduced QR decomposition (backward stable, as accurate as ``lstsq`` here, at an eighth of
    its cost at 66 coefficients) unless ``R`` is numerically singular, then ``lstsq`` (an SVD,
    minimum-norm). Precision matters: the model must resolve differences many orders of
    magnitude below the spread of the archive, which the normal equations lose.
    """
    coef = None
    if a.shape[0] >= a.shape[1]:
        q, r = np.linalg.qr(a)
        diag = np.abs(np.diag(r))
        if diag.min() > 1e-10 * diag.max():
            try:
                coef = np.linalg.solve(r, q.T @ y)
            except np.linalg.LinAlgError:
                coef = None
    if coef is None or not np.all(np.isfinite(coef)):
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return coef if np.all(np.isfinite(coef)) else None
