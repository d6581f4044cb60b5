"""Many devices and many hosts: the population axis sharded with :mod:`jax.sharding`.

EV3's population is the only large axis of a step, and every candidate is independent until
the gate compares them, so the natural layout is

* the **population** (candidates and the arms ``[candidates, current, stable]``) split along
  its leading axis over a one-dimensional :class:`~jax.sharding.Mesh` of every device;
* everything else (the current and stable models, source states, batches, the step's
  outputs) **replicated** on every device.

``EV3(..., mesh=population_mesh())`` does this: the step is compiled with replicated input and
output shardings, and ``jax.lax.with_sharding_constraint`` pins the population to the mesh
inside the step (XLA propagates it back into the sources' vmapped ``ask`` and forward into
the vmapped evaluation; sizes that do not divide the device count are padded by XLA). The
gate then works on the gathered ``(A, N)`` scores, so the decisions are the same as on one
device.

**Many hosts** (multi-controller JAX): every process runs the *same* program, calls
:func:`initialize` first, and then builds the mesh over ``jax.devices()`` (all devices of all
processes). Each process passes the same (replicated) inputs; the step's outputs are global
arrays replicated on every device, so every process reads the same records. See
``docs/scaling.md`` for launching on a cluster.

Example (run with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` to see 4 devices)::

    import jax, jax.numpy as jnp, optax, ev3evo
    from ev3evo import parallel

    apply = lambda p, x: x @ p["w"]
    batch = {"x": jnp.eye(4), "y": jnp.arange(4) % 2}
    mesh = parallel.population_mesh()
    engine = ev3evo.EV3([ev3evo.gaussian(8, sigma=0.1)], [ev3evo.metrics.accuracy(apply)],
                        mesh=mesh)
    state = engine.init(jax.random.key(0), {"w": jnp.zeros((4, 2))})
    state, info = engine.step(jax.random.key(1), state, batch, batch)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: the name of the mesh axis the population is split along
POPULATION_AXIS = "population"


def population_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = POPULATION_AXIS) -> Mesh:
    """A one-dimensional mesh over ``devices`` (default: every device of every process).

    Raises:
      ValueError: for an empty device list.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("population_mesh needs at least one device")
    return Mesh(np.array(devices), (axis_name,))


def _axis(mesh: Mesh) -> str:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see population_mesh), got {mesh!r}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"the population mesh must have exactly one axis, got axes {mesh.axis_names}; "
            "build it with ev3evo.parallel.population_mesh()"
        )
    return mesh.axis_names[0]


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of the models, states and batches: a full copy on every device."""
    _axis(mesh)
    return NamedSharding(mesh, P())


def population_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a population: its leading axis split over the mesh."""
    return NamedSharding(mesh, P(_axis(mesh)))


def constrain_population(population, mesh: Mesh | None):
    """Inside ``jit``: pins every leaf's leading (population) axis to the mesh.

    The identity when ``mesh`` is ``None``, so the engine calls it unconditionally. Leading
    axes that do not divide the device count are allowed (XLA pads the last shard).
    """
    if mesh is None:
        return population
    sharding = population_sharding(mesh)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), population)


def sharded_evaluate(metrics, population, batch, mesh: Mesh) -> tuple[jax.Array, ...]:
    """:func:`ev3evo.assess.evaluate.evaluate_population` with the population split over ``mesh``.

    Each device evaluates its own block of members (``shard_map``; cache-sized chunks inside,
    as on one device) and the statistics come back sharded the same way. A sharding
    constraint on a ``vmap`` leaves XLA free to run the small per-member matrix products on one
    thread; ``shard_map`` gives every device its own program, so on a CPU forced to expose one
    device per core (``XLA_FLAGS=--xla_force_host_platform_device_count=N``) every core works
    (``benchmarks/throughput.py``, assess across devices). A population that does not divide
    the device count is padded with copies of its last member, whose statistics are dropped.
    """
    from .assess.evaluate import evaluate_population

    axis = _axis(mesh)
    size = jax.tree.leaves(population)[0].shape[0]
    devices = mesh.shape[axis]
    pad = (-size) % devices
    if pad:
        population = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), population)
    evaluate = jax.shard_map(lambda pop, b: evaluate_population(metrics, pop, b), mesh=mesh,
                             in_specs=(P(axis), P()), out_specs=P(axis))
    stats = evaluate(population, batch)
    return tuple(s[:size] for s in stats) if pad else stats


def sharded_step(step: Callable, mesh: Mesh) -> Callable:
    """``jax.jit(step)`` with every input and output replicated over ``mesh``.

    Inputs may be numpy arrays, uncommitted ``jax.Array`` s (what ``jnp`` and ``EV3.init``
    return) or arrays already replicated on the mesh (what the previous step returned); with
    several processes every process must pass the same values.
    """
    rep = replicated(mesh)
    return jax.jit(step, in_shardings=rep, out_shardings=rep)


def replicate(tree, mesh: Mesh):
    """Copies a pytree of arrays onto every device of ``mesh`` (global replicated arrays).

    Works with several processes as long as every process passes the same values. Useful to
    place the state and the batches once, instead of transferring them at every step.
    """
    put = jax.jit(lambda t: t, out_shardings=replicated(mesh))
    return put(tree)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **kwargs,
) -> None:
    """Starts multi-controller JAX (:func:`jax.distributed.initialize`) before any JAX work.

    Arguments left ``None`` are read from the environment variables
    ``EV3EVO_COORDINATOR`` (``host:port`` of process 0), ``EV3EVO_NUM_PROCESSES`` and
    ``EV3EVO_PROCESS_ID``; when none of them is set either, JAX's own detection runs (SLURM,
    Open MPI, Kubernetes, Cloud TPU). Extra keyword arguments go to
    :func:`jax.distributed.initialize` (e.g. ``initialization_timeout``,
    ``local_device_ids``).

    When ``EV3EVO_COORDINATOR`` is set, ``import ev3evo`` already calls this (importing
    evosax starts the JAX backend, after which JAX refuses to initialize), and a later call is
    a no-op.

    Usage (two processes on one machine, each in its own shell)::

        EV3EVO_COORDINATOR=127.0.0.1:1234 EV3EVO_NUM_PROCESSES=2 EV3EVO_PROCESS_ID=0 python a.py
        EV3EVO_COORDINATOR=127.0.0.1:1234 EV3EVO_NUM_PROCESSES=2 EV3EVO_PROCESS_ID=1 python a.py
    """
    if jax.distributed.is_initialized():  # e.g. already done at import (see the module end)
        return
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get("EV3EVO_COORDINATOR")
    if num_processes is None and "EV3EVO_NUM_PROCESSES" in env:
        num_processes = _env_int("EV3EVO_NUM_PROCESSES")
    if process_id is None and "EV3EVO_PROCESS_ID" in env:
        process_id = _env_int("EV3EVO_PROCESS_ID")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def describe() -> dict:
    """Where this process runs: process index and count, local and global devices."""
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": [str(d) for d in jax.local_devices()],
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
    }


# Multi-host runs configured by environment variables join here, at import: ``import ev3evo``
# goes on to import evosax, whose module-level arrays start the JAX backend, and JAX refuses
# jax.distributed.initialize after that. ev3evo/__init__.py imports this module before evosax.
if os.environ.get("EV3EVO_COORDINATOR") and not jax.distributed.is_initialized():
    initialize()
