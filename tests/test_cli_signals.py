"""The ``ev3evo`` command under SIGINT and SIGTERM, as a user or a scheduler sends them.

Real processes (``python -m ev3evo.cli distill``), real signals, at the moments that used to
go wrong: during the imports (a traceback), during the first XLA compilation (a native crash),
a second Ctrl-C (must stop at once), and SIGTERM mid-run (must save and resume). Every case
must end with one line on standard error and exit code 130 (SIGINT) or 143 (SIGTERM), never a
traceback or a native error message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from _cli import wait_for_line
from _history import untimed

from ev3evo.io import checkpoint as ck

pytestmark = pytest.mark.slow

# checkpoints by default (no checkpoint flag)
ARGS = ["distill", "--no-baselines", "--teacher-epochs", "1", "--student", "mlp:3",
        "--population", "8", "--seed", "1", "--rollout-steps", "50"]
NOT_CLEAN = ("Traceback", "Fatal Python error", "LLVM ERROR", "Segmentation fault",
             "Exception ignored", "free(): ", "core dumped", "Aborted")


def _env(cache: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    if cache is not None:  # share compiled programs; without one the step really compiles
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def _start(out, *extra, cache: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ev3evo.cli", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(cache))


def _lines(text: str) -> list[str]:
    """What a terminal shows at the end (a progress bar redraws its line with ``\\r``)."""
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


NOTICE = ("SIGINT received: stopping at the next safe point (send it again to stop at once)",
          "SIGTERM received: stopping at the next safe point (send it again to stop at once)")


def _messages(stderr: str) -> list[str]:
    """The lines of ``stderr`` other than the notice printed when no safe point came soon."""
    return [line for line in _lines(stderr) if not line.endswith(NOTICE)]


def _assert_clean(stderr: str) -> None:
    for bad in NOT_CLEAN:
        assert bad not in stderr, stderr[-3000:]


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(mask >> (signum - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.timeout(300)
def test_sigint_during_the_imports_is_one_line_and_exit_130(tmp_path):
    """The handlers are installed first thing (before jax is imported): the signal is sent as
    soon as they are, while the imports run, and is reported at the first safe point. (Python
    catches SIGINT from its start; SIGTERM is caught once ev3evo's handlers are in place.)"""
    out = tmp_path / "out"
    p = _start(out, "--steps", "5")
    deadline = time.monotonic() + 60
    while not _catches(p.pid, signal.SIGTERM):
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert _messages(err) == ["ev3evo distill: interrupted by SIGINT before it started"]
    assert not out.exists()  # it stopped before doing anything


@pytest.mark.timeout(600)
def test_sigint_during_the_first_compilation_saves_and_exits_130(tmp_path):
    """Ctrl-C while XLA compiles the EV3 step (no compilation cache: it really compiles): the
    compilation completes, the run stops at its first safe point with a checkpoint."""
    out, seen = tmp_path / "out", []
    p = _start(out, "--steps", "50")
    wait_for_line(p, "EV3 on ", seen)  # the step's compilation (its warm-up) starts now
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=600)
    err = "".join(seen) + err
    assert p.returncode == 130, err[-3000:]
    _assert_clean(err)
    compiled = float(re.search(r"EV3 step compiled in ([0-9.]+)s", err).group(1))
    assert compiled > 0.5, "the signal did not arrive during the compilation"
    last = _lines(err)[-1]
    match = re.fullmatch(r"ev3evo distill: interrupted by SIGINT at step (\d+); last "
                         r"checkpoint: step (\d+) in (.*)", last)
    assert match and match[1] == match[2] and match[3] == str(out / "checkpoints"), last
    assert ck.read_checkpoint(out / "checkpoints").step == int(match[1])


@pytest.mark.timeout(600)
def test_a_second_sigint_stops_at_once_even_inside_a_compilation(tmp_path):
    out, seen = tmp_path / "out", []
    p = _start(out, "--steps", "50")
    wait_for_line(p, "EV3 on ", seen)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    second = time.monotonic()
    _, err = p.communicate(timeout=120)
    waited = time.monotonic() - second
    err = "".join(seen) + err
    assert p.returncode == 130, err[-3000:]
    _assert_clean(err)
    assert "EV3 step compiled" not in err, "it waited for the compilation to end"
    assert waited < 10.0
    assert _lines(err)[-1] == ("ev3evo distill: SIGINT again: stopped at once (the checkpoints "
                               "already written stay usable)")


@pytest.mark.timeout(900)
def test_sigterm_saves_a_checkpoint_exits_143_and_the_resumed_run_matches(tmp_path):
    """SIGTERM (a scheduler, ``docker stop``) right after the first checkpoint; ``--resume``
    then ends with the history and test metrics of a run that was never stopped."""
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path / "jax-cache")
    a_dir, b_dir, steps = tmp_path / "a", tmp_path / "b", "12"
    a = _start(a_dir, "--steps", steps, "--quiet", "--checkpoint-every", "1", cache=cache)
    b = _start(b_dir, "--steps", steps, "--quiet", "--checkpoint-every", "1", cache=cache)
    deadline = time.monotonic() + 600
    while not ck.list_checkpoints(b_dir / "checkpoints"):
        assert b.poll() is None, b.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    b.send_signal(signal.SIGTERM)
    _, err = b.communicate(timeout=300)
    assert b.returncode == 143, err
    match = re.fullmatch(r"ev3evo distill: interrupted by SIGTERM at step (\d+); last "
                         r"checkpoint: step \1 in (.*)", "\n".join(_messages(err)))
    assert match and match[2] == str(b_dir / "checkpoints"), err
    stopped_at = int(match[1])
    assert ck.read_checkpoint(b_dir / "checkpoints").step == stopped_at < int(steps)
    _, err_a = a.communicate(timeout=600)
    assert a.returncode == 0, err_a
    resumed = _start(b_dir, "--steps", steps, "--quiet", "--resume", str(b_dir),
                     "--checkpoint-every", "1", cache=cache)
    _, err_b = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err_b
    final_a = ck.read_document(a_dir / "checkpoints")
    final_b = ck.read_document(b_dir / "checkpoints")
    assert final_a["step"] == final_b["step"] == int(steps)
    assert untimed(final_a["history"]) == untimed(final_b["history"])
    summary_a = json.load(open(a_dir / "summary.json"))["methods"]["ev3"]
    summary_b = json.load(open(b_dir / "summary.json"))["methods"]["ev3"]
    assert summary_a["test"] == summary_b["test"]
