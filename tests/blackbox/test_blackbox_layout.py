"""The blackbox subpackage's layout: importing any module leaves ``ev3evo.minimize`` the
function, and every docstring ``Example::`` of the subpackage runs as written."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest
from _docstrings import example_blocks, examples

import ev3evo.blackbox

# Imports every module of ev3evo (pkgutil.walk_packages), before or after the first use of
# ev3evo.minimize, then calls it: it must still be the function, not a module.
_IMPORT_ALL = """
import importlib, pkgutil, types
import ev3evo
first = ev3evo.minimize if {access_first} else None
names = [m.name for m in pkgutil.walk_packages(ev3evo.__path__, "ev3evo.")]
assert "ev3evo.blackbox.front" in names and "ev3evo.minimize" not in names, names
for name in names:
    importlib.import_module(name)
from ev3evo.blackbox import SOURCE_NAMES
import ev3evo.blackbox.front, ev3evo.blackbox.portfolio
assert isinstance(ev3evo.minimize, types.FunctionType), type(ev3evo.minimize)
assert first is None or first is ev3evo.minimize
assert ev3evo.minimize is ev3evo.blackbox.minimize
assert isinstance(ev3evo.MinimizeResult, type) and "cma" in SOURCE_NAMES
res = ev3evo.minimize(lambda x: float(x @ x), [1.0, 2.0], budget=30)
assert isinstance(res, ev3evo.MinimizeResult) and res.nfev == 30
try:
    import ev3evo.minimize
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("a module ev3evo.minimize exists")
print("imported", len(names))
"""


@pytest.mark.slow
@pytest.mark.parametrize("access_first", [False, True], ids=["import-first", "access-first"])
def test_importing_any_module_leaves_minimize_a_function(access_first):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    code = _IMPORT_ALL.format(access_first=access_first)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("imported")


def _all_examples():
    return [pytest.param(code, id=where) for where, code in example_blocks(ev3evo.blackbox)]


def test_example_extraction():
    doc = "Summary.\n\n    Example::\n\n        x = 1\n        assert x == 1\n\n    Returns: x\n"
    assert examples(doc) == ["x = 1\nassert x == 1\n"]
    assert examples("no example") == []


@pytest.mark.parametrize("code", _all_examples())
def test_docstring_example_runs(code):
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


def test_every_module_has_an_example():
    ids = {p.id.split("[")[0] for p in _all_examples()}
    for m in pkgutil.walk_packages(ev3evo.blackbox.__path__, "ev3evo.blackbox."):
        assert m.name in ids, f"{m.name} has no Example:: in its module docstring"
