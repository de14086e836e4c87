"""Training: `train` runs (or resumes) a configured run, `average_checkpoints` averages its last
checkpoints into a model directory.

  config.py       OptimConfig, TrainConfig
  loop.py         train, Trainer: the loop, top to bottom
  losses.py       each head's loss, and how heads and batches are weighted
  optim.py        AdamW parameter groups (layer decay), the lr schedule
  checkpoint.py   checkpoint files and the RNG state that makes resume exact
  distributed.py  torchrun: process group, DDP, collectives
  validate.py     validation loss, WER/CER, accuracy/mAP
  logbook.py      metrics.jsonl, TensorBoard, curves.png
  average.py      checkpoint averaging
  init_check.py   `astctc init-check`: what a run's init would load, without training
"""

from .average import average_checkpoints
from .checkpoint import checkpoints, load_checkpoint, save_checkpoint
from .config import OptimConfig, TrainConfig
from .loop import Trainer, train

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
