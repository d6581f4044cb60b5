"""The teacher-labelled transfer set: fresh, varied inputs of the training inputs' shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ev3evo.distillation.transfer import fresh_batches, transfer_inputs


@pytest.mark.parametrize("shape, sequence", [((50, 6), False), ((50, 40), True),
                                             ((50, 12, 2), False), ((50, 8, 8, 1), False)])
def test_inputs_keep_the_shape_and_differ_from_the_training_inputs(shape, sequence):
    x = jax.random.normal(jax.random.key(0), shape)
    a = transfer_inputs(jax.random.key(1), x, 64, sequence=sequence)
    b = transfer_inputs(jax.random.key(2), x, 64, sequence=sequence)
    assert a.shape == (64, *shape[1:]) and a.dtype == x.dtype
    assert not np.allclose(np.asarray(a), np.asarray(b))  # fresh every call
    flat = np.asarray(x).reshape(len(x), -1)
    nearest = np.min(np.linalg.norm(np.asarray(a).reshape(64, -1)[:, None] - flat[None], axis=-1),
                     axis=1)
    assert np.all(nearest > 1e-3)  # new inputs, not copies


def test_without_mixup_noise_and_shift_the_inputs_are_training_inputs():
    x = jax.random.normal(jax.random.key(0), (30, 5))
    a = np.asarray(transfer_inputs(jax.random.key(1), x, 20, mix=0.0, noise=0.0, shift=0))
    rows = {tuple(np.round(r, 6)) for r in np.asarray(x)}
    assert all(tuple(np.round(r, 6)) in rows for r in a)


def test_fresh_batches_are_labelled_by_the_teacher_and_compiled_once():
    x = jax.random.normal(jax.random.key(0), (40, 4))
    w = jax.random.normal(jax.random.key(1), (4, 3))
    make = fresh_batches(x, lambda z: z @ w, size=128)
    for k in range(3):
        batch = make(jax.random.key(k))
        np.testing.assert_allclose(np.asarray(batch["teacher"]), np.asarray(batch["x"] @ w),
                                   rtol=1e-5, atol=1e-5)
        assert (np.asarray(batch["y"]) == np.asarray(jnp.argmax(batch["teacher"], -1))).all()
    assert make._cache_size() == 1
    with pytest.raises(ValueError, match="size must be a positive integer"):
        fresh_batches(x, lambda z: z @ w, size=0)


def test_a_host_teacher_labels_the_made_inputs():
    x = jax.random.normal(jax.random.key(0), (40, 4))
    w = np.asarray(jax.random.normal(jax.random.key(1), (4, 3)))
    seen = []

    def host(z):  # numpy only: never traced
        assert isinstance(z, np.ndarray)
        seen.append(z.shape)
        return z @ w

    make = fresh_batches(x, host, size=32, traceable=False)
    batch = make(jax.random.key(2))
    assert seen == [(32, 4)] and batch["teacher"].shape == (32, 3)
