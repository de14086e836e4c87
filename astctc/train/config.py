"""What a training run is told: the optimiser's settings (OptimConfig) and the run's (TrainConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, above, at_least, at_most, fraction, one_of, register_check
from ..data.pipeline import DataConfig, Featurizer
from ..device import PRECISIONS
from ..features import FeatureConfig, check_features
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
    # the encoder gets no gradient (is not stepped) for the first N steps, then its lr warms up
    # again over warmup_steps (a pretrained encoder meeting the full lr at once can collapse)
    freeze_encoder_steps: int = 0
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
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on every CPU | bf16 | fp32
    grad_accum: int = 1  # batches per process per optimiser step (loss normalised over all of them)
    compile: bool = False  # torch.compile the encoder; the first step's time (compilation) is logged
    peak_tflops: float | None = None  # the device's bf16 peak for the logged MFU; None: known GPUs' datasheet
    validate: bool = True  # validation loss and greedy WER at each epoch end
    progress: bool = True


def table_seconds(cfg: TrainConfig) -> float:
    """Seconds of audio the encoder's position table covers (encoder.max_frames fbank frames)."""
    return cfg.model.encoder.max_frames * cfg.features.frame_shift_ms / 1000


@register_check(TrainConfig)
def validate_config(cfg: TrainConfig) -> None:
    """Reject values no run can use, naming the key: `load_config` runs this on every
    TrainConfig it reads, so a bad value fails before anything is loaded or built (not as an
    assertion in a DataLoader worker, and not by training silently for a negative count)."""
    at_least(cfg, "", 1, "max_steps", "max_epochs", "checkpoint_every", "keep_checkpoints", "log_every", "grad_accum")
    above(cfg, "", 0, "peak_tflops")
    _seed(cfg.seed)
    if cfg.precision not in PRECISIONS:
        raise ConfigError(
            "precision",
            f"precision must be one of {', '.join(PRECISIONS)}, not {cfg.precision!r} "
            "(auto is bf16 on CUDA, fp32 on every CPU)",
            whole=True,
        )
    one_of(cfg, "", "init_kernel_resize", ("pi", "bilinear"))
    if not str(cfg.exp_dir).strip():
        raise ConfigError("exp_dir", "exp_dir is empty: give the run's output directory", whole=True)
    _validate_model(cfg.model)
    check_features(cfg.features)
    if cfg.features.num_mel_bins != cfg.model.encoder.num_mel_bins:
        raise ConfigError(
            "features.num_mel_bins",
            f"features.num_mel_bins {cfg.features.num_mel_bins} differs from model.encoder.num_mel_bins "
            f"{cfg.model.encoder.num_mel_bins}: the encoder takes what the features give; set both",
            whole=True,
        )
    _validate_data(cfg.data)
    _validate_optim(cfg.optim)
    _validate_loss_weights(cfg)
    longest = cfg.data.max_duration
    if longest is not None and longest > table_seconds(cfg) + cfg.features.frame_length_ms / 1000:
        raise ConfigError(
            "data.max_duration",
            f"data.max_duration {longest:g} s is longer than the position table covers "
            f"(model.encoder.max_frames {cfg.model.encoder.max_frames} = {table_seconds(cfg):g} s): "
            "lower it, or leave it unset to follow the table",
            whole=True,
        )


# seeds are integers below distributed.step_seed's modulus (torch.manual_seed takes them all)
SEED_LIMIT = 2**63
# sizes far beyond any real encoder: one above them is a typo, failing here rather than as an
# allocation of terabytes (embed_dim 2e6) deep in torch
MAX_EMBED_DIM = 65536
MAX_DEPTH = 1024
MAX_MEL_BINS = 4096
MAX_FRAMES = 2**20  # fbank frames of the position table: 2.9 hours at 10 ms
MAX_KERNEL = 1023
MAX_MLP_RATIO = 64.0


