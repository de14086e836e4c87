"""AdamW with per-depth parameter groups (layer decay), and the warm-up + decay schedule."""

from __future__ import annotations

import math
import re

import torch

from ..models.model import ASTModel
from .config import OptimConfig


def lr_lambda(cfg: OptimConfig, max_steps: int):
    """Step -> factor of the base lr: linear warm-up, then constant, linear or cosine decay to
    final_lr_ratio at max_steps."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
        floor = cfg.final_lr_ratio
        if cfg.schedule == "linear":
            return floor + (1 - floor) * (1 - frac)
        if cfg.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
        raise ValueError(f"unknown schedule {cfg.schedule!r}")

    return fn


def param_groups(model: ASTModel, cfg: OptimConfig) -> list[dict]:
    """AdamW groups: weight decay on weight matrices outside the embeddings; with layer_decay < 1,
    one group per depth with lr scaled by layer_decay^(L+1-depth) (BEiT/AST fine-tuning): depth 0
    = embeddings, i+1 = block i, L+1 = final LayerNorm and heads. Head groups come first, so the
    first group's lr (the one logged) is the base lr. With freeze_encoder_steps, the encoder's
    parameters are in groups of their own ("encoder": True), which warm up again on unfreezing."""
    L = model.cfg.encoder.depth
    if not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"optim.layer_decay must be in (0, 1], not {cfg.layer_decay}")

    def depth(name: str) -> int:
        if cfg.layer_decay == 1.0 or not name.startswith("encoder."):
            return L + 1
        if name.startswith("encoder.embeddings."):
            return 0
        m = re.match(r"encoder\.encoder\.layer\.(\d+)\.", name)
        return int(m[1]) + 1 if m else L + 1

    groups: dict[tuple[int, bool, bool], dict] = {}
    for n, p in model.named_parameters():
        decay = p.ndim >= 2 and "embeddings" not in n
        d = depth(n)
        encoder = cfg.freeze_encoder_steps > 0 and n.startswith("encoder.")
        g = groups.setdefault(
            (d, decay, encoder),
            {
                "params": [],
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr": cfg.lr * cfg.layer_decay ** (L + 1 - d),
                "encoder": encoder,
            },
        )
        g["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[2], -k[0], not k[1]))]


def encoder_lr_lambda(cfg: OptimConfig, max_steps: int):
    """The encoder's factor after a frozen start: 0 while frozen, then the schedule times a new
    linear warm-up over warmup_steps from the unfreezing step. A pretrained encoder meeting the
    full lr at once, with the head's gradients still large, fell to the all-blank output."""
    base = lr_lambda(cfg, max_steps)

    def fn(step: int) -> float:
        since = step - cfg.freeze_encoder_steps
        return 0.0 if since < 0 else base(step) * min(1.0, (since + 1) / max(1, cfg.warmup_steps))

    return fn


def make_optimizer(
    model: ASTModel, cfg: OptimConfig, max_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    groups = param_groups(model, cfg)
    fns = [encoder_lr_lambda(cfg, max_steps) if g.pop("encoder") else lr_lambda(cfg, max_steps) for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=cfg.fused or None)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, fns)
