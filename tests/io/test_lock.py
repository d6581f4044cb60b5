"""One run per folder: the OS lock refuses a second holder, in another process or this one, and
is free again as soon as its holder dies (the dead holder's record is reported as stale)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ev3evo.io.atomic import UnsafePathError
from ev3evo.io.lock import RunLock, RunLockedError

_HOLD = """
import sys, time
from ev3evo.io.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_holder_is_refused_until_the_first_dies(tmp_path):
    path = tmp_path / ".lock"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"locked by process {holder.pid} ") as e:
            RunLock(path).acquire()
        assert e.value.holder["pid"] == holder.pid
        assert "only one run may use a folder at a time" in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert holder.returncode == -signal.SIGKILL
    with RunLock(path) as lock:  # the OS released the dead holder's lock
        assert lock.held and lock.stale["pid"] == holder.pid
    with RunLock(path) as lock:  # released cleanly: nothing stale
        assert lock.stale is None
    assert path.read_text() == ""


def test_a_second_holder_in_the_same_process_is_refused(tmp_path):
    path = tmp_path / "out" / ".lock"
    with RunLock(path) as first:
        with pytest.raises(RunLockedError, match=f"locked by process {os.getpid()} "):
            RunLock(path).acquire()
        with pytest.raises(RuntimeError, match="already held"):
            first.acquire()
    assert not first.held
    RunLock(path).acquire().release()


def test_a_planted_link_at_the_lock_file_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        RunLock(tmp_path / ".lock").acquire()
    assert victim.read_text() == "precious"