def _seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError("seed", f"seed must be an integer in [0, 2**63), not {seed!r}", whole=True)


def _validate_loss_weights(cfg: TrainConfig) -> None:
    """Each weight names a head and is >= 0 (finite: config.py), and some head's is above 0."""
    heads = ({"ctc"} if cfg.model.ctc is not None else set()) | set(cfg.model.classifiers)
    unknown = set(cfg.loss_weights) - heads
    if unknown:
        raise ConfigError("loss_weights", f"loss_weights names no head of the model: {sorted(unknown)}", whole=True)
    for head, w in cfg.loss_weights.items():
        if not w >= 0:  # a negative weight maximises that head's loss
            raise ConfigError(f"loss_weights.{head}", f"loss_weights.{head} must be >= 0, not {w!r}", whole=True)
    if heads and not any(cfg.loss_weights.get(h, 1.0) > 0 for h in heads):
        raise ConfigError(
            "loss_weights",
            f"loss_weights are 0 for every head ({', '.join(sorted(heads))}): nothing would be trained",
            whole=True,
        )


def _validate_model(m: ModelConfig) -> None:
    e, p = m.encoder, "model.encoder."
    at_least(e, p, 1, "num_mel_bins", "patch_freq", "patch_time", "stride_freq", "stride_time")
    at_least(e, p, 1, "embed_dim", "depth", "num_heads", "max_frames")
    at_least(e, p, 0, "conv_pos", "conv_kernel")
    above(e, p, 0, "mlp_ratio", "layer_norm_eps")
    at_most(e, p, MAX_EMBED_DIM, "embed_dim")
    at_most(e, p, MAX_DEPTH, "depth")
    at_most(e, p, MAX_MEL_BINS, "num_mel_bins")
    at_most(e, p, MAX_FRAMES, "max_frames", "stride_time")
    at_most(e, p, MAX_KERNEL, "conv_pos", "conv_kernel")
    at_most(e, p, MAX_MLP_RATIO, "mlp_ratio")
    if int(e.embed_dim * e.mlp_ratio) < 1:
        raise ConfigError(p + "mlp_ratio", f"{e.mlp_ratio!r} x embed_dim {e.embed_dim} leaves the MLP no unit")
    fraction(e, p, "dropout", "attn_dropout")
    one_of(e, p, "attention", ("padded", "packed"))
    if e.num_cls_tokens not in (0, 1, 2):
        raise ConfigError(p + "num_cls_tokens", f"must be 0 (Whisper), 1 (ViT) or 2 (AST), not {e.num_cls_tokens}")
    one_of(e, p, "stem", ("patches", "whisper"))
    try:
        e.check_stem(p)
    except ValueError as err:
        raise ConfigError(p + "stem", str(err), whole=True) from None
    try:
        e.check_attention(p)
    except ValueError as err:
        raise ConfigError(p + "attention_backend", str(err), whole=True) from None
    if e.embed_dim % e.num_heads:
        raise ConfigError(p + "num_heads", f"{e.num_heads} does not divide embed_dim {e.embed_dim}")
    if e.patch_freq > e.num_mel_bins:
        raise ConfigError(p + "patch_freq", f"{e.patch_freq} is taller than the {e.num_mel_bins} mel bins")
    if e.patch_time > e.max_frames:
        raise ConfigError(p + "max_frames", f"{e.max_frames} is shorter than one patch ({e.patch_time} frames)")
    for key in ("conv_pos", "conv_kernel"):
        if getattr(e, key) and getattr(e, key) % 2 == 0:
            raise ConfigError(p + key, f"must be odd (a centred kernel) or 0 (off), not {getattr(e, key)}")
    if m.ctc is not None:
        at_least(m.ctc, "model.ctc.", 0, "vocab_size")
        one_of(m.ctc, "model.ctc.", "combine", ("concat", "mean"))
        fraction(m.ctc, "model.ctc.", "dropout")
    for name, head in m.classifiers.items():
        p = f"model.classifiers.{name}."
        at_least(head, p, 0, "num_classes")
        fraction(head, p, "label_smoothing")
        one_of(head, p, "pool", ("cls", "mean"))
        if head.pool == "cls" and e.num_cls_tokens == 0:
            raise ConfigError(p + "pool", "cls needs a class token (model.encoder.num_cls_tokens 0): use mean")


