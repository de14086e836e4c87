"""An AST encoder with named heads, and its self-contained directory format.

A model directory holds everything needed to turn audio into text or labels:
  config.json         the ModelConfig (encoder, heads)
  features.json       the FeatureConfig the model was trained with
  model.safetensors   the weights
  chars.txt | tokenizer.model   the tokenizer, when there is a CTC head
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import from_dict, to_dict
from ..device import resolve_device
from ..features import FeatureConfig
from ..tokenizer import Tokenizer, load_tokenizer
from .encoder import ASTEncoder, EncoderConfig
from .heads import ClassificationHead, ClassifierConfig, CTCHead, CTCHeadConfig


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    ctc: CTCHeadConfig | None = field(default_factory=CTCHeadConfig)
    classifiers: dict[str, ClassifierConfig] = field(default_factory=dict)


class ASTModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ASTEncoder(cfg.encoder)
        self.ctc = CTCHead(cfg.ctc, cfg.encoder) if cfg.ctc is not None else None
        self.classifiers = nn.ModuleDict(
            {name: ClassificationHead(c, cfg.encoder) for name, c in cfg.classifiers.items()}
        )

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """-> {"log_probs", "lengths"} for CTC and {head name: logits} for classifiers."""
        out = self.encoder(feats, lengths)
        result: dict[str, Tensor] = {}
        if self.ctc is not None:
            result["log_probs"], result["lengths"] = self.ctc(out)
        for name, head in self.classifiers.items():
            result[name] = head(out)
        return result

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- directory format -------------------------------------------------------------

    def save(
        self,
        directory: str | Path,
        features: FeatureConfig,
        tokenizer: Tokenizer | None = None,
        state_dict: dict[str, Tensor] | None = None,
    ) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(to_dict(self.cfg), indent=2))
        (d / "features.json").write_text(json.dumps(to_dict(features), indent=2))
        sd = state_dict if state_dict is not None else self.state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
        if tokenizer is not None:
            tokenizer.save(d)
        return d


@dataclass
class LoadedModel:
    model: ASTModel
    features: FeatureConfig
    tokenizer: Tokenizer | None
    device: torch.device

    @property
    def frame_seconds(self) -> float:
        """Seconds of audio per CTC output frame."""
        return self.model.cfg.encoder.frame_seconds(self.features.frame_shift_ms)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by `ASTModel.save` (or `astctc average`) onto `device`
    ("auto": CUDA when there is one, else the CPU)."""
    from safetensors.torch import load_file

    d = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d}: not a model directory (missing {name})")
    cfg = from_dict(ModelConfig, json.loads((d / "config.json").read_text()))
    feats = FeatureConfig()
    if (d / "features.json").exists():
        feats = from_dict(FeatureConfig, json.loads((d / "features.json").read_text()))
    model = ASTModel(cfg)
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    tokenizer = load_tokenizer(d) if cfg.ctc is not None else None
    if tokenizer is not None and tokenizer.vocab_size != cfg.ctc.vocab_size:
        raise ValueError(f"{d}: tokenizer has {tokenizer.vocab_size} tokens but the CTC head {cfg.ctc.vocab_size}")
    device = resolve_device(device) if isinstance(device, str) else device
    return LoadedModel(model.to(device).eval(), feats, tokenizer, device)
