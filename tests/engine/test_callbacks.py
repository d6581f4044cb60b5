"""The progress bar counts what ends the run; the TensorBoard writer's event files."""

from __future__ import annotations

import glob
import io
import struct

import jax
import jax.numpy as jnp
import pytest

import ev3evo


def _engine():
    score = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - b) ** 2, -1))
    return ev3evo.EV3([ev3evo.gaussian(4, sigma=0.2)], [score])


BATCH = jnp.ones((16, 2))


@pytest.mark.parametrize("budget", [None, 30.0])
def test_progress_counts_steps_or_the_time_budget(budget):
    out = io.StringIO()
    bar = ev3evo.ProgressBar(total=5, time_budget=budget, file=out, mininterval=0)
    ev3evo.run(_engine(), jax.random.key(0), {"w": jnp.zeros(2)}, BATCH, BATCH, steps=5,
               time_budget=budget, callbacks=[bar])
    text = out.getvalue()
    if budget is None:
        assert "5/5" in text and "step=" not in text
    else:
        assert "/30 s" in text and "step=5/5" in text


def _events(logdir):
    """``(tag, step, value)`` of every scalar in the event files (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                found.append((v.tag, event.step, v.simple_value))
    return found


def test_tensorboard_writes_every_step_and_resumes_without_duplicates(tmp_path):
    pytest.importorskip("tensorboardX")
    engine, logdir, ckpt = _engine(), tmp_path / "tb", tmp_path / "ckpt"
    params, key = {"w": jnp.zeros(2)}, jax.random.key(0)
    ev3evo.run(engine, key, params, BATCH, BATCH, steps=3, checkpoint_dir=ckpt,
               callbacks=[ev3evo.TensorBoard(logdir)])
    ev3evo.run(engine, key, params, BATCH, BATCH, steps=5, checkpoint_dir=ckpt, resume=True,
               callbacks=[ev3evo.TensorBoard(logdir)])
    # one file per writer (the first run's; the resumed run's, then its purging one), even
    # when they open within the same second
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 3
    events = _events(logdir)
    steps = sorted(step for tag, step, _ in events if tag == "stable/score")
    assert steps == [0, 1, 2, 3, 4, 5]  # the starting model, then every step once
    tags = {tag for tag, _, _ in events}
    assert {"current/score", "slots/gaussian", "gate/accepted", "gate/pvalue"} <= tags
