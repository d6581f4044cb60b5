"""ev3evo: EV3 (Ever Evolving Evaluator) meta-optimization on a vectorized JAX population.

Explore with many sources of candidates, assess them with the metrics you care about, adapt
with a statistical safety gate. See README.md for a tour.

Example::

    import jax, jax.numpy as jnp, ev3evo
    score = ev3evo.metrics.per_example("score", lambda p, b: -jnp.sum((p["w"] - 1.0) ** 2) + 0 * b)
    engine = ev3evo.EV3([ev3evo.gaussian(8, sigma=0.2)], [score])
    result = ev3evo.run(engine, jax.random.key(0), {"w": jnp.zeros(2)}, jnp.zeros(4),
                        jnp.zeros(4), steps=10)
    assert result.history[-1]["current"]["score"] > -2.0
"""

from . import interrupts as interrupts

if interrupts.running_the_command():
    # The ev3evo command defers SIGINT/SIGTERM before the imports below (seconds of them):
    # a Ctrl-C there is then reported in one line instead of a traceback.
    interrupts.defer_for_command()

from . import losses as losses
from . import parallel as parallel
from .adapt.allocation import Allocation as Allocation
from .adapt.gate import Gate as Gate
from .assess import metrics as metrics
from .assess import stats as stats
from .assess.host import host_metric as host_metric
from .assess.objectives import parse_constraint as parse_constraint
from .assess.objectives import parse_objective as parse_objective
from .assess.population import dense_population_logits as dense_population_logits
from .assess.population import with_population_rule as with_population_rule
from .callbacks import Callback as Callback
from .callbacks import EarlyStopping as EarlyStopping
from .callbacks import JSONLHistory as JSONLHistory
from .callbacks import ProgressBar as ProgressBar
from .callbacks import TensorBoard as TensorBoard
from .explore import biased as biased
from .explore.biased import guided_es as guided_es
from .explore.chain import gradient_chain as gradient_chain
from .explore.gradient import gradient_rollouts as gradient_rollouts
from .explore.mix import MixState as MixState
from .explore.mix import mix as mix
from .explore.mutation import cauchy as cauchy
from .explore.mutation import cauchy_mutation as cauchy_mutation
from .explore.mutation import gaussian as gaussian
from .explore.mutation import gaussian_mutation as gaussian_mutation
from .explore.mutation import mutation as mutation
from .explore.mutation import per_layer as per_layer
from .explore.mutation import per_layer_mutation as per_layer_mutation
from .explore.mutation import sparse as sparse
from .explore.mutation import sparse_mutation as sparse_mutation
from .explore.stateful import Stateful as Stateful
from .explore.stateful import on_params as on_params
from .loop import EV3 as EV3
from .loop import EV3State as EV3State
from .loop import StepInfo as StepInfo
from .run import RunError as RunError
from .run import RunResult as RunResult
from .run import run as run
from .types import Constraint as Constraint
from .types import Evaluation as Evaluation
from .types import Feedback as Feedback
from .types import Metric as Metric
from .types import Objective as Objective
from .types import Pickled as Pickled
from .types import Source as Source


def _installed_version() -> str:
    """The version pip installed (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ev3evo")
    except PackageNotFoundError:  # imported from a source tree that is not installed
        return "0+unknown"


__version__ = _installed_version()


# Names whose modules import evosax, nevergrad or flax are loaded on first use: those imports
# are slow, and evosax creates arrays at import time, which starts the JAX backend and would
# make ``jax.distributed.initialize`` (multi-host runs) impossible after ``import ev3evo``.
_LAZY = {
    "DistributionState": ".explore.evosax",
    "EvosaxState": ".explore.evosax",
    "MultiMeanState": ".explore.evosax",
    "PopulationState": ".explore.evosax",
    "RestartState": ".explore.evosax",
    "evosax_mean": ".explore.evosax",
    "evosax_source": ".explore.evosax",
    "NevergradState": ".explore.nevergrad",
    "nevergrad_close": ".explore.nevergrad",
    "nevergrad_dump": ".explore.nevergrad",
    "nevergrad_load": ".explore.nevergrad",
    "nevergrad_optimizer": ".explore.nevergrad",
    "nevergrad_source": ".explore.nevergrad",
    "RestartSchedule": ".explore.evosax",
    "bipop": ".explore.evosax",
    "ipop": ".explore.evosax",
    "MinimizeResult": ".blackbox",
    "minimize": ".blackbox",
    "DistillConfig": ".distillation.options",
    "DistillResult": ".distillation.pipeline",
    "distill": ".distillation.pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ev3evo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
