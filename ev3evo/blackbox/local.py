"""Local search around the incumbent: mutations with a 1/5th-success-rule step, sharing a pool.

* :class:`LocalSearch`: mutations of the incumbent, ``x + σ · noise`` (Gaussian or Cauchy),
  ``σ`` adapted by the 1/5th success rule (Rechenberg 1973; Kern et al. 2004, "Learning
  probability distributions in continuous evolutionary algorithms", the (1+1)-ES rule): the
  step grows by ``exp(1/3)`` when one of its candidates became the new incumbent and shrinks by
  ``exp(-1/12)`` otherwise, so it is stationary at a 20 % success rate. A generation in which
  it had no slot does not count as a failure.
* :class:`LocalPool`: the ``"gaussian"`` and ``"cauchy"`` members of :func:`ev3evo.minimize`,
  one :class:`LocalSearch` each, sharing a pool of slots. The pool is paid by its *efficiency*:
  the decrease of the best value it produced per evaluation, over that of the rest of the
  portfolio (both exponential moving averages, factor 0.9 per generation). It gets
  ``min(c, round((e - 1) n))`` slots, ``e`` the efficiency, ``n`` the evaluations the rest spent in
  the last generation and ``c = max(2, λ0 / 2)`` the capacity of one search (``λ0`` pycma's
  default population), and at least one probe slot every eighth generation. So it has no
  slots while CMA-ES (or its surrogate) makes the faster progress per evaluation, many small
  wins included, and as many evaluations as the rest once it is twice as efficient. Alone in the
  portfolio (no CMA-ES, no JAX member; the quadratic model aside) it always fills every slot.
  The pool's slots go to the searches by :func:`ev3evo.adapt.allocation.counts_from_credit`
  (no minimum, prior 0.1) of their credit, an EMA (factor 0.8) of their wins, updated in the
  generations in which the pool had slots.

Both run on the host in numpy: a generation's arithmetic is microseconds.

Example::

    import numpy as np
    from ev3evo.blackbox.local import LocalSearch
    src = LocalSearch(0.5, "cauchy", seed=0)
    x = src.ask(4, np.zeros(3))
    src.tell(tried=True, won=False)
    assert x.shape == (4, 3) and src.sigma < 0.5
"""

from __future__ import annotations

import math

import numpy as np

from ..adapt.allocation import counts_from_credit
from .member import Outcome, Proposal

#: The kinds of local search (also their part names in the portfolio).
KINDS = ("gaussian", "cauchy")


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
        if kind not in KINDS:
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


class LocalPool:
    """The local searches of the portfolio, sharing a pool of slots (see the module doc).

    Args:
      kinds: the searches, a non-empty subset of :data:`KINDS` in order.
      sigma: their initial step size.
      seed: the seed of their generators.
      capacity: the most slots one search gets in a generation.
      alone: no other member competes for the budget: every slot is filled every generation.
      probe: a pool that does not win still gets one slot every ``probe``-th generation.
    """

    def __init__(self, kinds: tuple[str, ...], sigma: float, seed: int, capacity: int,
                 alone: bool, probe: int = 8):  # fmt: skip
        self.names = tuple(kinds)
        self.searches = tuple(LocalSearch(sigma, k, seed) for k in self.names)
        self.capacities = np.full(len(self.names), int(capacity), np.int32)
        self.credit = np.zeros(len(self.names), np.float32)
        # EMAs (factor 0.9 per generation) of [pool, rest of the portfolio]: the decrease of
        # the best value each produced, and the evaluations each spent.
        self.gain = np.zeros(2)
        self.spent = np.zeros(2)
        self.others = 0  # the rest's evaluations in the last generation
        self.best = math.inf
        self.alone = bool(alone)
        self.probe = int(probe)
        self.counts = np.zeros(len(self.names), np.int32)  # the last ask's slots per search

    def slots(self, generation: int) -> int:
        """How many slots the pool fills in ``generation``."""
        if self.alone:
            return int(self.capacities.sum())
        # Slots for the part of its efficiency above the rest's: none while it is no better.
        share = self.others * max(0.0, self.efficiency() - 1.0)
        n = int(self.capacities[0]) if share >= self.capacities[0] else round(share)
        return max(n, 1 if generation % self.probe == self.probe - 1 else 0)

    def efficiency(self) -> float:
        """The pool's decrease of the best value per evaluation, over the rest's (0 before the
        pool gained anything; ``inf`` when only the pool gains)."""
        if self.gain[0] <= 0:
            return 0.0
        rest = self.gain[1] / max(self.spent[1], 1e-12)
        return math.inf if rest <= 0 else (self.gain[0] / max(self.spent[0], 1e-12)) / rest

    def split(self, n: int) -> np.ndarray:
        """Slots of each search out of ``n``, by credit (``counts_from_credit``)."""
        n = min(int(n), int(self.capacities.sum()))
        if n <= 0:
            return np.zeros(len(self.names), np.int32)
        return counts_from_credit(self.credit, self.capacities, n, 0, 0.1)

    def ask(self, incumbent: np.ndarray, generation: int) -> Proposal | None:
        self.counts = self.split(self.slots(generation))
        blocks = [(i, s.ask(int(c), incumbent))
                  for i, (s, c) in enumerate(zip(self.searches, self.counts)) if c]  # fmt: skip
        if not blocks:
            return None
        x = np.concatenate([b for _, b in blocks])
        part = np.concatenate([np.full(len(b), i, np.int32) for i, b in blocks])
        return Proposal(x, part)

    def tell(self, outcome: Outcome) -> None:
        won = outcome.winner in self.names
        gain = self.best - outcome.best_f if math.isfinite(self.best) else 0.0
        self.best = min(self.best, outcome.best_f)
        mine = int(outcome.evaluated[outcome.block].sum())
        self.others = int(outcome.evaluated.sum()) - mine
        self.gain = 0.9 * self.gain + np.array([gain * won, gain * (not won)])
        self.spent = 0.9 * self.spent + np.array([mine, self.others])
        for name, search, c in zip(self.names, self.searches, self.counts):
            search.tell(tried=bool(c), won=outcome.winner == name)
        if self.counts.any():  # credit moves only in generations where the pool had slots
            hit = np.array([outcome.winner == n for n in self.names], np.float32)
            self.credit = np.float32(0.8) * self.credit + np.float32(0.2) * hit
