"""Heads over the shared encoder: per-frame CTC, and pooled classification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import EncoderConfig, EncoderOutput


@dataclass
class CTCHeadConfig:
    vocab_size: int = 0  # set from the tokenizer at training time
    combine: str = "concat"  # how the F' patches of a time column become one frame: concat|mean
    dropout: float = 0.1


class CTCHead(nn.Module):
    """Per time column: combine its F' patch tokens, project to the vocabulary (blank = 0)."""

    def __init__(self, cfg: CTCHeadConfig, enc: EncoderConfig):
        super().__init__()
        if cfg.vocab_size < 2:
            raise ValueError("CTC head needs vocab_size >= 2 (blank + at least one token)")
        if cfg.combine not in ("concat", "mean"):
            raise ValueError(f"ctc.combine must be concat or mean, not {cfg.combine!r}")
        self.cfg = cfg
        width = enc.embed_dim * (enc.freq_rows if cfg.combine == "concat" else 1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(width, cfg.vocab_size)

    def forward(self, out: EncoderOutput) -> tuple[Tensor, Tensor]:
        """-> (log-probabilities (B, T', V) in float32, lengths (B,))."""
        grid = out.grid()  # (B, F', T', D)
        if self.cfg.combine == "concat":
            B, Fr, T, D = grid.shape
            frames = grid.permute(0, 2, 1, 3).reshape(B, T, Fr * D)
        else:
            frames = grid.mean(dim=1)
        logits = self.proj(self.dropout(frames))
        return logits.float().log_softmax(dim=-1), out.columns

    @staticmethod
    def loss(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
        """CTC loss in float32, summed over the batch and divided by the number of targets.

        Lengths are best given on the CPU (torch reads them there; CUDA ones are copied back).
        The data pipeline drops utterances CTC cannot align (Featurizer, "infeasible"), so
        `zero_infinity` is only a guard here, not a silent filter."""
        loss = F.ctc_loss(
            log_probs.float().transpose(0, 1),
            targets,
            lengths,
            target_lengths,
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        return loss / target_lengths.sum().clamp(min=1)  # a CPU scalar: no copy to wait for


@dataclass
class ClassifierConfig:  # also the data pipeline's LabelSpec (num_classes, multi_label, classes)
    num_classes: int = 0  # 0: len(classes) (from `classes` or `labels_file`)
    multi_label: bool = False  # sigmoid + BCE instead of softmax + CE
    label_smoothing: float = 0.0  # single-label only (CE's label_smoothing)
    classes: list[str] | None = None  # names, index = class id
    labels_file: str | None = None  # one class name a line (written by a prepare step) -> classes
    # cls: the [CLS] token(s), as AST; mean: the mean of the valid patch tokens, which needs no
    # token to learn to gather the clip and trains faster from scratch on small data
    pool: str = "cls"

    def resolve(self, name: str = "classifier") -> "ClassifierConfig":
        """Fill `classes` from `labels_file` and `num_classes` from `classes`; check they agree."""
        if self.labels_file:
            listed = [s.strip() for s in Path(self.labels_file).read_text(encoding="utf-8").splitlines() if s.strip()]
            if self.classes is not None and list(self.classes) != listed:
                raise ValueError(f"head {name}: classes differ from {self.labels_file}")
            self.classes = listed
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"head {name}: duplicate class names")
            if self.num_classes and self.num_classes != len(self.classes):
                raise ValueError(f"head {name}: num_classes {self.num_classes} but {len(self.classes)} classes listed")
            self.num_classes = len(self.classes)
        if self.num_classes < 1:
            raise ValueError(f"head {name}: set num_classes, classes or labels_file")
        return self


class ClassificationHead(nn.Module):
    """Mean of the CLS tokens (AST averages [CLS] and distillation) -> LayerNorm -> Linear."""

    def __init__(self, cfg: ClassifierConfig, enc: EncoderConfig):
        super().__init__()
        if cfg.num_classes < 1 and cfg.classes:
            cfg.num_classes = len(cfg.classes)
        if cfg.num_classes < 1:
            raise ValueError("classification head needs num_classes >= 1 (or classes)")
        if cfg.pool not in ("cls", "mean"):
            raise ValueError(f"classifier pool must be cls or mean, not {cfg.pool!r}")
        if cfg.pool == "cls" and enc.num_cls_tokens == 0:
            raise ValueError("classifier pool cls needs a class token (the encoder has none): use pool mean")
        self.cfg = cfg
        self.layernorm = nn.LayerNorm(enc.embed_dim, eps=enc.layer_norm_eps)
        self.dense = nn.Linear(enc.embed_dim, cfg.num_classes)

    def forward(self, out: EncoderOutput) -> Tensor:
        if self.cfg.pool == "mean":
            grid = out.grid()  # (B, F', T', D); columns past an utterance's length are padding
            valid = torch.arange(grid.shape[2], device=grid.device)[None, :] < out.columns[:, None]
            w = valid.to(grid.dtype)[:, None, :, None]
            pooled = (grid * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * grid.shape[1]).clamp(min=1)
        else:
            pooled = out.cls.mean(dim=1)
        return self.dense(self.layernorm(pooled)).float()

    def loss(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor | None:
        """Mean loss over the samples that have a target (`mask`, default all).

        `target`: class ids (B,), or (B, C) probabilities (one-hot, multi-hot, mixup-mixed).
        Returns None when no sample has a target: the head then adds no loss and no gradient
        (its parameters keep grad None, so AdamW neither moves nor decays them this step).
        """
        if mask is not None:
            mask = mask.cpu()  # the loop passes the loader's CPU mask: no device sync
            if not bool(mask.any()):
                return None
            if not bool(mask.all()):
                keep = mask.nonzero().squeeze(1).to(logits.device)
                logits, target = logits.index_select(0, keep), target.index_select(0, keep.to(target.device))
        if self.cfg.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        if target.is_floating_point():
            target = target.float()
        return F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.cfg.multi_label else logits.softmax(dim=-1)
