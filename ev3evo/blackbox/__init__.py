"""Black-box minimization: :func:`ev3evo.minimize`, EV3's explore → assess → adapt on a vector.

A black-box objective ``f: R^D -> R`` has no per-example scores, and for a deterministic ``f``
re-evaluating the incumbent every step would only waste budget, so ``minimize`` does not go
through :class:`ev3evo.EV3`'s statistical gate. It runs a portfolio of members in a host loop,
one generation at a time (:mod:`~ev3evo.blackbox.generations`): every member proposes
candidates around the incumbent (explore), they are evaluated in one batch within the budget
(assess), the best one becomes the incumbent when it improves on it and every member is told
the generation (adapt).

The default portfolio, ``("lq_cma", "model", "gaussian", "cauchy")``, runs on the host in
numpy and compiles nothing:

* ``lq_cma``: pycma's CMA-ES with IPOP restarts whose generations a global linear-quadratic
  surrogate screens, as in lq-CMA-ES (:mod:`~ev3evo.blackbox.screened`,
  :mod:`~ev3evo.blackbox.surrogate`): the candidates are evaluated best-ranked first, and once
  the model's ranking agrees with the true values (Kendall's tau) the rest of the generation
  is ranked by the model; its minimizer is injected into the next generation. ``"cma"``
  (plain IPOP, the first run with twice pycma's default population) and ``"cma_bipop"``
  (BIPOP) instead (:mod:`~ev3evo.blackbox.host_cma`);
* ``model``: a quadratic surrogate fitted to the best points seen, whose minimizer is one
  extra candidate per generation (:mod:`~ev3evo.blackbox.model`);
* ``gaussian``, ``cauchy``: mutations of the incumbent with a 1/5th-success-rule step size,
  sharing a pool of slots paid by how fast it lowers the best value per evaluation against
  the rest of the portfolio, split between them by
  :func:`ev3evo.adapt.allocation.counts_from_credit` (:mod:`~ev3evo.blackbox.local`).

With ``noise=True`` (:mod:`~ev3evo.blackbox.noise`) the incumbent (the centre of the
mutations and the returned point) changes only when a challenger wins a paired test on
re-evaluations.

JAX members (``"cma_evosax"``, ``"de"``, any :class:`~ev3evo.Source`) are mixed with
:func:`ev3evo.mix` into one compiled step (:mod:`~ev3evo.blackbox.device`). Every member
implements one small protocol (:mod:`~ev3evo.blackbox.member`).

Modules: ``front`` (the front door), ``objective`` (how ``fun`` is called), ``checks``
(argument checks), ``result`` (:class:`MinimizeResult`), ``portfolio`` (``sources=`` to
members), ``generations`` (the loop), ``member`` (the protocol), ``noise`` (the noisy
incumbent), ``host_cma``, ``screened``, ``surrogate``, ``model``, ``local``, ``device`` (the
members and what they use). A measured account of the design is in
``docs/blackbox.md``.

Example::

    import numpy as np, ev3evo
    from ev3evo.blackbox import SOURCE_NAMES
    res = ev3evo.minimize(lambda x: float(np.sum((x - 1.0) ** 2)), np.zeros(3), budget=600)
    assert res.fun < 1e-6 and res.nfev <= 600 and "lq_cma" in SOURCE_NAMES

References: Ding et al., "EV3: Ever Evolving Evaluator", arXiv 2310.18893 (2023); Auger &
Hansen, "A restart CMA evolution strategy with increasing population size", CEC 2005; Hansen,
"Benchmarking a BI-population CMA-ES on the BBOB-2009 function testbed", GECCO 2009; Hansen,
"A global surrogate assisted CMA-ES", GECCO 2019.
"""

from .front import minimize as minimize
from .host_cma import HostCMA as HostCMA
from .local import LocalSearch as LocalSearch
from .member import Member as Member
from .member import Outcome as Outcome
from .member import Proposal as Proposal
from .model import QuadraticModel as QuadraticModel
from .noise import NoisyIncumbent as NoisyIncumbent
from .objective import is_jax_function as is_jax_function
from .portfolio import DEFAULT_SOURCES as DEFAULT_SOURCES
from .portfolio import SOURCE_NAMES as SOURCE_NAMES
from .result import STATUSES as STATUSES
from .result import MinimizeResult as MinimizeResult
from .screened import ScreenedCMA as ScreenedCMA
from .surrogate import LQSurrogate as LQSurrogate
