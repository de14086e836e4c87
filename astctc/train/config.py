"""What a training run is told: the optimiser's settings (OptimConfig) and the run's (TrainConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.pipeline import DataConfig, Featurizer
from ..device import PRECISIONS
from ..features import FeatureConfig
from ..models.model import ModelConfig


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    schedule: str = "cosine"  # cosine | linear | constant (after warm-up)
    final_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    layer_decay: float = 1.0  # < 1: block i of L gets lr*d^(L-i), embeddings lr*d^(L+1), heads lr
    freeze_encoder_steps: int = 0  # encoder gets no gradient (is not stepped) for the first N steps
    fused: bool = True  # torch's fused AdamW kernel: one pass over all tensors (CPU: 10 -> 2 ms a step
    # for the mini model, whose step is ~100-200 ms); false: the per-tensor loop


@dataclass
class TrainConfig:
    exp_dir: str = "exp/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: str | None = None  # pretrained weights: hf://<repo id> or a directory (models/pretrained.py)
    init_kernel_resize: str = "pi"  # patch kernel of another size: pi (FlexiViT PI-resize) | bilinear
    loss_weights: dict[str, float] = field(default_factory=dict)  # {"ctc" | head name: weight}, default 1
    max_steps: int = 10000
    max_epochs: int | None = None
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at every epoch end
    keep_checkpoints: int = 10
    log_every: int = 20
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs with AMX, else fp32 | bf16 | fp32
    grad_accum: int = 1  # batches per process per optimiser step (loss normalised over all of them)
    compile: bool = False  # torch.compile the encoder; the first step's time (compilation) is logged
    peak_tflops: float | None = None  # the device's bf16 peak for the logged MFU; None: known GPUs' datasheet
    validate: bool = True  # validation loss and greedy WER at each epoch end
    progress: bool = True


def table_seconds(cfg: TrainConfig) -> float:
    """Seconds of audio the encoder's position table covers (encoder.max_frames fbank frames)."""
    return cfg.model.encoder.max_frames * cfg.features.frame_shift_ms / 1000


def check_config(cfg: TrainConfig) -> None:
    """Reject settings a run cannot use, before it loads or builds anything."""
    longest = cfg.data.max_duration
    if longest is not None and longest > table_seconds(cfg) + cfg.features.frame_length_ms / 1000:
        raise ValueError(
            f"data.max_duration {longest:g} s is longer than the position table covers "
            f"(model.encoder.max_frames {cfg.model.encoder.max_frames} = {table_seconds(cfg):g} s): "
            "lower it, or leave it unset to follow the table"
        )
    if cfg.grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, not {cfg.grad_accum}")
    heads = {"ctc"} if cfg.model.ctc is not None else set()
    unknown = set(cfg.loss_weights) - heads - set(cfg.model.classifiers)
    if unknown:
        raise ValueError(f"loss_weights names no head of the model: {sorted(unknown)}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {cfg.precision!r} "
            "(auto is bf16 on CUDA and on CPUs with AMX, fp32 elsewhere)"
        )


def make_featurizer(cfg: TrainConfig, tokenizer, train: bool) -> Featurizer:
    """The training (augmenting) or validation Featurizer of a run. It drops what the model
    cannot take (longer than the position table, CTC-infeasible) and counts it."""
    enc = cfg.model.encoder
    return Featurizer(
        cfg.features,
        tokenizer,
        cfg.data.spec_augment if train else None,
        cfg.seed,
        max_duration(cfg) if train else None,
        cfg.data.augment if train else None,
        heads=cfg.model.classifiers,
        max_frames=enc.max_frames,
        # validation decodes CTC-infeasible utterances too (they still have a WER)
        output_frames=enc.time_columns if train and cfg.model.ctc is not None else None,
    )


def max_duration(cfg: TrainConfig) -> float:
    """data.max_duration, or by default the seconds the position table covers."""
    if cfg.data.max_duration is not None:
        return cfg.data.max_duration
    return table_seconds(cfg)
