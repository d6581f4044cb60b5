"""Safe writes: nothing is written through a planted symbolic link, temporary files never stay,
and the history log is strict JSON written the same way."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

import ev3evo
from ev3evo.io import atomic
from ev3evo.io import checkpoint as ck
from ev3evo.io.atomic import UnsafePathError, atomic_write, atomic_writer, open_append


@pytest.fixture
def victim(tmp_path):
    """A file outside the output folder that a planted link points at."""
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_a_link_at_the_final_name_is_replaced_not_followed(out, victim):
    (out / "summary.json").symlink_to(victim)
    atomic_write(out / "summary.json", b"{}", root=out)
    assert victim.read_text() == "precious"
    assert not (out / "summary.json").is_symlink() and (out / "summary.json").read_bytes() == b"{}"
    assert sorted(os.listdir(out)) == ["summary.json"]


def test_a_link_at_the_temporary_name_is_not_followed(out, victim, monkeypatch):
    """A link planted at the temporary name the writer draws first: that name is skipped."""
    tokens = iter(["fixed", "second"])
    monkeypatch.setattr(atomic, "_token", lambda: next(tokens))
    planted = out / ".summary.json.tmp-fixed"
    planted.symlink_to(victim)
    atomic_write(out / "summary.json", b"new", root=out)
    assert victim.read_text() == "precious"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)  # left as it was
    assert (out / "summary.json").read_bytes() == b"new"
    assert sorted(os.listdir(out)) == [".summary.json.tmp-fixed", "summary.json"]


def test_symlinked_sub_folders_below_the_root_are_refused(out, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        atomic_write(out / "checkpoints" / "ckpt.ev3", b"x", root=out)
    with pytest.raises(UnsafePathError):
        ck.save_checkpoint(out / "checkpoints", {"step": np.int32(1)}, root=out)
    with pytest.raises(UnsafePathError):
        ev3evo.io.Checkpointer(out / "checkpoints", root=out)
    assert os.listdir(elsewhere) == []
    # the root itself is trusted as given (e.g. /tmp being a link on some systems)
    atomic_write(out / "checkpoints" / "ok.txt", b"x", root=out / "checkpoints")
    assert os.listdir(elsewhere) == ["ok.txt"]


def test_missing_folders_are_created_inside_the_root_only(out, tmp_path):
    atomic_write(out / "a" / "b" / "c.txt", b"x", root=out)
    assert (out / "a" / "b" / "c.txt").read_bytes() == b"x"
    with pytest.raises(ValueError, match="outside the folder"):
        atomic_write(tmp_path / "escape.txt", b"x", root=out)
    with pytest.raises(ValueError, match="outside the folder"):
        atomic_write(out / ".." / "escape.txt", b"x", root=out)
    assert not (tmp_path / "escape.txt").exists()


def test_the_temporary_file_is_removed_on_any_failure(out, monkeypatch):
    (out / "f.bin").write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        with atomic_writer(out / "f.bin", root=out) as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(os.listdir(out)) == ["f.bin"] and (out / "f.bin").read_bytes() == b"old"

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write(out / "f.bin", b"new", root=out)
    assert sorted(os.listdir(out)) == ["f.bin"] and (out / "f.bin").read_bytes() == b"old"


def test_errors_name_the_full_path(out):
    (out / "file").write_text("in the way")
    with pytest.raises(NotADirectoryError) as e:
        atomic_write(out / "file" / "x", b"", root=out)
    assert e.value.filename == str(out / "file")
    os.mkfifo(out / "fifo")
    with pytest.raises(OSError) as e:  # a FIFO is refused at once, never waited on
        open_append(out / "fifo", root=out)
    assert e.value.filename == str(out / "fifo")


def test_the_history_log_refuses_a_planted_link_and_writes_strict_json(out, victim):
    (out / "history.jsonl").symlink_to(victim)
    log = ev3evo.JSONLHistory(out / "history.jsonl", mode="w", root=out)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        log.on_start(None, None)
    assert victim.read_text() == "precious"
    os.remove(out / "history.jsonl")
    log.on_start(None, None)
    log.on_step({"step": 1, "stable": {"acc": float("nan")}, "pvalue": float("inf")}, None, None)
    log.on_resume([{"step": 1, "x": float("-inf")}])
    log.on_step({"step": 2, "x": 0.5}, None, None)
    log.on_end(None)
    text = (out / "history.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    lines = [json.loads(line, parse_constant=pytest.fail) for line in text.splitlines()]
    assert lines == [{"step": 1, "x": None}, {"step": 2, "x": 0.5}]
    with pytest.raises(ValueError, match="mode must be"):
        ev3evo.JSONLHistory(out / "h.jsonl", mode="r+")


def test_history_reader_of_the_distillation_report_reads_nulls(out):
    """The distillation report plots the history: ``null`` metric values load and plot."""
    import importlib.util

    name = "ev3evo.distillation" if importlib.util.find_spec("ev3evo.distillation") else "ev3evo.distill"
    report = importlib.import_module(f"{name}.report")

    log = ev3evo.JSONLHistory(out / "history.jsonl", mode="w")
    log.on_start(None, None)
    for step, value in enumerate([0.5, float("nan"), 0.7], start=1):
        log.on_step({"step": step, "seconds": step * 0.1, "current": {"acc": value},
                     "stable": {"acc": 0.5}, "allocation": {"a": 2}}, None, None)
    log.on_end(None)
    history = report.read_history(out / "history.jsonl")
    assert [r["current"]["acc"] for r in history] == [0.5, None, 0.7]
    paths = report.plot_history(history, out, "acc")
    assert all(os.path.getsize(p) > 0 for p in paths) and len(paths) == 3
