"""Initialise an ASTModel from pretrained AST, ViT or DeiT weights, adapted the way AST does.

`init:` (TrainConfig) names the source:
  hf://<repo id>   a Hugging Face hub checkpoint, loaded with transformers `from_pretrained`:
                   ASTModel / ASTForAudioClassification (e.g. MIT/ast-finetuned-audioset-10-10-0.4593),
                   ViTModel / ViT*, DeiTModel / DeiT* (e.g. facebook/deit-base-distilled-patch16-384);
                   or the encoder of a Whisper model (openai/whisper-tiny.en ... whisper-large-v3,
                   English-only or multilingual), read from its safetensors (never a pickle) through
                   huggingface_hub; hf://<repo id>@<revision> for Whisper
  <directory>      the same saved locally (`save_pretrained`, `hf download ... --local-dir`), or an
                   astctc model directory (`ASTModel.save`, `astctc average`)

Every parameter of the model ends up in one of three states, reported per tensor:
  loaded    copied unchanged (names map 1:1; transformers 5 renames modules in memory,
            `layers.N.attention.q_proj`, `mlp.fc1`, ..., and both layouts are mapped)
  adapted   derived from a source tensor of another shape:
            * position table: the source's patch grid (AST: F' x T' from its strides and
              max_length; ViT/DeiT: the image grid, 24 x 24 at 384 px) is fitted to ours one axis
              at a time, exactly as AST (Gong et al. 2021, sec. 2.3; ast_models.py): an axis that
              is too long is cut from its middle, one that is too short is stretched by bilinear
              interpolation (align_corners=False). Image rows map to mel bins, columns to time.
            * patch projection: ImageNet kernels have 3 input channels; we SUM them to 1, as AST
              does. A spectrogram fed to the image model as a grey image (the same plane in R, G
              and B) gives exactly the summed kernel's response, so the pretrained biases, position
              embeddings and LayerNorms see tokens of the scale they were trained on; averaging
              would shrink every patch token threefold.
              A kernel of another size (frame patches 128 x k, or a different patch size) is
              resized with FlexiViT's PI-resize (Beyer et al. 2023): the new kernel w' solves
              B^T w' = w in the least-squares sense, B being the bilinear resize of a patch, so
              <resize(x), w'> = <x, w> for every patch x when the patch grows. Plain bilinear
              interpolation of the kernel (`init_kernel_resize: bilinear`, rescaled by the area
              ratio) only preserves the response to flat patches. Strides do not change a kernel,
              so a projection with only different strides loads unchanged.
            * CLS tokens: source and model both with 2 ([CLS] + distillation): copied. A 1-token
              source (ViT) into a 2-token model: the distillation token and its position start as
              copies of [CLS]'s, so both begin as the one ImageNet-trained summary token and the
              classifier's average of the two starts from it. A 2-token source into a 1-token
              model: [CLS] is kept, the distillation token is reported unused.
            * q/k/v biases the source lacks (qkv_bias=False; Whisper's key): zeros.
            * Whisper: its stem (conv1, conv2), blocks and final LayerNorm load by name into an
              encoder with `stem: whisper`, no class token and Whisper's LayerNorm epsilon; its
              position table (sinusoids, 1,500 positions = 30 s) is kept as it is, cut to its
              first positions for a shorter table, extended by Whisper's sinusoid formula for a
              longer one (a Whisper position is a time from the start, not AST's grid).
  new       left as the model initialised it: the CTC head, and classifier heads unless the
            source is an ASTForAudioClassification with the same number of classes (and the same
            class names, when both sides name them).
Source tensors that are not used (ViT pooler, ImageNet heads, blocks beyond our depth, the
distillation token of a 2-token source for a 1-token model, Whisper's decoder) are listed as unused.

Architecture (width, heads, MLP width) must match; a mismatch is an error that names the
settings to use. A shallower model takes the first blocks.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import from_dict
from .encoder import EncoderConfig
from .model import ASTModel, ModelConfig

log = logging.getLogger("astctc.pretrained")

HUB_PREFIX = "hf://"
POS = "encoder.embeddings.position_embeddings"
PROJ = "encoder.embeddings.patch_embeddings.projection.weight"
CLS = "encoder.embeddings.cls_token"
DIST = "encoder.embeddings.distillation_token"

# transformers >= 5 in-memory names -> the HF checkpoint names our encoder uses
_RENAMES = [
    (re.compile(r"^(audio_spectrogram_transformer|vit|deit)\."), ""),
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
]


@dataclass
class Source:
    """A pretrained checkpoint in our parameter names, with the geometry needed to adapt it."""

    name: str
    kind: str  # ast | vit | deit | whisper | astctc
    state: dict[str, Tensor]  # encoder.* (+ classifier.* for ASTForAudioClassification)
    grid: tuple[int, int]  # (rows, columns) of the position table: (F', T') or image patches
    num_cls_tokens: int
    embed_dim: int
    num_heads: int
    depth: int
    mlp_dim: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    labels: list[str] | None = None  # class names of the source's classifier, if it has one
    dropped: list[str] = field(default_factory=list)  # checkpoint tensors the loader did not keep
    stem: str = "patches"  # patches (AST, ViT, DeiT) | whisper (conv1 + conv2 over the mel bins)
    num_mel_bins: int | None = None  # what the stem reads (Whisper: 80 or 128); None: any


@dataclass
class InitReport:
    source: str
    kind: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (parameter, status, how)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for _, s, _ in self.rows if s == status)

    def status(self, name: str) -> str:
        return next(s for n, s, _ in self.rows if n == name)

    def summary(self) -> str:
        return (
            f"init from {self.source} ({self.kind}): {self.count('loaded')} loaded, "
            f"{self.count('adapted')} adapted, {self.count('new')} new, {len(self.unused)} unused"
        )

    def __str__(self) -> str:
        lines = [self.summary()] + [f"  note: {n}" for n in self.notes]
        width = max((len(n) for n, _, _ in self.rows), default=0)
        lines += [f"  {s:<8} {n:<{width}}  {how}".rstrip() for n, s, how in self.rows]
        lines += [f"  unused   {n}" for n in self.unused]
        return "\n".join(lines)


# ---- reading sources ----------------------------------------------------------------


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _our_name(key: str) -> str:
    for pat, rep in _RENAMES:
        key = pat.sub(rep, key)
    return key if key.startswith("classifier.") else f"encoder.{key}"


def _download_hint(repo: str, err: Exception) -> str:
    local = f"pretrained/{repo.split('/')[-1]}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"cannot load {HUB_PREFIX}{repo}: not in the local Hugging Face cache and not downloadable "
        f"here (offline, HF_HUB_OFFLINE=1, or no such repository); {type(err).__name__}: {first}\n"
        f"Download it where there is internet access:\n"
        f"    hf download {repo} --local-dir {local}\n"
        f"(older huggingface_hub: huggingface-cli download {repo} --local-dir {local}),\n"
        f"then point the config at the directory:  init: {local}"
    )


def _hf_state(name: str, where: str, repo: str | None) -> Source:
    """Load a transformers AST/ViT/DeiT checkpoint (hub id or local dir) into our names."""
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(where)
    except Exception as e:  # any failure to fetch gets the same advice
        if repo is not None:
            raise RuntimeError(_download_hint(repo, e)) from None
        raise ValueError(f"{where}: not a Hugging Face model directory ({e})") from None
    mt = config.model_type
    kwargs = {}
    if mt == "audio-spectrogram-transformer":
        from transformers import ASTForAudioClassification
        from transformers import ASTModel as HFAST

        archs = config.architectures or []
        cls = ASTForAudioClassification if "ASTForAudioClassification" in archs else HFAST
    elif mt in ("vit", "deit"):
        cls, kwargs = AutoModel, {"add_pooling_layer": False}
    else:
        raise ValueError(f"{name}: model_type {mt!r} is not supported (AST, ViT or DeiT)")
    try:
        # safetensors only: a repository holding just pytorch_model.bin is refused, never unpickled
        model, info = cls.from_pretrained(
            where, config=config, output_loading_info=True, use_safetensors=True, **kwargs
        )
    except Exception as e:
        if repo is not None:
            raise RuntimeError(_download_hint(repo, e)) from None
        raise
    # tensors transformers had to initialise itself were not in the checkpoint: not "loaded"
    missing = {_our_name(k) for k in info.get("missing_keys", ())}
    state = {n: v.detach().float().cpu() for k, v in model.state_dict().items() if (n := _our_name(k)) not in missing}

    if mt == "audio-spectrogram-transformer":
        p = config.patch_size
        grid = (
            (config.num_mel_bins - p) // config.frequency_stride + 1,
            (config.max_length - p) // config.time_stride + 1,
        )
        kind = "ast"
    else:
        patch = _pair(config.patch_size)
        size = _pair(config.image_size)
        grid = (size[0] // patch[0], size[1] // patch[1])
        kind = mt
    num_cls = state[POS].shape[1] - grid[0] * grid[1]
    if num_cls not in (1, 2) or (num_cls == 2) != (DIST in state):
        raise ValueError(f"{name}: position table of {state[POS].shape[1]} does not fit a {grid} grid")
    labels = None
    if "classifier.dense.weight" in state:
        id2label = {int(k): v for k, v in (config.id2label or {}).items()}
        names = [id2label.get(i, f"LABEL_{i}") for i in range(state["classifier.dense.weight"].shape[0])]
        labels = None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names
    dropped = sorted(f"{k} (not kept by transformers' {type(model).__name__})" for k in info.get("unexpected_keys", ()))
    return Source(
        name=name,
        kind=kind,
        state=state,
        grid=grid,
        num_cls_tokens=num_cls,
        dropped=dropped,
        embed_dim=config.hidden_size,
        num_heads=config.num_attention_heads,
        depth=config.num_hidden_layers,
        mlp_dim=config.intermediate_size,
        hidden_act=str(config.hidden_act),
        layer_norm_eps=float(config.layer_norm_eps),
        labels=labels,
    )


def _astctc_state(name: str, d: Path) -> Source:
    from safetensors.torch import load_file

    cfg = from_dict(ModelConfig, json.loads((d / "config.json").read_text()))
    e = cfg.encoder
    state = load_file(str(d / "model.safetensors"))
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ValueError(f"{d / 'model.safetensors'}: {bad} holds NaN or infinite values: not a model to start from")
    return Source(
        name=name,
        kind="astctc",
        state=state,
        grid=(e.freq_rows, e.max_time_columns),
        num_cls_tokens=e.num_cls_tokens,
        embed_dim=e.embed_dim,
        num_heads=e.num_heads,
        depth=e.depth,
        mlp_dim=int(e.embed_dim * e.mlp_ratio),
        layer_norm_eps=e.layer_norm_eps,
        stem=e.stem,
        num_mel_bins=e.num_mel_bins if e.stem == "whisper" else None,
    )


# Whisper's encoder names (transformers' WhisperEncoder) -> ours
_WHISPER_NAMES = [
    (re.compile(r"^(conv[12])\."), r"encoder.embeddings.patch_embeddings.\1."),
    (re.compile(r"^layer_norm\."), "encoder.layernorm."),
    (re.compile(r"^layers\.(\d+)\.self_attn_layer_norm\."), r"encoder.encoder.layer.\1.layernorm_before."),
    (re.compile(r"^layers\.(\d+)\.final_layer_norm\."), r"encoder.encoder.layer.\1.layernorm_after."),
    (re.compile(r"^layers\.(\d+)\.self_attn\.q_proj\."), r"encoder.encoder.layer.\1.attention.attention.query."),
    (re.compile(r"^layers\.(\d+)\.self_attn\.k_proj\."), r"encoder.encoder.layer.\1.attention.attention.key."),
    (re.compile(r"^layers\.(\d+)\.self_attn\.v_proj\."), r"encoder.encoder.layer.\1.attention.attention.value."),
    (re.compile(r"^layers\.(\d+)\.self_attn\.out_proj\."), r"encoder.encoder.layer.\1.attention.output.dense."),
    (re.compile(r"^layers\.(\d+)\.fc1\."), r"encoder.encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^layers\.(\d+)\.fc2\."), r"encoder.encoder.layer.\1.output.dense."),
]
_WHISPER_ENCODER = re.compile(r"^(model\.)?encoder\.")  # WhisperForConditionalGeneration / WhisperModel


def _whisper_weights(d: Path) -> dict[str, Tensor]:
    """Every tensor of a Whisper checkpoint directory, from safetensors only (one file or shards)."""
    from safetensors.torch import load_file

    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = [d / f for f in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))]
    else:
        pickles = sorted(p.name for p in d.glob("*.bin")) + sorted(p.name for p in d.glob("*.pt"))
        extra = f" ({', '.join(pickles)} is a pickle, which is never loaded)" if pickles else ""
        raise FileNotFoundError(f"{d}: no model.safetensors{extra}; convert the weights to safetensors")
    state: dict[str, Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:
            raise ValueError(f"{f}: cannot read the weights ({e})") from None
    return state


def _whisper_state(name: str, d: Path, config: dict) -> Source:
    """The encoder of a Whisper checkpoint (transformers layout) in our names."""
    state, dropped, decoder = {}, [], 0
    for key, value in _whisper_weights(d).items():
        short = _WHISPER_ENCODER.sub("", key, count=1)
        if short == key:  # not the encoder: the decoder, proj_out
            decoder += 1
            continue
        if short == "embed_positions.weight":
            state[POS] = value.float()[None]
            continue
        ours = next((pat.sub(rep, short) for pat, rep in _WHISPER_NAMES if pat.match(short)), None)
        if ours is None:
            dropped.append(f"{key} (not part of a Whisper encoder astctc knows)")
            continue
        state[ours] = value.float()
    if POS not in state:
        raise ValueError(f"{name}: no encoder.embed_positions.weight: not a Whisper encoder checkpoint")
    if decoder:
        dropped.append(f"{decoder} tensors outside the encoder (Whisper's decoder is not used)")
    return Source(
        name=name,
        kind="whisper",
        state=state,
        grid=(1, state[POS].shape[1]),
        num_cls_tokens=0,
        embed_dim=int(config["d_model"]),
        num_heads=int(config["encoder_attention_heads"]),
        depth=int(config["encoder_layers"]),
        mlp_dim=int(config["encoder_ffn_dim"]),
        hidden_act=str(config.get("activation_function", "gelu")),
        layer_norm_eps=1e-5,  # transformers' and OpenAI's nn.LayerNorm default; not in the config
        dropped=dropped,
        stem="whisper",
        num_mel_bins=int(config.get("num_mel_bins", 80)),
    )


def _hub_whisper(spec: str) -> Source | None:
    """`hf://org/name[@rev]` as a Whisper source when its config says whisper, else None."""
    from huggingface_hub import hf_hub_download, snapshot_download

    from ..hub import parse_spec

    repo, revision = parse_spec(spec)
    try:
        config = json.loads(Path(hf_hub_download(repo, "config.json", revision=revision)).read_text(encoding="utf-8"))
    except Exception as e:  # offline, no such repository, no network: the same advice
        raise RuntimeError(_download_hint(repo, e)) from None
    if config.get("model_type") != "whisper":
        return None
    try:
        d = snapshot_download(repo, revision=revision, allow_patterns=["config.json", "model*.safetensors*"])
    except Exception as e:
        raise RuntimeError(_download_hint(repo, e)) from None
    return _whisper_state(spec, Path(d), config)


def load_source(spec: str) -> Source:
    """`hf://<repo id>` or a local directory (Hugging Face format or an astctc model)."""
    if spec.startswith(HUB_PREFIX):
        repo = spec[len(HUB_PREFIX) :].strip("/")
        if not repo:
            raise ValueError(f"init {spec!r}: no repository id after {HUB_PREFIX}")
        whisper = _hub_whisper(spec)
        return whisper if whisper is not None else _hf_state(spec, repo, repo)
    d = Path(spec)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(
            f"init {spec!r}: not a model directory (no config.json); a hub model is written {HUB_PREFIX}<owner>/<name>"
        )
    pickles = sorted(f.name for f in d.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickles and not any(d.glob("*.safetensors")):  # transformers would unpickle it: that can run code
        raise ValueError(
            f"{d / pickles[0]}: pickle weights are never loaded, only safetensors (model.safetensors); "
            "convert it where you trust it (transformers: save_pretrained(safe_serialization=True))"
        )
    config = json.loads((d / "config.json").read_text())
    if "encoder" in config:
        return _astctc_state(spec, d)
    if config.get("model_type") == "whisper":
        return _whisper_state(spec, d, config)
    return _hf_state(spec, str(d), None)


# ---- adapting tensors ---------------------------------------------------------------


def _fit_axis(grid: Tensor, axis: int, size: int) -> tuple[Tensor, str]:
    """Cut from the middle or bilinearly stretch one axis (2 = rows, 3 = columns) of (1, D, R, C)."""
    n = grid.shape[axis]
    if size == n:
        return grid, f"{n} kept"
    if size < n:
        start = n // 2 - size // 2  # AST: int(n/2) - int(size/2)
        return grid.narrow(axis, start, size), f"{n}->{size} cut from the middle [{start}:{start + size}]"
    shape = (size, grid.shape[3]) if axis == 2 else (grid.shape[2], size)
    return F.interpolate(grid, size=shape, mode="bilinear", align_corners=False), f"{n}->{size} bilinear"


def adapt_positions(
    pos: Tensor, src_cls: int, src_grid: tuple[int, int], dst_cls: int, dst_grid: tuple[int, int]
) -> tuple[Tensor, str]:
    """(1, src_cls + R*C, D) -> (1, dst_cls + F'*T', D): each axis cut or interpolated (AST)."""
    D = pos.shape[-1]
    R, C = src_grid
    grid = pos[:, src_cls:].reshape(1, R, C, D).permute(0, 3, 1, 2).double()
    grid, how_t = _fit_axis(grid, 3, dst_grid[1])  # time first, then frequency, as AST
    grid, how_f = _fit_axis(grid, 2, dst_grid[0])
    grid = grid.permute(0, 2, 3, 1).reshape(1, dst_grid[0] * dst_grid[1], D).to(pos.dtype)
    cls = pos[:, :src_cls]
    how = f"grid {R}x{C} -> {dst_grid[0]}x{dst_grid[1]}: frequency {how_f}, time {how_t}"
    if dst_cls < src_cls:
        cls, how = cls[:, :dst_cls], how + "; distillation position dropped"
    elif dst_cls > src_cls:
        cls, how = torch.cat([cls, cls], dim=1), how + "; distillation position = copy of [CLS]'s"
    return torch.cat([cls, grid], dim=1), how


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's position table (its `sinusoids`): sin then cos of length x channels/2 timescales."""
    inc = torch.log(torch.tensor(max_timescale, dtype=torch.float64)) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1).float()


