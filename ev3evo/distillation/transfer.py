"""A teacher-labelled transfer set: fresh inputs every step, labelled by the teacher.

The gate can only certify gains it can tell from chance, and a validation split of a few
hundred examples hides gains of a few points. What the teacher defines — agreement with it,
fidelity to it — needs no true labels, so it can be measured on as many examples as one
wants: inputs made afresh from the training inputs every step and labelled by the teacher
(the data-free augmentation of knowledge distillation; Hinton et al. 2015 used perturbed
inputs in the same spirit). :func:`transfer_inputs` makes them by

* **mixup** (Zhang et al. 2018): ``(1 − λ) x_i + λ x_j`` for random pairs, ``λ ~ U(0, mix)``,
  light by default (``mix = 0.1``): heavy blends lie between the classes, where a student's
  agreement with the teacher says little about its accuracy on real inputs (on mnist1d,
  agreement on blends of weight up to 0.5 understated students' test agreement by 4 points
  and the differences between students by a quarter; with blends up to 0.1 it was within 1
  point on average: ``benchmarks/transfer_fidelity.py``);
* **shifts** of images and sequences: a random circular shift of up to ``shift`` positions
  along each spatial axis (``(N, H, W, C)``, ``(N, L)``, ``(N, L, C)``; flat features are not
  shifted);
* **noise**: ``+ noise · σ · ε`` with ``σ`` each feature's spread in the training inputs.

:func:`fresh_batches` turns them into the ``Evaluation.fresh`` batches of the fresh-data gates
(``{"x", "y", "teacher"}`` with ``y`` the teacher's prediction), one compiled program per run.

Example::

    import jax, jax.numpy as jnp
    from ev3evo.distillation.transfer import fresh_batches
    x_train = jax.random.normal(jax.random.key(0), (100, 8, 8, 1))
    teacher = lambda x: x.reshape(x.shape[0], -1)[:, :3]        # any x -> logits
    make = fresh_batches(x_train, teacher, size=256)
    batch = make(jax.random.key(1))
    assert batch["x"].shape == (256, 8, 8, 1) and batch["teacher"].shape == (256, 3)
    assert (batch["y"] == jnp.argmax(batch["teacher"], -1)).all()
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_nonnegative, check_positive_int


def _spatial_axes(x: jax.Array) -> tuple[int, ...]:
    """The axes a shift moves along: H, W of ``(N, H, W, C)``; L of ``(N, L)``, ``(N, L, C)``."""
    if x.ndim == 2:
        return ()  # flat features, or a sequence without channels: see transfer_inputs
    if x.ndim == 3:
        return (1,)
    return tuple(range(1, x.ndim - 1))


def transfer_inputs(key, x_train: jax.Array, size: int, *, mix: float = 0.1,
                    noise: float = 0.1, shift: int = 1, sequence: bool = False) -> jax.Array:
    """``size`` fresh inputs made from ``x_train`` (see the module docstring).

    Args:
      key: the PRNG key.
      x_train: ``(N, ...)`` training inputs.
      size: inputs to make.
      mix: the largest mixup weight (0: no mixup).
      noise: the gaussian noise, in units of each feature's spread (0: none).
      shift: the largest circular shift along the spatial axes (0: none).
      sequence: ``x_train`` of shape ``(N, L)`` is a sequence (shifted along ``L``).
    """
    k_i, k_j, k_mix, k_noise, k_shift = jax.random.split(key, 5)
    n = x_train.shape[0]
    i = jax.random.randint(k_i, (size,), 0, n)
    j = jax.random.randint(k_j, (size,), 0, n)
    lam = mix * jax.random.uniform(k_mix, (size,) + (1,) * (x_train.ndim - 1))
    x = (1.0 - lam) * x_train[i] + lam * x_train[j]
    axes = (1,) if (sequence and x_train.ndim == 2) else _spatial_axes(x_train)
    if shift and axes:
        offsets = jax.random.randint(k_shift, (size, len(axes)), -shift, shift + 1)
        x = jax.vmap(lambda row, o: jnp.roll(row, o, axis=tuple(a - 1 for a in axes)))(x, offsets)
    if noise:
        spread = jnp.std(x_train, axis=0)
        x = x + noise * spread * jax.random.normal(k_noise, x.shape, x.dtype)
    return x.astype(x_train.dtype)


def fresh_batches(x_train: jax.Array, teacher: Callable, size: int = 4096, *,
                  mix: float = 0.1, noise: float = 0.1, shift: int = 1,
                  sequence: bool = False, traceable: bool = True) -> Callable:
    """``key -> {"x", "y", "teacher"}``: a fresh teacher-labelled batch per call (compiled once).

    Args:
      x_train: the training inputs the batches are made from.
      teacher: ``x -> logits``: a JAX function (a flax module's forward pass, a jitted
        function), compiled with the inputs' construction; with ``traceable=False`` a host
        function (called on the made inputs, as numpy).
      size: examples per batch.
      mix, noise, shift, sequence: as in :func:`transfer_inputs`.
    """
    size = check_positive_int(size, "size")
    check_nonnegative(mix, "mix")
    check_nonnegative(noise, "noise")
    x_train = jnp.asarray(x_train)

    def labelled(x, logits):
        logits = jnp.asarray(logits, jnp.float32)
        return {"x": x, "y": jnp.argmax(logits, axis=-1).astype(jnp.int32), "teacher": logits}

    inputs = jax.jit(lambda key: transfer_inputs(key, x_train, size, mix=mix, noise=noise,
                                                 shift=shift, sequence=sequence))
    if traceable:
        return jax.jit(lambda key: labelled(x := inputs(key), teacher(x)))

    def make(key):
        x = inputs(key)
        return labelled(x, np.asarray(teacher(np.asarray(x))))

    return make
