"""Storage faults under the ``ev3evo`` command: one line naming the path and the cause, exit 2,
and everything already written kept (the last good checkpoint named, and usable).

Faults are real: a read-only file system (a tmpfs mounted read-only, where this machine lets
the tests mount; a folder without write permission otherwise), a file where a folder is
needed, a path through a file, and a disk that fills up during a run (a small tmpfs filled by
a second file while the run writes its checkpoints).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time

import pytest

from ev3evo.cli import describe
from ev3evo.cli import main as cli_main
from ev3evo.io import UnsafePathError
from ev3evo.io import checkpoint as ck
from ev3evo.run import RunError, add_note

ARGS = ["distill", "--no-baselines", "--quiet", "--teacher-epochs", "1", "--student",
        "mlp:3", "--population", "8", "--steps", "3", "--rollout-steps", "50"]


def _mount_tmpfs(where, options: str) -> bool:
    os.makedirs(where, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(name, options)`` mounts a tmpfs under ``tmp_path`` (skips where it cannot)."""
    mounted = []

    def mount(name: str, options: str):
        where = tmp_path / name
        if not _mount_tmpfs(where, options):
            pytest.skip("mounting a tmpfs needs root (and CAP_SYS_ADMIN)")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def _one_line(capsys, *argv) -> tuple[int, str]:
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ev3evo distill: error: "), err
    return code, err.strip()[len("ev3evo distill: error: "):]


def test_a_file_in_the_way_of_the_output_folder(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("someone's notes")
    code, line = _one_line(capsys, *ARGS, "--out", str(blocker))
    assert code == 2
    assert line == f"{blocker}: a file is in the way (it exists and is not a folder)"
    code, line = _one_line(capsys, *ARGS, "--out", str(blocker / "run1"))
    assert code == 2 and line == f"{blocker / 'run1'}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "someone's notes"


def test_a_read_only_output_folder(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system it is
        parent = tmp_path / "ro"
        if not _mount_tmpfs(parent, "ro,size=1m"):
            pytest.skip("as root, a read-only folder needs a read-only mount")
        cause = "read-only file system"
    else:
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o555)
        cause = "permission denied"
    try:
        code, line = _one_line(capsys, *ARGS, "--out", str(parent / "out"))
        assert code == 2 and line == f"{parent / 'out'}: {cause}"
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(parent)], check=False)
        else:
            parent.chmod(0o755)


def test_the_real_command_reports_a_read_only_file_system_in_one_line(tmpfs):
    ro = tmpfs("ro", "ro,size=1m")
    done = subprocess.run([sys.executable, "-m", "ev3evo.cli", *ARGS, "--out", str(ro / "out")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 2
    assert done.stderr == f"ev3evo distill: error: {ro / 'out'}: read-only file system\n"


def test_errors_become_one_line_with_what_was_kept():
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints/ckpt-4.ev3")
    add_note(full, "the final checkpoint could not be written; the last one written is step 3 "
                   "in /runs/a/checkpoints")
    assert describe(full) == (
        "/runs/a/checkpoints/ckpt-4.ev3: no space left on device (disk full); the final "
        "checkpoint could not be written; the last one written is step 3 in /runs/a/checkpoints")
    link = UnsafePathError(errno.ELOOP, "is a symbolic link; refusing to write through it",
                           "/runs/a/history.jsonl")
    assert describe(link) == "/runs/a/history.jsonl: is a symbolic link; refusing to write through it"
    gave_up = RunError("source 'ng' failed on each of the last 5 steps")
    add_note(gave_up, "last checkpoint: step 5 in /runs/a/checkpoints")
    assert describe(gave_up) == ("source 'ng' failed on each of the last 5 steps; last "
                                 "checkpoint: step 5 in /runs/a/checkpoints")
    assert describe(OSError(errno.EIO, "Input/output error")) == (
        "input/output error (a failing disk or an unreachable network file system)")


def _fill(folder) -> None:
    """Writes a file into ``folder`` until its file system is full."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        for size in (4096, 512, 1):  # the last pages too
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_disk_that_fills_up_mid_run_keeps_the_last_checkpoint_and_resumes(tmpfs):
    disk = tmpfs("disk", "size=16m")
    out = disk / "out"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "ev3evo.cli", "distill", "--no-baselines", "--quiet",
            "--teacher-epochs", "1", "--student", "mlp:3", "--population", "8",
            "--steps", "12", "--rollout-steps", "50", "--checkpoint-every", "1",
            "--out", str(out)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 600
    while not ck.list_checkpoints(out / "checkpoints"):
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _fill(disk)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    match = re.fullmatch(rf"ev3evo distill: error: ({re.escape(str(out))}/\S+): no space left "
                         r"on device \(disk full\); (.*)", err.strip())
    assert match, err
    kept = ck.read_checkpoint(out / "checkpoints")  # intact (a damaged one would warn: error)
    assert kept is not None and 1 <= kept.step < 12
    assert match[2].endswith(f"step {kept.step} in {out / 'checkpoints'}"), err
    assert not [n for n in os.listdir(out / "checkpoints") if ".tmp-" in n]  # nothing half-done
    os.remove(disk / "filler")  # space is back: the run goes on from its last checkpoint
    done = subprocess.run([*args, "--resume", str(out)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    final = ck.read_checkpoint(out / "checkpoints")
    assert final.step == 12 and [r["step"] for r in final.history] == list(range(0, 13))
