"""Host-side members of :func:`ev3evo.minimize`'s portfolio: local search, a quadratic model, pycma.

All three live on the host in numpy, because on the problems ``minimize`` is for (a vector of
a few to a few hundred numbers) a generation's arithmetic is microseconds, and a device program
would cost a dispatch per generation and a compilation per dimension (measured on BBOB, D = 2
and 5, 2 CPU cores: the portfolio's compiled step cost ~20 s of compilation per dimension and
~1.2 ms per generation, about what pycma's whole generation costs).

* :class:`LocalSearch`: mutations of the incumbent, ``x + σ · noise`` (Gaussian or Cauchy),
  ``σ`` adapted by the 1/5th success rule (Rechenberg 1973; Kern et al. 2004, "Learning
  probability distributions in continuous evolutionary algorithms", eq. for the (1+1)-ES): the
  step grows by ``exp(1/3)`` when one of its candidates became the new incumbent and shrinks by
  ``exp(-1/12)`` otherwise, so it is stationary at a 20 % success rate. A generation in which
  it had no slot does not count as a failure.
* :class:`QuadraticModel`: lq-CMA-ES's regression used as a candidate generator.
* :class:`HostCMA`: pycma's CMA-ES with IPOP/BIPOP restarts.

Example::

    import numpy as np
    from ev3evo.minimize_sources import LocalSearch
    src = LocalSearch(0.5, "cauchy", seed=0)
    x = src.ask(4, np.zeros(3))
    src.tell(tried=True, won=False)
    assert x.shape == (4, 3) and src.sigma < 0.5
"""

from __future__ import annotations

import math

import numpy as np


class LocalSearch:
    """Mutations of the incumbent with a 1/5th-success-rule step size (see the module doc).

    Args:
      sigma: initial step size.
      kind: ``"gaussian"`` (isotropic normal noise) or ``"cauchy"`` (heavy tails: long jumps
        out of a basin now and then).
      seed: seed of its numpy generator.
    """

    def __init__(self, sigma: float, kind: str = "gaussian", seed: int = 0):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if kind not in ("gaussian", "cauchy"):
            raise ValueError(f"kind must be 'gaussian' or 'cauchy', got {kind!r}")
        self.sigma = float(sigma)
        self.kind = kind
        self._rng = np.random.default_rng([int(seed), 0x10CA1, kind == "cauchy"])

    def ask(self, n: int, center: np.ndarray) -> np.ndarray:
        """``n`` candidates ``center + σ · noise``, ``(n, D)``."""
        shape = (int(n), center.size)
        draw = self._rng.standard_normal if self.kind == "gaussian" else self._rng.standard_cauchy
        return center + self.sigma * draw(shape)

    def tell(self, tried: bool, won: bool) -> None:
        """Adapts ``σ``: ``tried`` (it had evaluated candidates), ``won`` (one became the incumbent)."""
        if tried:
            factor = math.exp(1.0 / 3.0) if won else math.exp(-1.0 / 12.0)
            self.sigma = min(max(self.sigma * factor, 1e-14), 1e6)


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
        self.added = 0  # points ever added (the archive itself is trimmed at capacity)
        self._fitted_at = -(10**9)
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
        self.added += len(f)

    def ready(self) -> bool:
        return self.n >= 2 * self.p_diag

    def propose(self, center: np.ndarray) -> np.ndarray | None:
        """The model's minimizer near ``center`` (``None`` without enough points or a step)."""
        if not self.ready():
            return None
        full = self.full and self.n >= int(1.2 * self.p_full) + 1
        p = self.p_full if full else self.p_diag
        # Refit once at least p/2 new points came in: before that the fit on the 2p best points
        # has barely changed. With minimize's populations this is every generation up to D = 5
        # and every ~5th at D = 20, where one full fit (231 coefficients) costs milliseconds.
        if self.added - self._fitted_at < p / 2:
            return None
        self._fitted_at = self.added
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
        if p <= 100:
            coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        else:
            # Large fits (full model, D >= 13): the normal equations with a tiny ridge are 8x
            # cheaper than lstsq's SVD (D = 20: 1.6 against 13 ms) and accurate enough for a
            # proposal on standardized coordinates.
            ata = a.T @ a
            ridge = 1e-10 * np.trace(ata) / p
            try:
                coef = np.linalg.solve(ata + ridge * np.eye(p), a.T @ y)
            except np.linalg.LinAlgError:
                return None
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


# ------------------------------------------------------------------------------ pycma member


