"""The loss of each head on a batch, and how the heads' losses and a step's batches are weighted."""

from __future__ import annotations

import torch

from ..models.heads import CTCHead
from ..models.model import ASTModel


def head_losses(model: ASTModel, out: dict, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """Loss of each head over the samples that have its target: "ctc" over those with a
    transcript (per target token), a classifier over those with its label (mean). A head
    with no target in the batch is absent: it adds no loss and no gradient.

    Which samples take part is decided on the CPU, from the batch's lengths and masks (the
    loader's tensors), so the host never waits for the device here."""
    core = getattr(model, "module", model)  # under a DDP wrapper
    parts: dict[str, torch.Tensor] = {}
    if core.ctc is not None and "target_lengths" in batch:
        targets = batch["targets"].to(device, non_blocking=True)
        tl = batch["target_lengths"]
        frames = core.cfg.encoder.time_columns(batch["lengths"])  # CTC frames per utterance, CPU
        has = tl > 0
        if bool(has.all()):
            parts["ctc"] = CTCHead.loss(out["log_probs"], frames, targets, tl)
        elif bool(has.any()):  # targets holds only the transcribed samples' tokens already
            idx = has.nonzero().squeeze(1)
            log_probs = out["log_probs"].index_select(0, idx.to(device, non_blocking=True))
            parts["ctc"] = CTCHead.loss(log_probs, frames[idx], targets, tl[idx])
    for name, head in core.classifiers.items():
        if name in batch.get("labels", {}):
            part = head.loss(out[name], batch["labels"][name].to(device), batch["label_mask"][name])
            if part is not None:
                parts[name] = part
    return parts


def loss_weight(loss_weights: dict[str, float], head: str) -> float:
    return loss_weights.get(head, 1.0)


def weighted_loss(parts: dict[str, torch.Tensor], loss_weights: dict[str, float]) -> torch.Tensor | None:
    """The heads' losses, weighted and summed; None if no head has a target."""
    if not parts:  # cannot happen with the Featurizer (it drops samples without any target)
        return None
    return sum(loss_weight(loss_weights, name) * part for name, part in parts.items())


def batch_weight(batch: dict) -> float:
    """A batch's share of a step's loss: its CTC target tokens, or its utterances without them."""
    n = int(batch["target_lengths"].sum()) if "target_lengths" in batch else 0
    return float(n if n > 0 else len(batch["ids"]))
