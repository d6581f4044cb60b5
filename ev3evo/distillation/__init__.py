"""Knowledge distillation with EV3: the application behind ``ev3evo.distill`` and ``ev3evo distill``.

One concept per module:

- :mod:`~ev3evo.distillation.options`: every setting, described once (:class:`DistillConfig`);
- :mod:`~ev3evo.distillation.command`: the ``ev3evo distill`` flags, generated from them;
- :mod:`~ev3evo.distillation.config_file`: settings read from a TOML or JSON file, or a
  run's ``summary.json`` (``--config``, :func:`load_config`);
- :mod:`~ev3evo.distillation.pipeline`: the run, :func:`distill` (teacher → EV3 → final check →
  certified student → baselines → report);
- :mod:`~ev3evo.distillation.inputs`: what the front door was given (the user's student,
  teacher, data), checked against each other before any training;
- :mod:`~ev3evo.distillation.engine`: objectives, tie-break, gate and sources of the engine;
- :mod:`~ev3evo.distillation.grid`: the KD losses, their mixtures, the optimizers, fidelity;
- :mod:`~ev3evo.distillation.sources`: output-layer moves (temperature, class biases);
- :mod:`~ev3evo.distillation.head`: the calibration head they act on, folded in at the end;
- :mod:`~ev3evo.distillation.student`: any nnx student as pure functions of an
  :class:`ev3evo.Stateful` (parameters explored, other state carried; train and eval modes);
- :mod:`~ev3evo.distillation.nnx_state`: an nnx model as plain arrays and back;
- :mod:`~ev3evo.distillation.growing`: growing the student when the run stalls;
- :mod:`~ev3evo.distillation.growth`, :mod:`~ev3evo.distillation.growth_conv`:
  function-preserving widen / deepen (Net2Net) of MLPs and CNNs, residual blocks;
- :mod:`~ev3evo.distillation.models`: the built-in nnx MLP and CNN, their specs, their
  functional form; :mod:`~ev3evo.distillation.checkpoints`: checkpoints of any nnx model;
- :mod:`~ev3evo.distillation.teacher`: training (optax) and caching of a built-in teacher;
  :mod:`~ev3evo.distillation.teachers`: the teacher's logits, whatever the teacher is;
- :mod:`~ev3evo.distillation.data`, :mod:`~ev3evo.distillation.splits`,
  :mod:`~ev3evo.distillation.files`: datasets (digits, hard, mnist1d), their splits, users'
  arrays and ``.npz``/``.csv`` files;
- :mod:`~ev3evo.distillation.scores`: metric values of a model on a split;
- :mod:`~ev3evo.distillation.final_check`: the end-of-run test of the split gate;
- :mod:`~ev3evo.distillation.resume`: checkpoints and resuming a run;
- :mod:`~ev3evo.distillation.history`: the run's ``history.jsonl`` (steps and events);
- :mod:`~ev3evo.distillation.baselines`: plain KD and a pure evolution strategy;
- :mod:`~ev3evo.distillation.report`: ``summary.json``, the table and the plots;
  :mod:`~ev3evo.distillation.outputs`: where they are written.

Example::

    from ev3evo.distillation import DistillConfig, data
    config = DistillConfig(steps=20, baselines=False)
    assert data.load("digits").num_classes == 10 and config.metrics == ("accuracy",)
"""

from .config_file import load_config as load_config
from .data import DataError as DataError
from .data import Dataset as Dataset
from .head import Calibrated as Calibrated
from .models import CNN as CNN
from .models import MLP as MLP
from .models import Functional as Functional
from .options import DistillConfig as DistillConfig
from .pipeline import DistillResult as DistillResult
from .pipeline import distill as distill
from .student import Student as Student
