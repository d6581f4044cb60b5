"""``ev3evo distill`` as a subprocess: a .csv and a .npz made here, outputs checked, bad input.

The two runs use data of identical shapes and share a persistent JAX compilation cache, so the
second run reuses the first one's compiled EV3 step.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

N, D, C = 150, 6, 3
PNGS = ("metric_vs_step.png", "metric_vs_time.png", "allocation.png", "comparison.png")


def _data(seed):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=N, n_features=D, n_informative=4, n_redundant=0,
                               n_classes=C, n_clusters_per_class=1, class_sep=2.0,
                               random_state=seed)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_cli")
    x, y = _data(0)
    csv = root / "toy.csv"
    names = [f"f{i}" for i in range(D)]
    labels = np.array(["ant", "bee", "cat"])[y]  # string labels in the middle column
    with open(csv, "w") as f:
        f.write(",".join([*names[:3], "target", *names[3:]]) + "\n")
        for row, lab in zip(x, labels):
            f.write(",".join([*map(str, row[:3]), lab, *map(str, row[3:])]) + "\n")
    x2, y2 = _data(1)
    npz = root / "toy.npz"
    np.savez(npz, x=x2, y=y2)
    return {"root": root, "csv": csv, "npz": npz, "cache": root / "jax-cache"}


def _cli(args, cache=None, timeout=300, cwd=None):
    args = list(map(str, args))
    if "--rollout-steps" not in args and "--help" not in args:
        args += ["--rollout-steps", "50"]  # short rollouts: these runs check the outputs
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return subprocess.run([sys.executable, "-m", "ev3evo.cli", "distill", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _check_outputs(out, methods, primary):
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == set(methods)
    for name, r in [("teacher", summary["teacher"]), *summary["methods"].items()]:
        for split in ("test", "validation"):
            assert set(r[split]) >= {"accuracy", "macro_f1", "agreement", "ece"}, name
            assert all(0.0 <= v <= 1.0 for v in r[split].values()), (name, r[split])
        assert r["params"] > 0
    for r in summary["methods"].values():
        assert r["seconds"] > 0
    assert summary["teacher"]["test"]["agreement"] == 1.0  # the teacher agrees with itself
    assert summary["primary"] == primary
    for png in PNGS:
        w, h = _png_size(out / png)
        assert w > 100 and h > 100
    lines = [json.loads(s) for s in (out / "history.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "event" not in r]
    assert steps and all({"current", "stable", "winner_source", "allocation", "certified"}
                         <= set(r) for r in steps)
    # where EV3's time went, measured on every step
    shares = summary["methods"]["ev3"]["time_shares"]
    assert set(shares) == {"explore", "assess", "gate", "other"}, shares
    assert sum(shares.values()) == pytest.approx(1.0) and all(
        shares[s] > 0 for s in ("explore", "assess", "gate")), shares
    assert all(min(r["stage_seconds"].values()) > 0 for r in steps if not r.get("initial"))
    return summary, lines


def test_csv_run_writes_summary_history_and_plots(files):
    out = files["root"] / "out_csv"
    p = _cli(["--data", files["csv"], "--label", "target", "--steps", 3, "--teacher-epochs", 3,
              "--student", "mlp:4", "--no-baselines", "--out", out], cache=files["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    summary, _ = _check_outputs(out, {"ev3"}, "accuracy")
    assert summary["dataset"]["num_classes"] == C
    assert summary["dataset"]["feature_shape"] == [D]
    assert "test accuracy" in p.stdout and "ev3" in p.stdout  # the printed table
    # the teacher was cached under --out
    assert any(n.endswith(".msgpack") for n in os.listdir(out / "teacher"))


@pytest.mark.slow  # the baselines through the CLI; tests/distillation/test_distill_pipeline.py has them
def test_npz_run_with_baselines(files):
    out = files["root"] / "out_npz"
    # The same EV3 flags as the .csv run: the compiled step comes from the persistent cache.
    p = _cli(["--data", files["npz"], "--steps", 3, "--teacher-epochs", 3, "--student", "mlp:4",
              "--baselines", "--baseline-seconds", 1, "--kd-loss", "rkl_t2", "--quiet",
              "--out", out],
             cache=files["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    methods = {"ev3", "kd_adam_0.003", "kd_adam_0.01", "kd_sgdm_0.05", "es_open_es"}
    summary, _ = _check_outputs(out, methods, "accuracy")
    assert p.stdout == ""  # --quiet
    for name in methods - {"ev3"}:  # baselines keep the initial student's size
        assert summary["methods"][name]["params"] == summary["methods"]["ev3"]["params"]
        assert summary["methods"][name]["seconds"] < 30
    assert {summary["methods"][n]["loss"] for n in methods if n.startswith("kd_")} == {"rkl_t2"}
    assert summary["config"]["kd_loss"] == "rkl_t2"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data", "/nonexistent/data.csv"], "no such file"),
        (["--metric", "accuracyy"], "unknown metric"),
        (["--constraint", "agreement=0.9"], "cannot read constraint"),
        # argparse's own errors are one line too
        (["--accept", "maybe"], "invalid choice: 'maybe'"),
        (["--kd-loss", "kl_t9"], "invalid choice: 'kl_t9'"),
        (["--tie-examples", "-1"], "expected a positive number"),
        (["--steps", "many"], "expected a positive integer"),
        (["--student", "cnn8"], "cannot read the model spec 'cnn8'"),
        (["--grow", "--grow-kind", "residual"], "residual blocks grow a CNN"),
        # names are checked before any work (here: before the teacher is trained)
        (["--es", "Open-ES"], "unknown evosax algorithm 'Open-ES'"),
        (["--es", "SimpleGA"], "SimpleGA is population-based"),
        (["--checkpoint-seconds", "0"], "expected a positive number"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle):
    p = _cli([*args, "--no-baselines", "--steps", 1, "--quiet", "--out", "/tmp/unused-ev3"])
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0] and "Traceback" not in p.stderr
    assert lines[0].startswith("ev3evo distill: error:")


def test_help_explains_every_flag():
    p = subprocess.run([sys.executable, "-m", "ev3evo.cli", "distill", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    for flag in ("--data", "--label", "--metric", "--constraint", "--steps", "--time-budget",
                 "--student", "--teacher-arch", "--grow", "--no-grow", "--seed", "--out",
                 "--baselines",
                 "--no-baselines", "--resume", "--checkpoint-every", "--correction", "--accept",
                 "--certify", "--tie-examples", "--rollout-steps"):
        assert flag in p.stdout, flag


@pytest.mark.slow
def test_the_time_budget_counts_the_final_check_as_help_and_log_say(tmp_path, files):
    budget, out = 3.0, tmp_path / "budget"
    p = _cli(["--data", "digits", "--student", "mlp:3", "--steps", 100000, "--time-budget",
              budget, "--teacher-epochs", 2, "--no-baselines", "--out", out],
             cache=files["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(s) for s in (out / "history.jsonl").read_text().splitlines()]
    clock = [r["seconds"] for r in lines if "event" not in r and not r.get("initial")]
    longest = max(b - a for a, b in zip([0.0, *clock], clock))
    assert summary["status"] == "time_budget" and summary["final_check"] is not None
    seconds = summary["methods"]["ev3"]["seconds"]  # the final check included
    print(f"\nbudget {budget}s: EV3 {seconds:.2f}s, {len(clock)} steps, longest {longest:.2f}s")
    # within one step of the budget, up to the end-of-run bookkeeping (callbacks' on_end,
    # the history's last lines), which is not reserved
    assert seconds <= budget + longest + 0.25, (seconds, longest)
    assert re.search(r"EV3's [0-9.]+s: explore \d+% \(rollouts and the other sources\), "
                     r"assess \d+% \(evaluation\), gate \d+%", p.stderr), p.stderr[-2000:]
    assert "before EV3's clock starts (not counted in its time or its time budget)" in p.stderr
    help_text = " ".join(subprocess.run(
        [sys.executable, "-m", "ev3evo.cli", "distill", "--help"], capture_output=True,
        text=True, timeout=120).stdout.split())
    assert "its final check included" in help_text
    assert "compiled before the clock starts and not counted" in help_text


TINY = ["--data", "digits", "--student", "mlp:3", "--steps", 6, "--time-budget", 4,
        "--teacher-epochs", 2, "--no-baselines", "--quiet"]


def _tags(logdir):
    """The scalar tags and steps in the TensorBoard event files (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    found = set()
    for name in os.listdir(logdir):
        data, pos = (logdir / name).read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            found |= {(v.tag, event.step) for v in event.summary.value}
    return found


@pytest.mark.slow
def test_a_summary_reruns_through_config_and_resume_writes_into_its_folder(tmp_path, files):
    first = tmp_path / "first"
    p = _cli([*TINY, "--checkpoint-every", 2, "--seed", 3, "--metric", "macro_f1", "--out",
              first], cache=files["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    config = json.loads((first / "summary.json").read_text())["config"]
    records = [json.loads(s) for s in (first / "history.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in records if "event" not in r)
    assert config["seed"] == 3 and config["metrics"] == ["macro_f1"] and config["steps"] == 6
    # the recorded configuration, fed back through --config, is the run's configuration
    again = tmp_path / "again"
    p = _cli(["--config", first / "summary.json", "--out", again], cache=files["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    rerun = json.loads((again / "summary.json").read_text())["config"]
    assert rerun == {**config, "out": str(again)}
    # --resume DIR without --out: the outputs go to DIR, nothing to ./ev3evo-distill; the
    # settings come from the run's own summary (flags given override them)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = _cli(["--config", first / "summary.json", "--resume", first, "--steps", 8],
             cache=files["cache"], cwd=cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert os.listdir(cwd) == []
    resumed = json.loads((first / "summary.json").read_text())
    assert resumed["config"]["steps"] == 8 and resumed["config"]["resume"] == str(first)
    history = [json.loads(s) for s in (first / "history.jsonl").read_text().splitlines()]
    assert [r for r in history if r.get("event") == "resume"] == [{"event": "resume",
                                                                   "step": last}]
    assert max(r["step"] for r in history if "event" not in r) > last  # the plots break there


@pytest.mark.slow
def test_tensorboard_writes_event_files_under_out(tmp_path, files):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "tb"
    p = _cli([*TINY, "--tensorboard", "--out", out], cache=files["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    history = [json.loads(s) for s in (out / "history.jsonl").read_text().splitlines()]
    steps = {r["step"] for r in history if "event" not in r}
    tags = _tags(out / "tensorboard")
    assert {s for t, s in tags if t == "stable/accuracy"} == steps
    assert {"current/accuracy", "gate/certified"} <= {t for t, _ in tags}
