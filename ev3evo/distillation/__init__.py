"""Knowledge distillation with EV3: the application behind ``ev3evo.distill`` and ``ev3evo distill``.

One concept per module:

- :mod:`~ev3evo.distillation.options`: every setting, described once (:class:`DistillConfig`);
- :mod:`~ev3evo.distillation.command`: the ``ev3evo distill`` flags, generated from them;
- :mod:`~ev3evo.distillation.pipeline`: the run, :func:`distill` (teacher → EV3 → final check →
  baselines → report);
- :mod:`~ev3evo.distillation.engine`: objectives, tie-break, gate and sources of the engine;
- :mod:`~ev3evo.distillation.grid`: the KD losses, their mixtures, the optimizers, fidelity;
- :mod:`~ev3evo.distillation.sources`: output-layer moves (temperature, class biases);
- :mod:`~ev3evo.distillation.student`: the student and its growth during a run;
- :mod:`~ev3evo.distillation.growth`: function-preserving widen / deepen (Net2Net);
- :mod:`~ev3evo.distillation.models`: the flax nnx MLP, its functional form, checkpoints;
- :mod:`~ev3evo.distillation.teacher`: training (optax) and caching of a teacher;
- :mod:`~ev3evo.distillation.data`, :mod:`~ev3evo.distillation.splits`,
  :mod:`~ev3evo.distillation.files`: datasets, their splits, users' ``.npz``/``.csv`` files;
- :mod:`~ev3evo.distillation.scores`: metric values of a model on a split;
- :mod:`~ev3evo.distillation.final_check`: the end-of-run test of the split gate;
- :mod:`~ev3evo.distillation.resume`: checkpoints and resuming a run;
- :mod:`~ev3evo.distillation.history`: the run's ``history.jsonl`` (steps and events);
- :mod:`~ev3evo.distillation.baselines`: plain KD and a pure evolution strategy;
- :mod:`~ev3evo.distillation.report`: ``summary.json``, the table and the plots.

Example::

    from ev3evo.distillation import DistillConfig, data
    config = DistillConfig(steps=20, baselines=False)
    assert data.load("digits").num_classes == 10 and config.metrics == ("accuracy",)
"""

from .data import DataError as DataError
from .data import Dataset as Dataset
from .models import MLP as MLP
from .models import Functional as Functional
from .options import DistillConfig as DistillConfig
from .pipeline import DistillResult as DistillResult
from .pipeline import distill as distill
