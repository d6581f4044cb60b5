"""pycma's CMA-ES with IPOP or BIPOP restarts: the ``"cma"`` and ``"cma_bipop"`` members.

:class:`HostCMA` is a thin adapter around pycma: every run is a ``cma.CMAEvolutionStrategy``
driven by ``ask``/``tell``, and a run ends when pycma's own termination criteria fire
(``es.stop()``: tolfun, tolx, stagnation, conditioning, ...). The next run starts again from
``x0`` (as ``cma.fmin2``'s restarts do), with

* IPOP (Auger & Hansen 2005): the population doubled, ``σ0`` unchanged;
* BIPOP (Hansen 2009): the regime that spent fewer evaluations so far runs next: *large* runs
  double the population as IPOP (the first run counts as large); *small* runs draw
  ``U ~ U(0, 1)`` and use ``λ = ⌊λ0 (λ_large / (2 λ0))^(U²)⌋`` and ``σ = σ0 10^(-2U)``
  (ibid., eq. 1 and 2).

pycma runs on the host in numpy, outside ``jit``: on the small dense problems
:func:`ev3evo.minimize` is for, a generation is a few small matrix operations, cheaper in numpy
than a dispatch of a compiled step. Non-finite values are told as worse than every finite value
of the generation (pycma ranks them; NaN would corrupt the ranking).

:class:`CMAMember` puts it in the portfolio: it proposes the current run's whole generation,
is told it only when every point of it was evaluated (a distribution-based ES told a partial
generation would mis-rank it; a truncated generation ends the run anyway), and continues from
the new incumbent when a member it follows (the quadratic model) produced it.

Randomness: the restart seeds and BIPOP's draws come from a generator seeded with ``seed``;
pycma itself samples from numpy's *global* generator, which it seeds when each run starts (its
``seed`` option). Runs are reproducible for a seed, but the global generator is reseeded, and
an objective that draws from it between generations changes the run.

References: Auger & Hansen, "A restart CMA evolution strategy with increasing population
size", CEC 2005; Hansen, "Benchmarking a BI-population CMA-ES on the BBOB-2009 function
testbed", GECCO 2009.

Example::

    import numpy as np
    from ev3evo.blackbox.host_cma import HostCMA
    cma = HostCMA(np.full(3, 2.0), 1.0, seed=1)
    for _ in range(150):
        x = cma.ask()
        cma.tell(x, np.sum(x**2, axis=1))
    assert np.sum(cma.es.mean ** 2) < 1e-6
"""

from __future__ import annotations

import math

import numpy as np

from .member import Outcome, Proposal

#: Restart regimes.
REGIMES = ("ipop", "bipop")


class HostCMA:
    """pycma's CMA-ES with IPOP or BIPOP restarts (see the module doc).

    Args:
      x0: where every run starts, ``(D,)``.
      sigma0: the initial step size of a (large) run.
      seed: seeds the restart seeds and BIPOP's draws.
      regime: ``"ipop"`` or ``"bipop"``.
      popsize: the first run's population (default: pycma's, ``4 + floor(3 ln D)``).
      options: more pycma options, passed to every run.
    """

    def __init__(self, x0: np.ndarray, sigma0: float, seed: int = 0, regime: str = "ipop",
                 popsize: int | None = None, options: dict | None = None):  # fmt: skip
        if regime not in REGIMES:
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


class CMAMember:
    """:class:`HostCMA` as a member of the portfolio (see the module doc).

    Args:
      name: its part name (``"cma"`` or ``"cma_bipop"``).
      cma: the :class:`HostCMA` it drives.
      exact: candidates reach ``fun`` unchanged (no bounds to clip them into).
      follow: part names whose new incumbents the current run continues from.
    """

    def __init__(self, name: str, cma: HostCMA, exact: bool, follow: tuple[str, ...] = ()):
        self.names = (name,)
        self.cma = cma
        self.exact = bool(exact)
        self.follow = tuple(follow)

    def ask(self, incumbent: np.ndarray, generation: int) -> Proposal:
        x = self.cma.ask()
        return Proposal(x, np.zeros(len(x), np.int32))

    def tell(self, outcome: Outcome) -> None:
        block = outcome.block
        if not outcome.evaluated[block].all():
            return  # pycma is told whole generations only
        runs = self.cma.runs
        self.cma.tell(outcome.x[block], outcome.f[block], exact=self.exact)
        if outcome.winner in self.follow and self.cma.runs == runs:
            self.cma.move_mean(outcome.best_x)
