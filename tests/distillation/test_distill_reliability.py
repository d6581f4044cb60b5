"""``ev3evo distill`` as users and schedulers treat it: killed, stopped, run twice, attacked.

Real processes (``python -m ev3evo.cli distill``) on the built-in digits data with a tiny
student and no checkpoint flag: what a run does by default. The runs share a persistent JAX
compilation cache and one teacher (trained once, its cache folder copied into each output
folder), so that a process costs its imports and a short run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest
from _cli import wait_for_line
from _history import TIMED_FIELDS

from ev3evo.io import checkpoint as ck

pytestmark = pytest.mark.slow

ARGS = ["distill", "--data", "digits", "--student", "mlp:3", "--population", "8",
        "--teacher-epochs", "2", "--seed", "1", "--rollout-steps", "50"]
#: what depends on the wall clock or on the folder, not on the run
TIMED = {*TIMED_FIELDS, "budget", "growth_seconds", "compile_seconds", "time_shares"}


def _env(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(OPENBLAS_NUM_THREADS="1", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def _start(out, *extra, cache) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ev3evo.cli", *ARGS, "--out", str(out),
                             *map(str, extra)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(cache))


def _run(out, *extra, cache, timeout=600) -> subprocess.CompletedProcess:
    p = _start(out, *extra, cache=cache)
    stdout, stderr = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def _same(x, out=None):
    """``x`` without what depends on the clock or the folder (timings, paths)."""
    if isinstance(x, dict):
        return {k: _same(v, out) for k, v in x.items()
                if k not in TIMED and k not in ("out", "resume", "path")}
    if isinstance(x, list):
        return [_same(v, out) for v in x]
    return x


def _written_since(folder, since: float) -> bool:
    """Whether a checkpoint in ``folder`` was completed after ``since`` (a time.time())."""
    for _, path in ck.list_checkpoints(folder):
        try:
            if os.stat(path).st_mtime > since:
                return True
        except FileNotFoundError:  # pruned meanwhile
            pass
    return False


def _history(out, resumes: bool = True) -> list[dict]:
    """The records of ``OUT/history.jsonl`` (without the resume events: ``resumes=False``)."""
    records = [json.loads(line) for line in open(out / "history.jsonl")]
    return [r for r in records if resumes or r.get("event") != "resume"]


def _fresh(shared, name):
    """A new output folder holding the shared teacher's cache."""
    out = shared["root"] / name
    shutil.copytree(shared["base"] / "teacher", out / "teacher")
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The JAX cache and two uninterrupted runs of 6 steps without baselines: ``base`` trains
    the teacher every other run gets; ``warm`` starts with it cached, as they do (timed)."""
    root = tmp_path_factory.mktemp("reliability")
    shared = {"root": root, "cache": root / "jax-cache", "base": root / "base"}
    p = _run(shared["base"], "--steps", 6, "--no-baselines", "--quiet", cache=shared["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    shared["warm"] = _fresh(shared, "warm")
    t0 = time.monotonic()
    p = _run(shared["warm"], "--steps", 6, "--no-baselines", "--quiet", cache=shared["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    shared["seconds"] = time.monotonic() - t0
    return shared


@pytest.mark.timeout(1200)
def test_sigkill_at_random_moments_then_resume_gives_the_same_summary_and_history(shared):
    """No checkpoint flag: checkpoints are written by default. Each life is SIGKILLed at a
    random moment and the next one resumes (``--resume OUT``, or a fresh start when the run
    was killed before it recorded anything); the last one ends as the uninterrupted run."""
    cache, base = shared["cache"], shared["warm"]
    out = _fresh(shared, "killed")
    rng = np.random.default_rng(17)
    kills, resumed_from = 0, []
    while kills < 6:
        record = out / "checkpoints" / "phases.json"
        extra = ["--resume", out] if record.exists() else []
        ev3_done = record.exists() and "ev3" in json.loads(record.read_text())["phases"]
        started = time.time()
        p = _start(out, "--steps", 6, "--no-baselines", "--quiet", *extra, cache=cache)
        if kills % 3 == 2 and not ev3_done:  # aimed: just after the EV3 phase's checkpoint
            while p.poll() is None and not _written_since(out / "checkpoints", started):
                time.sleep(0.01)
            time.sleep(float(rng.uniform(0.0, 0.5)))
        else:
            time.sleep(float(rng.uniform(0.2, max(1.0, 0.9 * shared["seconds"]))))
        if p.poll() is not None:  # it finished first: start over in a new folder
            assert p.returncode == 0, p.communicate()[1]
            shutil.rmtree(out)
            out = _fresh(shared, f"killed-{kills}")
            continue
        p.kill()
        p.wait()
        kills += 1
        saved = ck.read_checkpoint(out / "checkpoints") if (out / "checkpoints").exists() else None
        resumed_from.append(None if saved is None else saved.step)
        if record.exists():
            json.loads(record.read_text())  # the record is intact after any kill
    extra = ["--resume", out] if (out / "checkpoints" / "phases.json").exists() else []
    p = _run(out, "--steps", 6, "--no-baselines", "--quiet", *extra, cache=cache)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = json.load(open(base / "summary.json")), json.load(open(out / "summary.json"))
    assert _same(a) == _same(b)
    assert _same(_history(base)) == _same(_history(out, resumes=False))
    seconds = [r["seconds"] for r in _history(out) if "seconds" in r]
    assert seconds == sorted(seconds)  # the time axis never runs backwards
    assert any(step is not None for step in resumed_from)  # some lives resumed a checkpoint
    print(f"\n{kills} SIGKILLs; newest checkpoint after each: {resumed_from}")


@pytest.mark.timeout(900)
def test_sigterm_saves_a_final_checkpoint_exits_143_and_the_clock_continues(shared):
    out, seen = _fresh(shared, "sigterm"), []
    p = _start(out, "--steps", 5000, "--time-budget", 120, "--no-baselines", cache=shared["cache"])
    wait_for_line(p, "EV3 step compiled", seen)
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 143, err[-3000:]
    last = _lines(err)[-1]
    match = re.fullmatch(r"ev3evo distill: interrupted by SIGTERM at step (\d+); last "
                         r"checkpoint: step \1 in (.*)", last)
    assert match and match[2] == str(out / "checkpoints"), last
    stopped = int(match[1])
    assert ck.read_checkpoint(out / "checkpoints").step == stopped > 0
    before = _history(out)[-1]["seconds"]
    p = _run(out, "--steps", stopped + 3, "--no-baselines", "--quiet", "--resume", out,
             cache=shared["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    steps = [r for r in _history(out) if "event" not in r]
    assert [r["step"] for r in steps][-4:] == list(range(stopped, stopped + 4))
    assert steps[-1]["seconds"] > before  # after a resume, the seconds go on


@pytest.mark.timeout(900)
def test_sigterm_during_a_baseline_then_resume_gives_each_baseline_its_due_time(shared):
    """Stopped while the second KD baseline runs: the EV3 phase and the first baseline are
    kept; the resumed run gives every other baseline EV3's wall time (not what was left)."""
    out, seen = _fresh(shared, "baselines"), []
    p = _start(out, "--steps", 6, cache=shared["cache"])
    wait_for_line(p, "baseline kd_adam_0.01:", seen)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 143, "".join(seen) + err
    assert _lines(err)[-1].startswith("ev3evo distill: interrupted by SIGTERM")
    first = json.loads((out / "checkpoints" / "phases.json").read_text())["phases"]
    assert set(first) == {"teacher", "ev3", "kd_adam_0.003"}
    p = _run(out, "--steps", 6, "--resume", out, cache=shared["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "baseline kd_adam_0.003: done before the resume" in p.stderr
    summary = json.load(open(out / "summary.json"))
    methods = summary["methods"]
    assert methods["kd_adam_0.003"] == first["kd_adam_0.003"]
    assert methods["ev3"]["seconds"] == first["ev3"]["seconds"]
    assert {m["budget"] for n, m in methods.items() if n != "ev3"} == {first["ev3"]["seconds"]}
    assert methods["ev3"]["steps"] == 6
    assert f"EV3 ran {first['ev3']['seconds']:.1f}s, 6 steps" in p.stdout


@pytest.mark.timeout(900)
def test_a_second_run_on_the_same_folder_exits_2_and_the_first_finishes_intact(shared):
    out = _fresh(shared, "twice")
    first = _start(out, "--steps", 30, "--no-baselines", "--quiet", cache=shared["cache"])
    deadline = time.monotonic() + 300
    while not (out / ".lock").exists() or not (out / ".lock").read_text().strip():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = _run(out, "--steps", 30, "--no-baselines", "--quiet", "--seed", 2,
                  cache=shared["cache"])
    assert second.returncode == 2
    line, = _lines(second.stderr)
    assert line.startswith(f"ev3evo distill: error: {out / '.lock'} is locked by process "
                           f"{first.pid}"), line
    assert line.endswith("only one run may use a folder at a time")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["config"]["seed"] == 1
    steps = [r["step"] for r in _history(out) if "event" not in r]
    assert steps == list(range(31))  # the start, then every step once
    assert ck.read_checkpoint(out / "checkpoints").metadata["config"]["seed"] == 1
    assert not (out / ".lock").read_text().strip()  # released


@pytest.mark.timeout(900)
def test_planted_links_are_never_followed(shared, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A link at a file's name: refused where the file is opened (the history), replaced, never
    # written through, where it is renamed into place (summary, plots).
    out = _fresh(shared, "links")
    for name in ("summary.json", "metric_vs_step.png", "comparison.png"):
        os.symlink(victim, out / name)
    os.symlink(victim, out / ".summary.json.tmp-0123456789abcdef")
    p = _run(out, "--steps", 2, "--no-baselines", "--quiet", cache=shared["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert victim.read_text() == "precious\n"
    assert not (out / "summary.json").is_symlink() and json.load(open(out / "summary.json"))
    assert not os.path.lexists(out / ".summary.json.tmp-0123456789abcdef")  # a leftover: gone
    for planted in ("history.jsonl", "checkpoints", "teacher"):
        out = shared["root"] / f"link-{planted}"
        out.mkdir()
        os.symlink(victim if planted == "history.jsonl" else elsewhere, out / planted)
        p = _run(out, "--steps", 2, "--no-baselines", "--quiet", cache=shared["cache"])
        assert p.returncode == 2, p.stderr[-3000:]
        line, = _lines(p.stderr)
        assert line.startswith(f"ev3evo distill: error: {out / planted}") and \
            "symbolic link" in line, line
        assert victim.read_text() == "precious\n" and os.listdir(elsewhere) == []


@pytest.mark.timeout(900)
def test_a_different_teacher_on_resume_is_refused(shared, tmp_path):
    from ev3evo.distillation import data, models, teacher

    other = tmp_path / "other.msgpack"
    t = teacher.train_teacher(data.load_digits(), "mlp:16", epochs=1)
    models.save(other, (t.arch, t.params))
    p = _run(shared["base"], "--steps", 6, "--no-baselines", "--quiet", "--resume",
             shared["base"], "--teacher", other, cache=shared["cache"])
    assert p.returncode == 2
    line, = _lines(p.stderr)
    assert "the run being resumed was distilled from a built-in mlp:128,128 teacher" in line
    assert f"not from the checkpoint {other}" in line and "resume with the teacher it had" in line


def test_a_tampered_teacher_cache_is_retrained_with_a_warning(tmp_path):
    from ev3evo.distillation import data, teacher
    from ev3evo.distillation.teacher import TeacherCacheWarning

    ds = data.load_digits()
    first = teacher.load_or_train_teacher(ds, tmp_path, epochs=2)
    raw = bytearray(open(first.path, "rb").read())
    raw[len(raw) // 2: len(raw) // 2 + 4] = np.float32(np.nan).tobytes()  # four bytes: a NaN
    open(first.path, "wb").write(bytes(raw))
    with pytest.warns(TeacherCacheWarning, match="checksum does not match"):
        again = teacher.load_or_train_teacher(ds, tmp_path, epochs=2)
    assert again.source == "trained"
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(again.params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the retrained file is intact: used, no warning
        assert teacher.load_or_train_teacher(ds, tmp_path, epochs=2).source == "cache"
