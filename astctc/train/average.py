"""Checkpoint averaging: the mean of a run's last model weights, saved as a model directory.

The AST paper averages the weights of its last epochs; for CTC this is a cheap, reliable gain
over the final checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import from_dict
from ..models.model import ASTModel
from ..tokenizer import load_tokenizer
from .checkpoint import checkpoints, load_checkpoint
from .config import TrainConfig

log = logging.getLogger("astctc.train")


def average_checkpoints(exp_dir: str | Path, last: int = 5, out_dir: str | Path | None = None) -> Path:
    """Mean of the model weights of the last `last` checkpoints -> a model directory
    (exp_dir/model unless out_dir), with averaged.txt naming the checkpoints."""
    exp = Path(exp_dir)
    ckpts = checkpoints(exp)[-last:]
    if not ckpts:
        raise FileNotFoundError(f"{exp}: no checkpoints in {exp / 'ckpt'}")
    avg: dict[str, torch.Tensor] = {}
    for p in ckpts:
        sd = load_checkpoint(p)["model"]
        for k, v in sd.items():
            avg[k] = avg.get(k, 0) + v.double() / len(ckpts)
    last_state = load_checkpoint(ckpts[-1])
    cfg = from_dict(TrainConfig, last_state["config"])
    model = ASTModel(cfg.model)
    sd = {k: v.to(model.state_dict()[k].dtype) for k, v in avg.items()}
    model.load_state_dict(sd)
    out = Path(out_dir) if out_dir else exp / "model"
    model.save(out, cfg.features, load_tokenizer(cfg.data.tokenizer) if cfg.model.ctc is not None else None)
    (out / "averaged.txt").write_text("\n".join(str(p) for p in ckpts) + "\n")
    log.info("averaged %d checkpoints (%s .. %s) -> %s", len(ckpts), ckpts[0].name, ckpts[-1].name, out)
    return out
