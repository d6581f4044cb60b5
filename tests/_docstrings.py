"""Docstring examples of a package, collected for tests: ``Example::`` blocks and doctests.

A block is the indented text after a line ``Example::`` (or ``Example (...)::``); it runs as
written. A
doctest is any ``>>>`` example (checked against its printed output with :mod:`doctest`).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import textwrap


def examples(doc: str | None) -> list[str]:
    """The ``Example::`` blocks of a docstring, dedented."""
    lines = (doc or "").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        text = line.strip()
        if not (text.startswith("Example") and text.endswith("::")):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
    return blocks


def documented(module):
    """``(qualified name, docstring)`` of a module, its functions, classes and methods."""
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


def modules(package) -> list:
    """``package`` and every module under it, imported."""
    prefix = package.__name__ + "."
    return [package] + [importlib.import_module(m.name)
                        for m in pkgutil.walk_packages(package.__path__, prefix)]


def example_blocks(package) -> list[tuple[str, str]]:
    """``(where, code)`` of every ``Example::`` block of the package."""
    return [(f"{where}[{k}]", code) for module in modules(package)
            for where, doc in documented(module) for k, code in enumerate(examples(doc))]


def doctests(package) -> list[doctest.DocTest]:
    """Every non-empty doctest of the package's modules."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for module in modules(package) for t in finder.find(module) if t.examples]


def run_doctest(test: doctest.DocTest) -> doctest.TestResults:
    """Runs one doctest; returns its results (``failed`` counts the failing examples)."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: print(text, end=""))
    return runner.summarize(verbose=False)
