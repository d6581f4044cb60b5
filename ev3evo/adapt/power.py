"""How small a gain the gate can certify: its power, said before a run starts.

A paired test on ``n`` examples of a 0/1 score (accuracy, agreement) can only certify a gain it
can tell from chance. Two figures bound what a run can hope for:

* the **floor**: the smallest gain that is significant when *every* example on which the two
  models differ is in the candidate's favour, ``k / n`` for the smallest such ``k`` (about
  ``z²_{1-α} / n`` for large ``n``: 3 examples at ``α = 0.05``);
* the **typical** gain needed when the models differ on a fraction ``q`` of the examples (wins
  and losses mixed): ``z_{1-α} · sqrt(q / n)`` (the paired normal test's threshold with
  ``var(d) ≈ q``).

Example::

    from ev3evo.adapt.power import smallest_gain
    floor, typical = smallest_gain(180, alpha=0.05, disagreement=0.05)
    assert floor == 3 / 180 and 0.02 < typical < 0.03
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["smallest_gain"]


def _z(alpha: float) -> float:
    """The one-sided normal quantile ``z_{1-α}``."""
    return NormalDist().inv_cdf(1.0 - alpha)


def smallest_gain(n: int, alpha: float = 0.05, disagreement: float | None = None):
    """``(floor, typical)`` gains a paired test on ``n`` examples can certify at level alpha.

    Args:
      n: examples of the certification test (the held-out half, or a fresh batch).
      alpha: the test's level.
      disagreement: the fraction of examples on which the two models are expected to differ
        (``typical`` is ``None`` without it).
    """
    if n < 2:
        return math.inf, math.inf if disagreement is not None else None
    z = _z(alpha)
    for k in range(1, n + 1):  # k wins, no losses: the paired normal test's statistic
        mean = k / n
        var = (k * (1 - mean) ** 2 + (n - k) * mean**2) / (n - 1)
        if var == 0 or mean / math.sqrt(var / n) >= z:
            floor = k / n
            break
    typical = None if disagreement is None else z * math.sqrt(disagreement / n)
    return floor, typical
