"""CMA-ES whose generations a surrogate screens: the ``"lq_cma"`` member (after lq-CMA-ES).

Each CMA-ES generation (``λ`` candidates of pycma, IPOP restarts, :class:`HostCMA`) is
evaluated in pieces, over as many loop generations as it takes (Hansen 2019, algorithm 1):

1. the candidates are ranked by the :class:`~ev3evo.blackbox.surrogate.LQSurrogate` and the
   ``k = 1 + ⌊0.02 λ⌋`` best ranked are evaluated (all ``λ`` while the model has fewer than
   4 points);
2. the model is told them, and Kendall's tau between model and truth on the
   ``max(15, min(1.2 k, 0.75 λ))`` most recent points decides: at ``tau >= 0.85`` the model is
   trusted for the rest of the generation; below, ``⌈k / 2⌉`` more candidates (ranked again by
   the refitted model) are evaluated, and the test repeats (from half the generation on, the
   rest is evaluated at once);
3. CMA-ES is told the true values when every candidate was evaluated, else the model's values
   of the whole generation, shifted so that their minimum is the best true value (as pycma's
   ``SurrogatePopulation`` returns them);
4. the model's minimizer is injected into the next generation (``es.inject``), and so is the
   incumbent when another member produced it (pycma's injection: used as a direction from the
   mean, its length kept in check by the update).

So when the model ranks well (near-quadratic functions, at any conditioning) a generation
costs one or two evaluations; when it does not, the whole generation is evaluated and CMA-ES
runs as without it. After :data:`OFF_AFTER` such generations in a row the screening stops:
generations are evaluated whole in one loop generation (nothing injected), and every other one
the model is tested as in step 2 on the newest ``max(15, 0.75 λ)`` points, until it passes
(this saves the wall time of the sub-generations, not evaluations: a failing screen evaluates
every candidate anyway). A restart (a new pycma run) starts a new model, as in lq-CMA-ES.

The model learns from every evaluated point of the loop generation, other members' included
(they are near the incumbent, where the model matters).

Reference: Hansen, "A global surrogate assisted CMA-ES", GECCO 2019.

Example::

    import numpy as np
    from ev3evo.blackbox.host_cma import HostCMA
    from ev3evo.blackbox.portfolio import Portfolio
    from ev3evo.blackbox.generations import run, start
    from ev3evo.blackbox.screened import ScreenedCMA

    h = np.diag(10.0 ** np.arange(4))  # an ellipsoid, condition 1e3
    fun = lambda x: np.einsum("ni,ij,nj->n", x - 1.0, h, x - 1.0)
    member = ScreenedCMA("lq_cma", HostCMA(np.zeros(4), 1.0, seed=1), exact=True)
    progress, _ = run(Portfolio((member,), member.names), fun, start(np.zeros(4), 1111.0, 1),
                      budget=150, box=None, ftarget=1e-10)
    assert progress.best_f < 1e-10 and progress.nfev < 150
"""

from __future__ import annotations

import math

import numpy as np

from .host_cma import HostCMA
from .member import Outcome, Proposal
from .surrogate import LQSurrogate

#: Kendall's tau at or above which the model ranks the rest of a generation.
TAU_TRUST = 0.85
#: Generations in a row the model fails to rank before generations are evaluated whole.
OFF_AFTER = 3


