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
from ..features import FeatureConfig, check_features
from ..hub import resolve_model
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


def _read_json_config(cls, path: Path):
    """A dataclass from a JSON file; ValueError naming the file for anything that is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 JSON file (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        return from_dict(cls, data)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e.args[0] if e.args else e}") from None


def _read_weights(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        size = path.stat().st_size
        raise ValueError(
            f"{path}: cannot read the weights ({e}; {size} bytes): truncated or not a safetensors file"
        ) from None
    # NaN weights output NaN: greedy decoding would print "" for every file, with exit 0
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ValueError(f"{path}: tensor {bad} holds NaN or infinite values: the model cannot be used")
    return state


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by `ASTModel.save` (or `astctc average`) onto `device`
    ("auto": CUDA when there is one, else the CPU). `directory` may be `hf://org/name[@revision]`."""
    d = resolve_model(directory)
    for name in ("config.json", "model.safetensors"):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d}: not a model directory (missing {name})")
    if not (d / "features.json").exists():
        # every directory ASTModel.save (train, average) writes has one; without it the
        # features would silently be the defaults, not those the model was trained with
        raise FileNotFoundError(
            f"{d / 'features.json'}: missing: the model directory does not say which features it "
            "was trained with (ASTModel.save writes features.json; copy the training run's)"
        )
    cfg = _read_json_config(ModelConfig, d / "config.json")
    feats = _read_json_config(FeatureConfig, d / "features.json")
    try:
        check_features(feats, prefix="")
    except ValueError as e:
        raise ValueError(f"{d / 'features.json'}: {e}") from None
    if feats.num_mel_bins != cfg.encoder.num_mel_bins:
        raise ValueError(
            f"{d / 'features.json'}: num_mel_bins {feats.num_mel_bins} but the encoder of config.json "
            f"takes {cfg.encoder.num_mel_bins}"
        )
    try:
        model = ASTModel(cfg)
    except ValueError as e:
        raise ValueError(f"{d / 'config.json'}: {e}") from None
    state = _read_weights(d / "model.safetensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # names every tensor: many lines
        first = str(e).strip().splitlines()
        why = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise ValueError(f"{d / 'model.safetensors'}: the weights do not fit config.json ({why[:300]})") from None
    tokenizer = load_tokenizer(d) if cfg.ctc is not None else None
    if tokenizer is not None and tokenizer.vocab_size != cfg.ctc.vocab_size:
        raise ValueError(f"{d}: tokenizer has {tokenizer.vocab_size} tokens but the CTC head {cfg.ctc.vocab_size}")
    device = resolve_device(device) if isinstance(device, str) else device
    return LoadedModel(model.to(device).eval(), feats, tokenizer, device)
