"""The portfolio: which members :func:`ev3evo.minimize` runs, from its ``sources=`` argument.

Names (:data:`SOURCE_NAMES`) and :class:`~ev3evo.Source` objects become members
(:mod:`ev3evo.blackbox.member`):

* ``"lq_cma"``: pycma's IPOP CMA-ES screened by a linear-quadratic surrogate
  (:mod:`ev3evo.blackbox.screened`), the first run with twice pycma's default population
  ``λ0 = 4 + floor(3 ln D)``;
* ``"cma"`` / ``"cma_bipop"``: pycma's CMA-ES with IPOP / BIPOP restarts
  (:mod:`ev3evo.blackbox.host_cma`); the first IPOP run uses ``2 λ0``, BIPOP starts at
  ``λ0``. The three exclude each other.
* ``"model"``: the quadratic surrogate (:mod:`ev3evo.blackbox.model`); it needs another member
  to learn from. When its candidate becomes the incumbent, ``"cma"``'s CMA-ES continues from it
  (``"lq_cma"`` injects every incumbent another member produced).
* ``"gaussian"``, ``"cauchy"``: the local pool (:mod:`ev3evo.blackbox.local`), capacity
  ``max(2, λ0 / 2)`` slots per search.
* ``"cma_evosax"``, ``"de"`` and any :class:`~ev3evo.Source`: the JAX members, mixed into one
  compiled step (:mod:`ev3evo.blackbox.device`).

Members are asked in the order model, CMA-ES, pool, JAX members, which is also the order in
which their candidates are evaluated (and truncated, at the end of the budget).

Example::

    from ev3evo.blackbox.portfolio import resolve_sources
    spec = resolve_sources(["lq_cma", "model", "gaussian"])
    assert spec.host_cma == "lq_cma" and spec.model and spec.pool == ("gaussian",)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..types import Source
from .device import DEVICE_NAMES, DeviceMembers, device_step
from .host_cma import CMAMember, HostCMA
from .local import KINDS, LocalPool
from .model import ModelMember
from .screened import ScreenedCMA

#: Source names accepted by ``sources=`` (besides :class:`~ev3evo.Source` objects).
SOURCE_NAMES = ("lq_cma", "cma", "cma_bipop", "cma_evosax", "model", "gaussian", "cauchy", "de")
#: The portfolio of ``sources=None``: all on the host, so that it compiles nothing.
DEFAULT_SOURCES = ("lq_cma", "model", "gaussian", "cauchy")
_HOST_CMA = {"lq_cma": "ipop", "cma": "ipop", "cma_bipop": "bipop"}  # pycma, by restart regime
_MODEL = "model"


class PortfolioSpec(NamedTuple):
    """What ``sources=`` asks for.

    Attributes:
      host_cma: ``"cma"``, ``"cma_bipop"`` or ``None``.
      model: whether the quadratic model runs.
      pool: the local searches, in order.
      device: the built-in JAX members, in order.
      user: the user's :class:`~ev3evo.Source` objects.
    """

    host_cma: str | None
    model: bool
    pool: tuple[str, ...]
    device: tuple[str, ...]
    user: tuple[Source, ...]


class Portfolio(NamedTuple):
    """The members, in the order they are asked, and the part names (unique), in reporting order."""

    members: tuple
    names: tuple[str, ...]


def resolve_sources(sources) -> PortfolioSpec:
    """Checks ``sources=`` (names and :class:`~ev3evo.Source` objects) and sorts it by kind."""
    if sources is None:
        sources = DEFAULT_SOURCES
    if isinstance(sources, (str, Source)):
        sources = [sources]
    names, user = [], []
    for s in sources:
        if isinstance(s, Source):
            user.append(s)
        elif isinstance(s, str):
            if s not in SOURCE_NAMES:
                raise ValueError(f"unknown source {s!r}; known: {', '.join(SOURCE_NAMES)} "
                                 "(or pass an ev3evo.Source)")  # fmt: skip
            names.append(s)
        else:
            raise TypeError(f"sources must be names or ev3evo.Source objects, got {s!r}")
    if not names and not user:
        raise ValueError("sources is empty")
    host = [n for n in names if n in _HOST_CMA]
    if len(host) > 1:
        raise ValueError(f"choose one of 'lq_cma', 'cma' (IPOP) and 'cma_bipop', got {host}")
    others = [n for n in names if n != _MODEL and n not in _HOST_CMA]
    if not others and not user and not host:
        raise ValueError("the 'model' source needs at least one other source to learn from")
    return PortfolioSpec(
        host_cma=host[0] if host else None,
        model=_MODEL in names,
        pool=tuple(dict.fromkeys(n for n in others if n in KINDS)),
        device=tuple(dict.fromkeys(n for n in others if n in DEVICE_NAMES)),
        user=tuple(user),
    )


def build_portfolio(spec: PortfolioSpec, x0: np.ndarray, f0: float, *, sigma0: float,
                    seed: int, budget: int, dtype, bounded: bool) -> Portfolio:  # fmt: skip
    """The members of ``spec`` for a run from ``x0`` (whose value is ``f0``)."""
    d = x0.size
    lam = 4 + int(3 * math.log(d))  # pycma's default population size
    follow = (_MODEL,) if spec.model else ()
    cma = None
    if spec.host_cma == "lq_cma":
        cma = ScreenedCMA(spec.host_cma, HostCMA(x0, sigma0, seed, "ipop", popsize=2 * lam),
                          exact=not bounded)  # fmt: skip
    elif spec.host_cma:
        regime = _HOST_CMA[spec.host_cma]
        es = HostCMA(x0, sigma0, seed, regime, popsize=2 * lam if regime == "ipop" else lam)
        cma = CMAMember(spec.host_cma, es, exact=not bounded, follow=follow)
    jax_members = bool(spec.device or spec.user)
    pool = None
    if spec.pool:
        pool = LocalPool(spec.pool, 0.3 * sigma0, seed, capacity=max(2, lam // 2),
                         alone=cma is None and not jax_members)  # fmt: skip
    device = None
    if jax_members:
        step = device_step(spec.device, spec.user, d, dtype, sigma0, budget)
        device = DeviceMembers(step, seed, x0, dtype, follow=follow)
    model = ModelMember(d, min(budget, 20_000), x0, f0) if spec.model else None
    members = tuple(m for m in (model, cma, pool, device) if m is not None)
    # A name given twice (a user source called "gaussian" beside the local one) is counted once.
    names = tuple(dict.fromkeys(n for m in (cma, pool, device, model) if m is not None
                                for n in m.names))  # fmt: skip
    return Portfolio(members, names)
