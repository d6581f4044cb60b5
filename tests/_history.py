"""Run histories compared across runs: without what depends on the clock."""

from __future__ import annotations

#: the fields of a step record measured on the wall clock (the step's and its stages' seconds)
TIMED_FIELDS = ("seconds", "stage_seconds")


def untimed(history: list[dict]) -> list[dict]:
    """The records of ``history`` without their :data:`TIMED_FIELDS`."""
    return [{k: v for k, v in r.items() if k not in TIMED_FIELDS} for r in history]
