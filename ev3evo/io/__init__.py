"""Input/output: checkpoints (atomic, versioned, fingerprinted) for exact resume."""

from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import Checkpointer as Checkpointer
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import CheckpointWarning as CheckpointWarning
from .checkpoint import fingerprint as fingerprint
from .checkpoint import list_checkpoints as list_checkpoints
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import read_checkpoint as read_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
