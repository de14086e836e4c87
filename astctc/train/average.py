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
from .checkpoint import check_weights_fit, checkpoints, load_checkpoint
from .config import TrainConfig

log = logging.getLogger("astctc.train")


def average_checkpoints(exp_dir: str | Path, last: int = 5, out_dir: str | Path | None = None) -> Path:
    """Mean of the model weights of the last `last` checkpoints -> a model directory
    (exp_dir/model unless out_dir), with averaged.txt naming the checkpoints. The model is the
    newest checkpoint's config; a checkpoint whose weights do not fit it is an error naming it
    (load_checkpoint already refuses one that is not a checkpoint or holds NaN)."""
    exp = Path(exp_dir)
    ckpts = checkpoints(exp)[-last:]
    if not ckpts:
        raise FileNotFoundError(f"{exp}: no checkpoints in {exp / 'ckpt'}")
    cfg, model = _model_of(ckpts[-1])
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    avg: dict[str, torch.Tensor] = {}
    for p in ckpts:
        sd = load_checkpoint(p)["model"]
        check_weights_fit(p, sd, shapes)
        for k, v in sd.items():
            avg[k] = avg.get(k, 0) + v.double() / len(ckpts)
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in avg.items()})
    out = Path(out_dir) if out_dir else exp / "model"
    model.save(out, cfg.features, load_tokenizer(cfg.data.tokenizer) if cfg.model.ctc is not None else None)
    (out / "averaged.txt").write_text("\n".join(str(p) for p in ckpts) + "\n")
    log.info("averaged %d checkpoints (%s .. %s) -> %s", len(ckpts), ckpts[0].name, ckpts[-1].name, out)
    return out


def _model_of(path: Path) -> tuple[TrainConfig, ASTModel]:
    """The run's config saved in a checkpoint, and a model built from it."""
    try:
        cfg = from_dict(TrainConfig, load_checkpoint(path)["config"])
        return cfg, ASTModel(cfg.model)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its config does not build a model ({e.args[0] if e.args else e})") from None
