"""The configuration fingerprint of a checkpoint, and the difference between two of them.

A checkpoint records a summary of what wrote it: the structure of the state (every leaf's path,
shape and dtype), the engine's configuration (``EV3.describe()``: sources, metrics, objectives,
constraints, gate and allocation settings) and the user's ``metadata["config"]``. The
fingerprint is a short SHA-256 of that summary. Restoring into another configuration is
refused with a message that names the first differences (:func:`describe_difference`).

Example::

    import numpy as np
    from ev3evo.io.fingerprint import describe_difference, fingerprint, summarize

    a = {"w": np.zeros((4, 2), np.float32)}
    b = {"w": np.zeros((4, 3), np.float32)}
    assert fingerprint(a) != fingerprint(b)
    print(describe_difference(summarize(a), summarize(b)))
    # the model/state structure differs: leaf ['w'] is float32[4, 2] in the checkpoint but ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import jax
import numpy as np

from .format import CheckpointError, is_key


def leaf_spec(x) -> list:
    """``[shape, dtype name]`` of an array or abstract value (typed keys: e.g. ``key<fry>``)."""
    if is_key(x):
        return [list(np.shape(x)), str(x.dtype)]
    return [list(np.shape(x)), np.dtype(x.dtype).name]


def tree_summary(state) -> list:
    """``[path, shape, dtype]`` of every leaf, in pytree order.

    Raises:
      CheckpointError: a leaf is not an array (a Python object belongs behind a source's
        ``dump``/``load`` hooks).
    """
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise CheckpointError(
                f"cannot checkpoint state leaf {name} of type {type(x).__name__}: only arrays "
                "are saved; a source that keeps Python objects in its state needs dump/load hooks"
            )
        out.append([name, *leaf_spec(x)])
    return out


def summarize(state, engine=None, config: Mapping | None = None) -> dict:
    """The configuration summary that :func:`fingerprint` hashes (JSON-ready)."""
    return {
        "tree": tree_summary(state),
        "engine": {} if engine is None else engine.describe(),
        "config": json.loads(json.dumps(config, sort_keys=True)) if config is not None else None,
    }


def hash_summary(summary: dict) -> str:
    """The fingerprint (16 hex digits) of a summary."""
    text = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(state, engine=None, config: Mapping | None = None) -> str:
    """A short hash of the state's structure (paths, shapes, dtypes) and the configuration.

    ``state`` may be real arrays or ``jax.ShapeDtypeStruct`` s (``jax.eval_shape``).
    """
    return hash_summary(summarize(state, engine, config))


def _tree_difference(saved: list, current: list) -> str:
    a = {row[0]: row[1:] for row in saved}
    b = {row[0]: row[1:] for row in current}
    lines = []
    for name in [n for n in b if n in a and a[n] != b[n]][:3]:
        (sa, da), (sb, db) = a[name], b[name]
        lines.append(f"leaf {name} is {da}{sa} in the checkpoint but {db}{sb} here")
    missing = [n for n in a if n not in b][:3]
    extra = [n for n in b if n not in a][:3]
    if missing:
        lines.append(f"leaves only in the checkpoint: {', '.join(missing)}")
    if extra:
        lines.append(f"leaves only here: {', '.join(extra)}")
    return "the model/state structure differs: " + "; ".join(lines or ["leaf order differs"])


def describe_difference(saved: dict, current: dict) -> str:
    """The first differences between a checkpoint's summary and the current one, in words."""
    if saved.get("tree") != current.get("tree"):
        return _tree_difference(saved.get("tree", []), current.get("tree", []))
    labels = {"engine": "engine configuration", "config": "run configuration (metadata['config'])"}
    for part, label in labels.items():
        sa, sb = saved.get(part), current.get(part)
        if sa != sb:
            if isinstance(sa, dict) and isinstance(sb, dict):
                keys = [k for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
                details = "; ".join(
                    f"{k}: {sa.get(k)!r} in the checkpoint, {sb.get(k)!r} here" for k in keys[:3]
                )
                return f"the {label} differs ({details})"
            return f"the {label} differs: {sa!r} in the checkpoint, {sb!r} here"
    return "the configuration differs"
