"""Knowledge distillation with EV3: data, models, teacher training and function-preserving growth.

Submodules: :mod:`~ev3evo.distill.data` (datasets and loaders), :mod:`~ev3evo.distill.models`
(flax nnx MLP, functional form, checkpoints), :mod:`~ev3evo.distill.teacher` (optax training of
a teacher, cached), :mod:`~ev3evo.distill.growth` (Net2Net widen/deepen).
"""

from .data import DataError as DataError
from .data import Dataset as Dataset
from .models import MLP as MLP
from .models import Functional as Functional
