"""ev3evo: EV3 (Ever Evolving Evaluator) meta-optimization on a vectorized JAX population.

Explore with many sources of candidates, assess them with the metrics you care about, adapt
with a statistical safety gate. See README.md for a tour.
"""

from . import losses as losses
from .assess import metrics as metrics
from .assess import stats as stats
from .callbacks import Callback as Callback
from .callbacks import EarlyStopping as EarlyStopping
from .callbacks import JSONLHistory as JSONLHistory
from .callbacks import ProgressBar as ProgressBar
from .explore import biased as biased
from .explore.biased import guided_es as guided_es
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
from .loop import EV3 as EV3
from .loop import EV3State as EV3State
from .loop import StepInfo as StepInfo
from .loop import parse_constraint as parse_constraint
from .run import RunResult as RunResult
from .run import run as run
from .types import Constraint as Constraint
from .types import Feedback as Feedback
from .types import Metric as Metric
from .types import Objective as Objective
from .types import Source as Source

__version__ = "0.1.0"
