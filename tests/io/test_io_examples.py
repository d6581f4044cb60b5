"""Every docstring ``Example::`` of the io package, the run driver, the callbacks and the
nevergrad source runs as written (in a temporary working directory)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import textwrap

import pytest

import ev3evo.io

MODULES = ["ev3evo.run", "ev3evo.callbacks", "ev3evo.explore.nevergrad", "ev3evo.io"] + [
    m.name for m in pkgutil.iter_modules(ev3evo.io.__path__, "ev3evo.io.")
]


def examples(doc: str | None) -> list[str]:
    """The ``Example::`` blocks of a docstring, dedented."""
    lines = (doc or "").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not line.rstrip().endswith("Example::"):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
    return blocks


def _documented(module):
    yield module.__name__, module.__doc__
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj.__doc__
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if inspect.isfunction(member):
                    yield f"{module.__name__}.{name}.{attr}", member.__doc__


def _all_examples():
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for where, doc in _documented(module):
            found += [pytest.param(code, id=f"{where}[{k}]") for k, code in enumerate(examples(doc))]
    return found


def test_the_modules_have_examples():
    ids = {p.id.split("[")[0] for p in _all_examples()}
    missing = [m for m in MODULES if m not in ids and m not in ("ev3evo.callbacks", "ev3evo.io")]
    assert not missing, f"no Example:: in the module docstring of {missing}"


@pytest.mark.parametrize("code", _all_examples())
def test_docstring_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})
