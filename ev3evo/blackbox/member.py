"""The member protocol: what every member of :func:`ev3evo.minimize`'s portfolio implements.

A *member* proposes candidates around the incumbent (the best point so far) and is told what
became of the whole generation. The generation loop (:mod:`ev3evo.blackbox.generations`) knows
members only through this protocol::

    proposal = member.ask(incumbent, generation)   # a Proposal, or None for no candidates
    ...                                            # every member's candidates are evaluated
    member.tell(outcome)                           # an Outcome: the whole generation

A member reports under one or more *part* names (:attr:`Member.names`): the local pool
proposes for ``"gaussian"`` and ``"cauchy"``, the JAX members for each mixed source. Each
proposed row says which part made it (:attr:`Proposal.part`); evaluations and wins are
counted per part.

Members live on the host and keep their state on themselves: they wrap stateful numpy code
(pycma, an archive of evaluated points, numpy generators) or hold the state of a compiled JAX
step between generations. They are created per :func:`ev3evo.minimize` call and never shared.

Example::

    import numpy as np
    from ev3evo.blackbox.member import Outcome, Proposal

    class Centre:
        names = ("centre",)

        def ask(self, incumbent, generation):
            return Proposal(incumbent[None] * 0.5, np.zeros(1, np.int32))

        def tell(self, outcome):
            self.last = outcome.f[outcome.block]

    m = Centre()
    p = m.ask(np.ones(2), 0)
    m.tell(Outcome(p.x, np.array([0.5]), np.ones(1, bool), slice(0, 1), 0, "centre",
                   p.x[0], 0.5))
    assert m.last.tolist() == [0.5]
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np


class Proposal(NamedTuple):
    """A member's candidates for one generation.

    Attributes:
      x: ``(n, D)`` float64 candidates.
      part: ``(n,)`` int, the index in the member's :attr:`~Member.names` of each row's part.
    """

    x: np.ndarray
    part: np.ndarray


class Outcome(NamedTuple):
    """What became of a generation, as every member is told it.

    Attributes:
      x: ``(N, D)`` every candidate of the generation, in evaluation order, clipped into the
        bounds (what ``fun`` saw).
      f: ``(N,)`` their values; NaN where not evaluated (budget spent, non-finite point) or
        where ``fun`` returned NaN.
      evaluated: ``(N,)`` bool, the rows ``fun`` was called on.
      block: this member's rows of ``x`` (a slice; empty when it proposed nothing).
      win: the row that became the new incumbent, ``-1`` when the generation did not improve.
      winner: the part name that proposed it (``None`` when the generation did not improve).
      best_x: the incumbent after this generation, ``(D,)``.
      best_f: its value.
    """

    x: np.ndarray
    f: np.ndarray
    evaluated: np.ndarray
    block: slice
    win: int
    winner: str | None
    best_x: np.ndarray
    best_f: float


class Member(Protocol):
    """A member of the portfolio (see the module docstring)."""

    #: The part names this member reports evaluations and wins under.
    names: tuple[str, ...]

    def ask(self, incumbent: np.ndarray, generation: int) -> Proposal | None:
        """This generation's candidates (``None``: none this generation)."""
        ...

    def tell(self, outcome: Outcome) -> None:
        """Learns from the evaluated generation (its own rows are ``outcome.block``)."""
        ...
