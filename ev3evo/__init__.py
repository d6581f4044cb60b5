"""ev3evo: EV3 (Ever Evolving Evaluator) meta-optimization on a vectorized JAX population.

Explore with many sources of candidates, assess them with the metrics you care about, adapt
with a statistical safety gate. See README.md for a tour.
"""

from . import losses as losses
from . import parallel as parallel
from .assess import metrics as metrics
from .assess import stats as stats
from .assess.host import host_metric as host_metric
from .callbacks import Callback as Callback
from .callbacks import EarlyStopping as EarlyStopping
from .callbacks import JSONLHistory as JSONLHistory
from .callbacks import ProgressBar as ProgressBar
from .explore import biased as biased
from .explore.biased import guided_es as guided_es
from .explore.evosax import EvosaxState as EvosaxState
from .explore.evosax import evosax_mean as evosax_mean
from .explore.evosax import evosax_source as evosax_source
from .explore.gradient import gradient_rollouts as gradient_rollouts
from .explore.mix import Mixed as Mixed
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
from .explore.nevergrad import NevergradState as NevergradState
from .explore.nevergrad import nevergrad_close as nevergrad_close
from .explore.nevergrad import nevergrad_dump as nevergrad_dump
from .explore.nevergrad import nevergrad_load as nevergrad_load
from .explore.nevergrad import nevergrad_optimizer as nevergrad_optimizer
from .explore.nevergrad import nevergrad_source as nevergrad_source
from .explore.restart import RestartSchedule as RestartSchedule
from .explore.restart import bipop as bipop
from .explore.restart import ipop as ipop
from .loop import EV3 as EV3
from .loop import EV3State as EV3State
from .loop import StepInfo as StepInfo
from .loop import parse_constraint as parse_constraint
from .minimize import MinimizeResult as MinimizeResult
from .minimize import minimize as minimize
from .run import RunResult as RunResult
from .run import run as run
from .types import Constraint as Constraint
from .types import Feedback as Feedback
from .types import Metric as Metric
from .types import Objective as Objective
from .types import Source as Source

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``ev3evo.distill_run`` (the distillation pipeline) imports flax; load it on first use.
    if name == "distill_run":
        from .distill.pipeline import distill

        return distill
    raise AttributeError(f"module 'ev3evo' has no attribute {name!r}")
