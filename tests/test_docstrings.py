"""Every docstring example of the package runs as written, and every module has one.

Two forms are collected (``tests/_docstrings.py``) from the docstrings of every module,
class, function and method of ``ev3evo``: ``Example::`` blocks, run as a script in a fresh
namespace, and ``>>>`` sessions, run with :mod:`doctest` in the module's namespace (printed
values are checked).
"""

from __future__ import annotations

import pytest
from _docstrings import doctests, example_blocks, examples, modules, run_doctest

import ev3evo

SCRIPTS = example_blocks(ev3evo)
SESSIONS = doctests(ev3evo)


def test_example_extraction():
    doc = "Summary.\n\n    Example::\n\n        x = 1\n        assert x == 1\n\n    Returns: x\n"
    assert examples(doc) == ["x = 1\nassert x == 1\n"]
    assert examples("no example") == []
    assert len(SCRIPTS) > 40 and SESSIONS  # the collection finds the package's examples


BLOCKS = [pytest.param(code, id=where) for where, code in SCRIPTS]


@pytest.mark.parametrize("code", BLOCKS)
def test_docstring_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever an example writes stays out of the checkout
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


@pytest.mark.parametrize("test", SESSIONS, ids=[t.name for t in SESSIONS])
def test_doctest_passes(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_doctest(test)
    assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} failed"


def test_every_module_has_an_example():
    """Each module's own docstring shows its use (an ``Example::`` block or a ``>>>`` session)."""
    missing = [m.__name__ for m in modules(ev3evo)
               if not examples(m.__doc__) and ">>>" not in (m.__doc__ or "")
               and not m.__name__.endswith("__main__")]
    assert not missing, f"modules without an example in their docstring: {missing}"
