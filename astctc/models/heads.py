"""Heads over the shared encoder: per-frame CTC, and pooled classification."""
from __future__ import annotations

from dataclasses import dataclass

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
        """CTC loss in float32, summed over the batch and divided by the number of targets."""
        loss = F.ctc_loss(
            log_probs.float().transpose(0, 1),
            targets,
            lengths,
            target_lengths,
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        return loss / target_lengths.sum().clamp(min=1)


@dataclass
class ClassifierConfig:
    num_classes: int = 2
    multi_label: bool = False  # sigmoid + BCE instead of softmax + CE
    label_smoothing: float = 0.0
    classes: list[str] | None = None  # names, index = class id


class ClassificationHead(nn.Module):
    """Mean of the CLS tokens (AST averages [CLS] and distillation) -> LayerNorm -> Linear."""

    def __init__(self, cfg: ClassifierConfig, enc: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.layernorm = nn.LayerNorm(enc.embed_dim, eps=enc.layer_norm_eps)
        self.dense = nn.Linear(enc.embed_dim, cfg.num_classes)

    def forward(self, out: EncoderOutput) -> Tensor:
        return self.dense(self.layernorm(out.cls.mean(dim=1))).float()

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.cfg.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.cfg.multi_label else logits.softmax(dim=-1)
