"""The blackbox subpackage's layout: importing any module leaves ``ev3evo.minimize`` the
function."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("access_first", [False, True], ids=["import-first", "access-first"])
def test_importing_any_module_leaves_minimize_a_function(access_first):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    code = _IMPORT_ALL.format(access_first=access_first)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("imported")
