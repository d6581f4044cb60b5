"""The documentation runs: every ```python block of README.md and every script in examples/.

Each block or script runs as written in a fresh interpreter (a subprocess, in a temporary
directory, so whatever it writes stays out of the checkout). New blocks and new examples are
picked up automatically. A README block right after a ``<!-- slow -->`` line is in the slow
tier (``make test-all``): the examples that distill a user's own convolutional model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 600  # generous: a script compiles its EV3 step (seconds to a minute on a busy CPU)

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_SLOW = "<!-- slow -->\n"


def fenced_blocks(markdown: str) -> list[tuple[str, bool]]:
    """``(code, slow)`` for each fenced ```python block of a markdown text, in order; ``slow``
    when the block comes right after a ``<!-- slow -->`` line."""
    return [(m.group(1), markdown[: m.start()].endswith(_SLOW)) for m in _FENCE.finditer(markdown)]


def python_blocks(markdown: str) -> list[str]:
    """The contents of the fenced ```python blocks of a markdown text, in order."""
    return [code for code, _ in fenced_blocks(markdown)]


def _readme_blocks() -> list:
    """The README's blocks as test parameters, those after a ``<!-- slow -->`` line marked slow."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    return [pytest.param(code, id=f"block{i}", marks=[pytest.mark.slow] if slow else [])
            for i, (code, slow) in enumerate(fenced_blocks(text))]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )


def test_block_extraction():
    text = (
        "# Title\n\n```bash\nmake test\n```\n\n```python\nx = 1\n```\n\ntext\n\n"
        "```python\nimport math\nprint(math.pi)\n```\n\n```\nplain\n```\n"
    )
    assert python_blocks(text) == ["x = 1\n", "import math\nprint(math.pi)\n"]
    assert python_blocks("no code here") == []
    assert fenced_blocks("<!-- slow -->\n```python\nx = 1\n```\n") == [("x = 1\n", True)]


@pytest.mark.parametrize("code", _readme_blocks())
def test_readme_python_block_runs(code, tmp_path):
    done = _run(["-c", code], tmp_path)
    assert done.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{done.stderr}"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_to_completion(script, tmp_path):
    done = _run([str(script)], tmp_path)
    assert done.returncode == 0, (
        f"{script.name} exited with {done.returncode}\n--- stdout ---\n{done.stdout[-3000:]}"
        f"\n--- stderr ---\n{done.stderr[-5000:]}"
    )


def test_every_module_is_in_the_layout_page():
    layout = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ev3evo").rglob("*.py"))
    missing = [m for m in modules if f"`{m}`" not in layout]
    assert not missing, f"docs/layout.md does not list {missing}"
    listed = re.findall(r"`(ev3evo/[\w/]+\.py)`", layout)
    gone = [m for m in listed if not (ROOT / m).exists()]
    assert not gone, f"docs/layout.md lists modules that do not exist: {gone}"
