"""Validation: loss per head, greedy-CTC WER/CER, classifier accuracy or mAP, on the whole set."""

from __future__ import annotations

import logging

import torch

from ..data.pipeline import make_loader
from ..data.shards import IncompleteSetError, loss_report, lost_count
from ..decode import greedy_decode
from ..device import autocast
from ..metrics import accuracy, mean_average_precision, score
from ..models.model import ASTModel
from ..tokenizer import Tokenizer
from .config import TrainConfig, make_featurizer
from .losses import head_losses, loss_weight

log = logging.getLogger(__name__)


@torch.no_grad()
def validate(model: ASTModel, cfg: TrainConfig, tokenizer: Tokenizer | None, device: torch.device) -> dict:
    """{"loss": weighted total, "wer", "cer": of greedy CTC decoding on the transcribed samples,
    "loss_<head>": per head (when there is more than CTC), "acc_<head>" (single-label) or
    "map_<head>" (multi-label): of each classifier on its labelled samples}. Percentages in 0-100."""
    core = getattr(model, "module", model)
    featurizer = make_featurizer(cfg, tokenizer, train=False)
    loader = make_loader(
        cfg.data.valid,
        featurizer,
        cfg.data,
        train=False,
        seed=cfg.seed,
        rank=0,
        world_size=1,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    refs, hyps, sums, dropped, seen = {}, {}, {}, [], 0
    scored: dict[str, tuple[list, list]] = {h: ([], []) for h in core.classifiers}
    for batch in loader:
        dropped += batch.get("dropped", [])
        if "feats" not in batch:
            continue
        seen += len(batch["ids"])
        with autocast(device, cfg.precision):
            out = model(batch["feats"].to(device, non_blocking=True), batch["lengths"])
        for name, part in head_losses(model, out, batch, device).items():
            n = int(batch["target_lengths"].sum()) if name == "ctc" else int(batch["label_mask"][name].sum())
            total, count = sums.get(name, (0.0, 0))
            sums[name] = (total + float(part) * n, count + n)
        if core.ctc is not None:
            texts = greedy_decode(out["log_probs"], out["lengths"], tokenizer)
            for i, h, ref, n in zip(batch["ids"], texts, batch["texts"], batch["target_lengths"].tolist()):
                if n > 0:
                    hyps[i], refs[i] = h, ref
        for name, mask in batch.get("label_mask", {}).items():
            scored[name][0].append(batch["labels"][name][mask])
            scored[name][1].append(out[name][mask.to(out[name].device)].float().cpu())
    model.train()
    lost = loss_report(seen, dropped, loader.dataset.source.num_samples)
    if lost is not None:
        if not cfg.data.allow_missing:
            raise IncompleteSetError(
                f"validation set {cfg.data.valid}: {lost}; the checkpoint is written: repair the set, "
                "or set data.allow_missing=true to validate on what can be read, and run again to resume"
            )
        log.warning("validation set %s: %s (data.allow_missing)", cfg.data.valid, lost)
    mean = {name: total / max(count, 1) for name, (total, count) in sums.items()}
    figures = {"loss": sum(loss_weight(cfg.loss_weights, n) * v for n, v in mean.items())}
    if refs:
        report = score(refs, hyps)
        figures["wer"], figures["cer"] = report.wer, report.cer
    if len(mean) > 1 or core.ctc is None:
        figures.update({f"loss_{n}": v for n, v in mean.items()})
    for name, (targets, logits) in scored.items():
        if not targets:
            continue
        y, z = torch.cat(targets), torch.cat(logits)
        if core.classifiers[name].cfg.multi_label:
            figures[f"map_{name}"] = 100 * mean_average_precision(y.numpy(), torch.sigmoid(z).numpy())
        else:
            figures[f"acc_{name}"] = 100 * accuracy(y.argmax(1).numpy(), z.argmax(1).numpy())
    if dropped:
        figures["dropped"] = lost_count(dropped)
    return figures
