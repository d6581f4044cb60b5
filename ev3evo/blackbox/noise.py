"""The noise-aware incumbent of :func:`ev3evo.minimize` (``noise=True``): re-evaluate, then test.

On a noisy ``f`` the lowest value of a generation is mostly the luckiest draw, and an incumbent
chosen by one value drifts with the noise. With ``noise=True`` the incumbent changes only after
a paired comparison:

* the best candidate ``c`` of a generation *challenges* the incumbent ``x*`` when its one value
  is below the incumbent's mean;
* both are re-evaluated, alternately, until each has ``pairs`` values (``c``'s first value
  counts; the incumbent gets fresh ones): the pairs ``(f(c)_i, f(x*)_i)`` are evaluations made
  side by side, in the same stretch of the run;
* challenges spend at most a share (10 %) of the evaluations so far: one that would exceed it
  is not made (the search goes on; the incumbent waits for the next challenger);
* ``c`` replaces ``x*`` only when the paired one-sided test of
  ``E[f(x*) - f(c)] > 0`` rejects at level ``alpha``
  (:func:`ev3evo.assess.stats.paired_normal` on utilities ``-f``, higher is better); the
  incumbent then carries ``c``'s values, and its reported value is their mean.

Every re-evaluation is an evaluation counted in the budget; a challenge that the remaining
budget cannot pay for is not made. The returned point is the last incumbent: one that
won every test it took, never a single lucky value.

Example::

    import numpy as np
    from ev3evo.blackbox.noise import NoisyIncumbent
    rng = np.random.default_rng(0)
    f = lambda x: np.sum(x**2, axis=1) + 0.01 * rng.standard_normal(len(x))
    judge = NoisyIncumbent(np.ones(2), np.array([2.0]), pairs=4, alpha=0.05, share=0.5)
    won, spent = judge.challenge(np.zeros(2), 0.0, f, remaining=100, nfev=20)
    assert won and spent == 7 and np.allclose(judge.x, 0.0) and abs(judge.f) < 0.05
    won, spent = judge.challenge(np.full(2, 0.5), -1.0, f, remaining=100, nfev=40)  # lucky
    assert not won and np.allclose(judge.x, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Values of each arm in a challenge.
PAIRS = 4
#: The level of the paired test a challenger must pass.
ALPHA = 0.05
#: The largest share of the evaluations so far that challenges may spend.
SHARE = 0.1


class NoisyIncumbent:
    """The incumbent of a noisy run and its values (see the module doc).

    Args:
      x: the first incumbent, ``(D,)``.
      values: its values so far (at least one).
      pairs: values of each arm in a challenge.
      alpha: the level of the paired test.
      share: the largest share of the evaluations so far that challenges may spend.
    """

    def __init__(self, x: np.ndarray, values: np.ndarray, pairs: int = PAIRS,
                 alpha: float = ALPHA, share: float = SHARE):  # fmt: skip
        self.x = np.array(x, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64).reshape(-1)
        self.pairs = int(pairs)
        self.alpha = float(alpha)
        self.share = float(share)
        self.tests = self.wins = 0
        self.spent = 0  # evaluations spent on challenges

    @property
    def f(self) -> float:
        """The incumbent's estimated value: the mean of its finite values (``inf`` if none)."""
        ok = self.values[np.isfinite(self.values)]
        return float(np.mean(ok)) if ok.size else float("inf")

    def cost(self) -> int:
        """Evaluations one challenge costs."""
        return 2 * self.pairs - 1

    def challenge(self, x: np.ndarray, value: float, evaluate: Callable, remaining: int,
                  nfev: int):  # fmt: skip
        """Tests candidate ``x`` (first value ``value``) against the incumbent.

        Args:
          x: the challenger, ``(D,)``.
          value: its first value.
          evaluate: ``(n, D) -> (n,)`` values of ``fun``.
          remaining: evaluations left in the budget.
          nfev: evaluations so far (the share of challenges is counted against them).

        Returns:
          ``(won, evaluations spent)``; ``(False, 0)`` when the challenge is not made (the
          value is not below the incumbent's mean, or the budget or the share cannot pay for
          it).
        """
        cost = self.cost()
        if not (np.isfinite(value) and value < self.f) or remaining < cost:
            return False, 0
        if self.spent + cost > self.share * (nfev + cost):
            return False, 0
        n = self.pairs
        # Alternate the arms (incumbent, challenger, incumbent, ...): side-by-side pairs.
        rows = np.stack([self.x, x] * (n - 1) + [self.x])
        values = evaluate(rows)
        self.spent += len(rows)
        mine = values[0::2]  # n fresh values of the incumbent
        theirs = np.concatenate([[value], values[1::2]])  # the challenger's n values
        self.tests += 1
        if not (np.all(np.isfinite(mine)) and np.all(np.isfinite(theirs))):
            return False, len(rows)
        if self._significant(theirs, mine):
            self.x, self.values = np.array(x, dtype=np.float64), theirs
            self.wins += 1
            return True, len(rows)
        self.values = np.concatenate([self.values, mine])[-8 * n :]
        return False, len(rows)

    def _significant(self, challenger: np.ndarray, incumbent: np.ndarray) -> bool:
        """The paired test: the challenger's utility ``-f`` exceeds the incumbent's at ``alpha``."""
        import jax.numpy as jnp

        from ..assess.stats import paired_normal

        center = float(np.mean(incumbent))  # differences keep their scale in float32
        comparison = paired_normal(jnp.asarray(-(challenger - center))[None],
                                   jnp.asarray(-(incumbent - center)), self.alpha)  # fmt: skip
        return bool(comparison.pvalue[0] < self.alpha)