def _validate_data(d: DataConfig) -> None:
    above(d, "data.", 0, "max_batch_seconds", "max_batch_seconds2", "max_duration")
    at_least(d, "data.", 1, "max_batch_size", "bucket_buffer")
    at_least(d, "data.", 0, "num_buckets", "num_workers", "prefetch")
    s = d.spec_augment
    at_least(s, "data.spec_augment.", 0, "freq_masks", "freq_width", "time_masks", "time_width")
    fraction(s, "data.spec_augment.", "time_ratio", closed=True)
    a = d.augment
    _validate_speeds(a.speeds)
    fraction(a, "data.augment.", "freq_warp", "tempo")
    fraction(d.mixup, "data.mixup.", "prob", closed=True)
    above(d.mixup, "data.mixup.", 0, "alpha")
    one_of(d.mixup, "data.mixup.", "level", ("fbank", "waveform"))
    at_least(d.balance, "data.balance.", 0, "power")


# speed perturbation factors: Kaldi's are 0.9 / 1.0 / 1.1; past 2x (or 0.5x) speech is no longer speech
SPEED_RANGE = (0.5, 2.0)


def _validate_speeds(speeds: list[float]) -> None:
    """A non-empty list of factors in SPEED_RANGE; one factor only if it is 1.0 (no perturbation):
    the loader draws a factor per utterance only from two or more, so [0.9] alone did nothing."""
    key, (lo, hi) = "data.augment.speeds", SPEED_RANGE
    if not speeds or not all(lo <= v <= hi for v in speeds):
        raise ConfigError(key, f"must be a non-empty list of factors in [{lo:g}, {hi:g}], not {speeds!r}")
    if len(speeds) == 1 and speeds[0] != 1.0:
        raise ConfigError(
            key,
            f"one factor ({speeds[0]:g}) is not applied: the loader draws a factor per utterance from two or "
            "more; give the factors to draw from, e.g. [0.9, 1.0, 1.1], or [1.0] for no perturbation",
        )


def _validate_optim(o: OptimConfig) -> None:
    above(o, "optim.", 0, "lr")
    at_least(o, "optim.", 0, "weight_decay", "warmup_steps", "final_lr_ratio", "grad_clip")
    at_least(o, "optim.", 0, "freeze_encoder_steps")
    one_of(o, "optim.", "schedule", ("cosine", "linear", "constant"))
    if not 0 < o.layer_decay <= 1:
        raise ConfigError("optim.layer_decay", f"must be in (0, 1], not {o.layer_decay!r}")
    if not all(0 <= b < 1 for b in o.betas):
        raise ConfigError("optim.betas", f"must be two numbers in [0, 1), not {list(o.betas)!r}")


def check_config(cfg: TrainConfig) -> None:
    """Reject settings a run cannot use, before it loads or builds anything: the value checks
    (`validate_config`, also run when the config is read) and what a training run needs
    beyond them (training data; a tokenizer for a CTC head)."""
    validate_config(cfg)
    if not (cfg.data.train or "").strip():
        raise ConfigError(
            "data.train",
            "data.train is empty: no training data given (shards: a directory, index.json or tars)",
            whole=True,
        )
    if cfg.model.ctc is not None and not (cfg.data.tokenizer or "").strip():
        raise ConfigError(
            "data.tokenizer",
            "data.tokenizer is empty: a model with a CTC head needs one (astctc tokenizer); model.ctc=null for none",
            whole=True,
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
