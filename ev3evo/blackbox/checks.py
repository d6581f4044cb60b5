"""Checks of :func:`ev3evo.minimize`'s arguments: one clear error naming the problem.

Example::

    import numpy as np
    from ev3evo.blackbox.checks import check_bounds, check_sigma0
    lo, hi = check_bounds((0.0, [1.0, 2.0]), 2)
    assert hi.tolist() == [1.0, 2.0] and check_sigma0(None, np.zeros(2), (lo, hi)) == 0.6
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def check_x0(x0) -> np.ndarray:
    """``x0`` as a non-empty, finite 1-D float64 vector."""
    try:
        x = np.asarray(x0, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"x0 must be a 1-D array of floats, got {type(x0).__name__}") from None
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 has non-finite entries")
    return x


def check_budget(budget) -> int:
    """``budget`` as a positive ``int``."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise TypeError(f"budget must be a positive integer, got {budget!r}")
    if budget <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget}")
    return int(budget)


def check_bounds(bounds, d: int):
    """``(lower, upper)`` as two ``(d,)`` float64 vectors, or ``None``."""
    if bounds is None:
        return None
    try:
        lo, hi = bounds
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (d,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (d,)).copy()
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be (lower, upper), each a float or a length-{d} vector; got {bounds!r}"
        ) from None
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds have lower > upper at index {i}: {lo[i]} > {hi[i]}")
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("bounds contain NaN")
    return lo, hi


def check_sigma0(sigma0, x0: np.ndarray, box) -> float:
    """The initial step size: ``sigma0`` checked, or the default.

    The default is 0.3 × the widest side of the box with bounds, else ``max(1, 0.3 · max|x0|)``
    (1 when that is not a positive finite number, e.g. for an unbounded box).
    """
    if sigma0 is None:
        sigma0 = (
            0.3 * float(np.max(box[1] - box[0]))
            if box is not None
            else max(1.0, 0.3 * float(np.max(np.abs(x0))))
        )
        return sigma0 if math.isfinite(sigma0) and sigma0 > 0 else 1.0
    if not (isinstance(sigma0, numbers.Real) and math.isfinite(sigma0) and sigma0 > 0):
        raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
    return sigma0


def scalar(value, where: str) -> float:
    """``value`` (what ``fun`` returned) as a float; a clear error for anything else."""
    arr = np.asarray(value)
    if arr.shape != () and arr.size != 1:
        raise ValueError(f"fun must return a scalar; it returned shape {arr.shape} {where}")
    try:
        return float(arr.reshape(()))
    except (TypeError, ValueError):
        raise TypeError(f"fun must return a real number; it returned {value!r} {where}") from None