class HostCMA:
    """pycma's CMA-ES with IPOP or BIPOP restarts: the ``"cma"`` member of :func:`ev3evo.minimize`.

    A thin adapter at the edge (DESIGN: stateful libraries live behind one): every run is a
    ``cma.CMAEvolutionStrategy`` driven by ``ask``/``tell``, and a run ends when pycma's own
    termination criteria fire (``es.stop()``: tolfun, tolx, stagnation, conditioning, ...).
    The next run starts again from ``x0`` (as ``cma.fmin2``'s restarts do), with

    * IPOP (Auger & Hansen 2005): the population doubled, ``σ0`` unchanged;
    * BIPOP (Hansen 2009): the regime that spent fewer evaluations so far runs next: *large*
      runs double the population as IPOP (the first run counts as large); *small* runs draw
      ``U ~ U(0, 1)`` and use ``λ = ⌊λ0 (λ_large / (2 λ0))^(U²)⌋`` and ``σ = σ0 10^(-2U)``
      (ibid., eq. 1 and 2).

    pycma runs on the host in numpy: at ``D <= 20`` a generation costs well under a
    millisecond, where evosax's ``CMA_ES`` on XLA:CPU costs more per generation and tens of
    seconds of compilation per dimension. Non-finite values are told as worse than every
    finite value of the generation (pycma ranks them; NaN would corrupt the ranking).

    Randomness: the restart seeds and BIPOP's draws come from a generator seeded with ``seed``;
    pycma itself samples from numpy's *global* generator, which it seeds when each run starts
    (its ``seed`` option). Runs are reproducible for a seed, but the global generator is
    reseeded, and an objective that draws from it between generations changes the run.

    Example::

        import numpy as np
        from ev3evo.minimize_sources import HostCMA
        cma = HostCMA(np.full(3, 2.0), 1.0, seed=1)
        for _ in range(150):
            x = cma.ask()
            cma.tell(x, np.sum(x**2, axis=1))
        assert np.sum(cma.es.mean ** 2) < 1e-6
    """

    def __init__(self, x0: np.ndarray, sigma0: float, seed: int = 0, regime: str = "ipop",
                 popsize: int | None = None, options: dict | None = None):  # fmt: skip
        if regime not in ("ipop", "bipop"):
            raise ValueError(f"regime must be 'ipop' or 'bipop', got {regime!r}")
        self.x0 = np.array(x0, dtype=np.float64)
        self.sigma0 = float(sigma0)
        self.regime = regime
        self.options = dict(options or {})
        self.lam0 = int(popsize or 4 + int(3 * math.log(self.x0.size)))
        self._rng = np.random.default_rng([int(seed), 0x43D4])  # restart seeds and BIPOP's U
        self.large = 0  # large-regime restarts so far (the first run is large)
        self.spent = {"large": 0, "small": 0}
        self.runs = 0
        self._start("large", self.lam0, self.sigma0)

    def _start(self, regime: str, lam: int, sigma: float) -> None:
        import cma

        opts = {"popsize": int(lam), "seed": int(self._rng.integers(1, 2**31 - 1)),
                "verbose": -9, "verb_log": 0, "verb_disp": 0, **self.options}  # fmt: skip
        self.es = cma.CMAEvolutionStrategy(self.x0, sigma, opts)
        self.current = regime
        self.runs += 1

    def _restart(self) -> None:
        small_next = self.regime == "bipop" and self.spent["small"] < self.spent["large"]
        if not small_next:
            self.large += 1
            self._start("large", self.lam0 * 2**self.large, self.sigma0)
            return
        u = float(self._rng.uniform())
        lam_large = self.lam0 * 2**self.large
        lam = max(2, math.floor(self.lam0 * (lam_large / (2 * self.lam0)) ** (u * u)))
        self._start("small", lam, self.sigma0 * 10.0 ** (-2.0 * u))

    @property
    def size(self) -> int:
        """Candidates of the next :meth:`ask` (the current run's population)."""
        return int(self.es.popsize)

    def ask(self) -> np.ndarray:
        """The current run's next generation, ``(λ, D)``."""
        return np.asarray(self.es.ask(), dtype=np.float64)

    def tell(self, x: np.ndarray, f: np.ndarray, exact: bool = False) -> None:
        """Tells the whole generation (minimized values); restarts when pycma's run stops.

        ``exact``: ``x`` are the very points :meth:`ask` returned (not clipped or repaired),
        so pycma may skip its check of told points against asked ones.
        """
        f = np.asarray(f, dtype=np.float64)
        finite = np.isfinite(f)
        if not finite.all():  # worse than every finite value, in the generation's order
            worst = np.max(f[finite]) if finite.any() else 0.0
            f = np.where(finite, f, worst + 1.0 + abs(worst))
        self.es.tell(list(x), f.tolist(), check_points=False if exact else None)
        self.spent[self.current] += len(f)
        if self.es.stop():
            self._restart()

    def move_mean(self, x: np.ndarray) -> None:
        """Continues the current run from ``x`` (step size and covariance kept)."""
        self.es.mean[:] = x
