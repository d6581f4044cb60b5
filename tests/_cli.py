"""Helpers for the tests that run the command line in a subprocess."""

from __future__ import annotations

import subprocess


def wait_for_line(p: subprocess.Popen, marker: str, seen: list[str]) -> None:
    """Reads ``p``'s stderr into ``seen`` until a line holds ``marker``; fails if it ends first."""
    for line in p.stderr:
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"the run ended (exit {p.wait()}) before {marker!r}: {''.join(seen)}")
