"""Strict JSON for files others read: non-finite numbers become ``null``, never ``NaN`` tokens.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (JavaScript,
``jq``, most languages' standard libraries) reject. :func:`dumps` replaces every non-finite
float (Python or numpy) by ``None`` first and then refuses any that is left
(``allow_nan=False``).

Example::

    from ev3evo.io.strict_json import dumps
    assert dumps({"loss": float("nan"), "steps": [1, float("inf")]}) == '{"loss": null, "steps": [1, null]}'
"""

from __future__ import annotations

import json
import math

import numpy as np


def finite(obj):
    """``obj`` with every non-finite float replaced by ``None`` (dicts, lists, tuples walked)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """``json.dumps(finite(obj), allow_nan=False, **kwargs)``."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
