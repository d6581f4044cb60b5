"""Every docstring example of the package runs as written.

Two forms are collected from the docstrings of every module, class, function and method of
``ev3evo``: ``Example::`` blocks (run as a script) and ``>>>`` sessions (run with
:mod:`doctest` in the module's namespace, as ``python -m doctest`` would; printed values are
checked).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import ev3evo


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


def modules():
    """Every module of the package, imported."""
    found = [ev3evo]
    for info in pkgutil.walk_packages(ev3evo.__path__, "ev3evo."):
        found.append(importlib.import_module(info.name))
    return found


def documented(module):
    """``(qualified name, docstring)`` of the module and of what it defines."""
    yield module.__name__, module.__doc__
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj.__doc__
        elif inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj.__doc__
            for attr, member in vars(obj).items():
                if inspect.isfunction(member):
                    yield f"{module.__name__}.{name}.{attr}", member.__doc__


def _cases():
    scripts, sessions = [], []
    for module in modules():
        for where, doc in documented(module):
            for k, code in enumerate(examples(doc)):
                scripts.append(pytest.param(code, id=f"{where}[{k}]"))
            if doc and ">>>" in doc:
                sessions.append(pytest.param(module, where, doc, id=where))
    return scripts, sessions


SCRIPTS, SESSIONS = _cases()


def test_example_extraction():
    doc = "Summary.\n\n    Example::\n\n        x = 1\n        assert x == 1\n\n    Returns: x\n"
    assert examples(doc) == ["x = 1\nassert x == 1\n"]
    assert examples("no example") == []
    assert len(SCRIPTS) > 40 and SESSIONS  # the collection finds the package's examples


@pytest.mark.parametrize("code", SCRIPTS)
def test_docstring_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever an example writes stays out of the checkout
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


@pytest.mark.parametrize(("module", "where", "doc"), SESSIONS)
def test_docstring_session_runs(module, where, doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = doctest.DocTestParser()  # as doctest does: in the namespace of the module
    test = parser.get_doctest(doc, dict(vars(module)), where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{where}: {result.failed} of {result.attempted} examples failed"
