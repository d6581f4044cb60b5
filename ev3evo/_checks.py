"""Validation helpers for the API boundary: clear messages instead of JAX tracebacks.

Example::

    from ev3evo._checks import check_positive_int
    assert check_positive_int(3, "steps") == 3
    try:
        check_positive_int(0, "steps")
    except ValueError as e:
        assert "steps must be a positive integer" in str(e)
"""

from __future__ import annotations

import math
import numbers


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_probability(value, name: str, *, open_interval: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}")
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def check_finite_nonnegative(value, name: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


#: seeds are 32-bit: ``jax.random.key`` keeps only the low 32 bits of a larger one (2**32
#: would give the same run as 0) and numpy's ``RandomState`` refuses anything larger
MAX_SEED = 2**32 - 1


def check_seed(value, name: str = "seed") -> int:
    """``value`` as a seed: an integer from 0 to :data:`MAX_SEED`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer from 0 to {MAX_SEED}, got {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer from 0 to {MAX_SEED}, got {value}")
    return int(value)


def parse_seed(text: str) -> int:
    """A seed from a command-line word (an ``argparse`` type: its errors name the flag)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, "
                                         f"got {text!r}") from None
    try:
        return check_seed(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, "
                                         f"got {text}") from None
