"""The distillation subpackage's layout: importing any module leaves ``ev3evo.distill`` the
function, and every docstring example of ``ev3evo.distillation`` runs as written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Imports every module of ev3evo (pkgutil.walk_packages), before or after the first use of
# ev3evo.distill: it must stay the front-door function, never become a module.
_IMPORT_ALL = """
import importlib, pkgutil, types
import ev3evo
first = ev3evo.distill if {access_first} else None
names = [m.name for m in pkgutil.walk_packages(ev3evo.__path__, "ev3evo.")]
assert "ev3evo.distillation.pipeline" in names, names
assert not any(n == "ev3evo.distill" or n.startswith("ev3evo.distill.") for n in names), names
for name in names:
    importlib.import_module(name)
from ev3evo.distillation import data, models, pipeline
import ev3evo.distillation.command
assert isinstance(ev3evo.distill, types.FunctionType), type(ev3evo.distill)
assert first is None or first is ev3evo.distill
assert ev3evo.distill is pipeline.distill is ev3evo.distillation.distill
assert ev3evo.DistillConfig is ev3evo.distillation.DistillConfig
assert isinstance(ev3evo.minimize, types.FunctionType), type(ev3evo.minimize)
try:
    import ev3evo.distill
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("a module ev3evo.distill exists")
print("imported", len(names))
"""


@pytest.mark.parametrize("access_first", [False, True], ids=["import-first", "access-first"])
def test_importing_any_module_leaves_distill_a_function(access_first):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    code = _IMPORT_ALL.format(access_first=access_first)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("imported")