class ScreenedCMA:
    """pycma's IPOP CMA-ES, its generations screened by a surrogate (see the module doc).

    Args:
      name: its part name.
      cma: the :class:`HostCMA` it drives.
      exact: candidates reach ``fun`` unchanged (no bounds to clip them into).
      tau: the trust threshold of Kendall's tau.
    """

    def __init__(self, name: str, cma: HostCMA, exact: bool, tau: float = TAU_TRUST):
        self.names = (name,)
        self.cma = cma
        self.exact = bool(exact)
        self.tau = float(tau)
        self.model = LQSurrogate(cma.x0.size, cma.size)
        self.inject = []  # points injected into the next generation
        self.x = None  # the generation being screened, (λ, D)
        self.f = self.done = None
        self.k = 0  # candidates of the generation to have evaluated after this ask
        self.failures = 0  # generations in a row that the model failed to rank
        self.ranked = False  # the current generation is screened (else evaluated whole)
        self.rows = np.empty(0, np.int64)  # the rows of x asked this loop generation
        self.taus = []  # the last tau of every screened generation

    def _next_generation(self) -> None:
        if self.inject:
            self.cma.es.inject(self.inject)
            self.inject = []
        self.x = self.cma.ask()
        lam = len(self.x)
        self.f, self.done = np.full(lam, np.nan), np.zeros(lam, bool)
        # After OFF_AFTER failures in a row, generations are evaluated whole (as plain CMA-ES,
        # at its wall time, nothing injected) and the model tested on every other one, until
        # it passes again (_finish).
        self.ranked = self.failures < OFF_AFTER and self.model.ready() and self.model.fit()
        self.k = 1 + int(0.02 * lam) if self.ranked else lam

    def ask(self, incumbent: np.ndarray, generation: int) -> Proposal:
        if self.x is None:
            self._next_generation()
        todo = np.flatnonzero(~self.done)
        n = min(self.k - int(self.done.sum()), todo.size)
        if n < todo.size and self.model.fit():  # the best ranked first
            todo = todo[np.argsort(self.model.predict(self.x[todo]), kind="stable")]
        self.rows = todo[:n]
        return Proposal(self.x[self.rows], np.zeros(n, np.int32))

    def tell(self, outcome: Outcome) -> None:
        self.model.add(outcome.x[outcome.evaluated], outcome.f[outcome.evaluated])
        if outcome.winner is not None and outcome.winner not in self.names:
            self.inject.append(outcome.best_x.copy())
        block = outcome.block
        if not outcome.evaluated[block].all():
            return  # the budget ended inside the generation: nothing to tell CMA-ES
        self.f[self.rows] = outcome.f[block]
        self.done[self.rows] = True
        if self.done.all():
            self._finish(self.f)
            return
        lam, evaluated = len(self.x), int(self.done.sum())
        tau = self.model.kendall(max(15, min(1.2 * evaluated, 0.75 * lam)))
        if tau >= self.tau:
            self.taus.append(tau)
            self._finish(self._surrogate_values())
        else:  # from half of the generation on, the rest at once
            self.k = lam if 2 * evaluated >= lam else evaluated + math.ceil(evaluated / 2)

    def _surrogate_values(self) -> np.ndarray:
        """The model's values of the generation, shifted to the best true value; a candidate
        whose evaluation was not finite stays worst (``inf``: :class:`HostCMA` ranks it last)."""
        m = self.model.predict(self.x)
        finite = self.f[np.isfinite(self.f)]
        values = m - np.min(m) + np.min(finite) if finite.size else m
        return np.where(self.done & ~np.isfinite(self.f), np.inf, values)

    def _finish(self, values: np.ndarray) -> None:
        if not self.done.all():
            self.failures = 0
        elif self.ranked or self.failures % 2:  # off trust, the model is tested every other one
            self.failures += 1
        elif self.model.kendall(max(15, 0.75 * len(self.x))) >= self.tau:
            self.failures = 0  # tested as lq-CMA-ES tests it, on the newest points
        else:
            self.failures += 1
        runs = self.cma.runs
        self.cma.tell(self.x, values, exact=self.exact)
        self.x = None
        if self.cma.runs != runs:  # a restart: a new model, for the new population size
            self.model = LQSurrogate(self.cma.x0.size, self.cma.size)
            self.inject, self.failures = [], 0
            return
        opt = self.model.optimum() if self.failures < OFF_AFTER else None
        if opt is not None:
            self.inject.insert(0, opt)
        self.inject = self.inject[: max(1, self.cma.size // 2)]