def adapt_time_positions(pos: Tensor, columns: int) -> tuple[Tensor, str]:
    """A Whisper-style table (1, N, D) of positions in time from the start -> (1, columns, D):
    its first `columns`, or all of it followed by Whisper's sinusoids for the positions after."""
    n, D = pos.shape[1], pos.shape[2]
    if columns <= n:
        return pos[:, :columns], f"first {columns} of {n} positions"
    rest = whisper_sinusoids(columns, D)[n:].to(pos.dtype)[None]
    return torch.cat([pos, rest], dim=1), f"{n} positions + {columns - n} from Whisper's sinusoid formula"


def _resize_matrix(old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """B with vec(resize(x)) = B vec(x) for bilinear (antialiased) resizing of old -> new patches."""
    n = old[0] * old[1]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, *old)
    out = F.interpolate(basis, size=new, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(n, -1).T


def resize_kernel(w: Tensor, new: tuple[int, int], method: str = "pi") -> Tensor:
    """(D, C, h, w) patch kernel -> (D, C, *new); `pi` keeps tokens of resized patches (FlexiViT)."""
    D, C, h, wd = w.shape
    if method == "bilinear":
        out = F.interpolate(w.double(), size=new, mode="bilinear", align_corners=False, antialias=True)
        return (out * (h * wd) / (new[0] * new[1])).to(w.dtype)
    if method != "pi":
        raise ValueError(f"init_kernel_resize must be pi or bilinear, not {method!r}")
    B = _resize_matrix((h, wd), new)  # (new_n, old_n)
    flat = w.double().reshape(D * C, h * wd).T  # (old_n, D*C)
    return (torch.linalg.pinv(B.T) @ flat).T.reshape(D, C, *new).to(w.dtype)


def adapt_patch_kernel(w: Tensor, size: tuple[int, int], method: str = "pi") -> tuple[Tensor, str]:
    how = []
    if w.shape[1] != 1:
        how.append(f"{w.shape[1]} input channels summed to 1 (AST)")
        w = w.sum(dim=1, keepdim=True)
    if tuple(w.shape[2:]) != tuple(size):
        how.append(f"kernel {w.shape[2]}x{w.shape[3]} -> {size[0]}x{size[1]} ({method}-resize)")
        w = resize_kernel(w, tuple(size), method)
    return w, "; ".join(how)


# ---- putting it together ------------------------------------------------------------


def check_compatible(src: Source, enc: EncoderConfig) -> list[str]:
    """Errors for what cannot be adapted; returns notes for what differs harmlessly."""
    want = {"embed_dim": src.embed_dim, "num_heads": src.num_heads, "stem": src.stem}
    if src.stem == "whisper":  # its stem and blocks are taken as they are, positions in time only
        want.update(
            num_mel_bins=src.num_mel_bins,
            patch_freq=src.num_mel_bins,
            stride_freq=src.num_mel_bins,
            patch_time=1,
            stride_time=2,
            num_cls_tokens=0,
        )
    bad = {k: v for k, v in want.items() if getattr(enc, k) != v}
    if int(enc.embed_dim * enc.mlp_ratio) != src.mlp_dim:
        bad["mlp_ratio"] = src.mlp_dim / src.embed_dim
    if enc.depth > src.depth:
        bad["depth"] = src.depth
    if bad:
        sets = " ".join(f"model.encoder.{k}={v}" for k, v in bad.items())
        raise ValueError(f"{src.name} does not fit the configured encoder; set {sets}")
    notes = []
    if enc.depth < src.depth:
        notes.append(f"model has {enc.depth} blocks, source {src.depth}: the first {enc.depth} are used")
    if src.hidden_act != "gelu":
        notes.append(f"source activation is {src.hidden_act!r}, our encoder uses exact GELU")
    if abs(src.layer_norm_eps - enc.layer_norm_eps) > 1e-15:
        notes.append(f"source layer_norm_eps {src.layer_norm_eps:g}, ours {enc.layer_norm_eps:g}")
    return notes


def _classifier_matches(src: Source, head_cfg) -> bool:
    w = src.state.get("classifier.dense.weight")
    if w is None or w.shape[0] != head_cfg.num_classes:
        return False
    return head_cfg.classes is None or src.labels is None or list(head_cfg.classes) == src.labels


def check_features_fit(src: Source, features) -> None:
    """A Whisper encoder hears Whisper's log-mel (and an AST one Kaldi's fbank): ValueError else."""
    want = "whisper" if src.stem == "whisper" else None
    if want and features.kind != want:
        raise ValueError(f"{src.name} is a Whisper encoder, which hears Whisper's log-mel: set features.kind={want}")


def init_from_pretrained(model: ASTModel, source: str | Source, kernel_resize: str = "pi", features=None) -> InitReport:
    """Load `source` into `model` in place, adapting what differs; returns the per-tensor report.
    `features` (the run's FeatureConfig), when given, must be what the source was trained on.

    Draws no random numbers (the torch RNG state is restored), so a seeded run continues the same
    way whether or not it was initialised from a checkpoint.
    """
    with torch.random.fork_rng(devices=[]):
        src = source if isinstance(source, Source) else load_source(source)
    enc = model.cfg.encoder
    if features is not None:
        check_features_fit(src, features)
    report = InitReport(src.name, src.kind, notes=check_compatible(src, enc))
    dst_grid = (enc.freq_rows, enc.max_time_columns)
    used: set[str] = set()
    out: dict[str, Tensor] = {}

    def put(name: str, value: Tensor, status: str, how: str, *from_: str) -> None:
        out[name] = value
        used.update(from_)
        report.rows.append((name, status, how))

    for name, cur in model.state_dict().items():
        s = src.state.get(name)
        head = re.match(r"classifiers\.([^.]+)\.(layernorm|dense)\.(weight|bias)$", name)
        if name == POS:
            same = src.grid == dst_grid and src.num_cls_tokens == enc.num_cls_tokens
            if same:
                put(name, s, "loaded", "", name)
            elif src.stem == "whisper":
                v, how = adapt_time_positions(s, dst_grid[1])
                put(name, v, "adapted", how, name)
            else:
                v, how = adapt_positions(s, src.num_cls_tokens, src.grid, enc.num_cls_tokens, dst_grid)
                put(name, v, "adapted", how, name)
        elif name == PROJ:
            v, how = adapt_patch_kernel(s, (enc.patch_freq, enc.patch_time), kernel_resize)
            put(name, v, "adapted" if how else "loaded", how, name)
        elif name == DIST and s is None:
            put(name, src.state[CLS], "adapted", "copy of the source's [CLS] token (it has one)", CLS)
        elif head and src.kind != "astctc" and "classifier.dense.weight" in src.state:
            key = f"classifier.{head[2]}.{head[3]}"
            if _classifier_matches(src, model.classifiers[head[1]].cfg):
                put(name, src.state[key], "loaded", f"from {key}", key)
            else:
                put(
                    name, cur, "new", f"(source classifier has {src.state['classifier.dense.weight'].shape[0]} classes)"
                )
        elif s is not None and s.shape == cur.shape:
            put(name, s, "loaded", "", name)
        elif (
            s is None
            and re.search(r"\.attention\.attention\.(query|key|value)\.bias$", name)
            and name[:-4] + "weight" in src.state
        ):
            put(name, torch.zeros_like(cur), "adapted", "zeros (the source has no q/k/v bias)")
        else:
            why = f"(source has {tuple(s.shape)})" if s is not None else ""
            put(name, cur, "new", why)
    report.unused = sorted(k for k in src.state if k not in used) + src.dropped
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in out.items()})
    return report


def log_report(report: InitReport, path: str | Path | None = None) -> None:
    """Log the summary, what was adapted or is new, and write the full per-tensor table to `path`."""
    log.info(report.summary())
    for n in report.notes:
        log.warning("init: %s", n)
    for name, status, how in report.rows:
        if status != "loaded":
            log.info("init: %-7s %s %s", status, name, how)
    for name in report.unused:
        log.info("init: unused  %s", name)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(str(report) + "\n")
        log.info("init: per-tensor report in %s", path)
