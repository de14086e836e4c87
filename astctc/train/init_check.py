"""`astctc init-check`: what `astctc train` would load, adapt and leave new from its `init:`
weights, without training."""

from __future__ import annotations

import torch

from ..config import load_config
from ..models.model import ASTModel
from ..models.pretrained import InitReport, init_from_pretrained, load_source
from ..tokenizer import load_tokenizer
from .config import TrainConfig


def init_check(config_path: str | None, overrides: list[str], spec: str | None = None) -> InitReport:
    """The InitReport of initialising the configured model from `spec` (default: the config's init)."""
    cfg = load_config(TrainConfig, config_path, overrides)
    spec = spec or cfg.init
    if not spec:
        raise ValueError("nothing to check: give --init or set init: in the config")
    src = load_source(spec)  # fails fast (hub, offline) before building a large model
    note = None
    if cfg.model.ctc is not None:
        try:
            cfg.model.ctc.vocab_size = load_tokenizer(cfg.data.tokenizer).vocab_size
        except (FileNotFoundError, ValueError, OSError):
            cfg.model.ctc = None
            note = f"no tokenizer at {cfg.data.tokenizer}: CTC head left out (it is new in any case)"
    torch.manual_seed(cfg.seed)
    report = init_from_pretrained(ASTModel(cfg.model), src, cfg.init_kernel_resize, cfg.features)
    if note:
        report.notes.append(note)
    return report
