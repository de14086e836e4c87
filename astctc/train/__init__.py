"""Training: `train` runs (or resumes) a configured run, `average_checkpoints` averages its last
checkpoints into a model directory."""
from .loop import (
    OptimConfig,
    TrainConfig,
    Trainer,
    average_checkpoints,
    checkpoints,
    load_checkpoint,
    save_checkpoint,
    train,
)

__all__ = [
    "OptimConfig",
    "TrainConfig",
    "Trainer",
    "average_checkpoints",
    "checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
