"""The Audio Spectrogram Transformer encoder (Gong et al. 2021), for variable-length speech.

A ViT over a (128 x T) log-mel image. One class covers both layouts:
  * AST: 16x16 patches with strides 10/10 -> 12 frequency rows, 10 time columns per second;
  * frame patches (SSAST): full-band 128 x k patches -> one token per time step.
Parameter names follow Hugging Face's `ASTModel` one to one, so pretrained checkpoints load
without a renaming table. Attention goes through `scaled_dot_product_attention` with a
key-padding mask, so an utterance in a padded batch gives the outputs it gives alone.

`attention: "packed"` drops the padding instead of masking it: the valid tokens of the batch
are concatenated into one (tokens, D) sequence, so the linear layers (most of the FLOPs) skip
the padding, and attention runs per utterance (`packed_attention`, by the kernel
`attention_backend` chooses: models/attention.py). The outputs equal the padded path's
(tests/test_packing.py); padded positions of the result are zeros.

`conv_kernel` (off by default, so AST checkpoints load as before) adds a Conformer-style
convolution module to every block: trained from scratch, a plain ViT has to learn locality
from data and learns slowly (docs/architecture.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features import FeatureConfig
from .attention import BACKENDS, Packed, choose, leave_loop_out_of_graphs, packed_attention


@dataclass
class EncoderConfig:
    num_mel_bins: int = 128
    patch_freq: int = 16  # patch height (mel bins)
    patch_time: int = 16  # patch width (10 ms frames)
    stride_freq: int = 10
    stride_time: int = 10
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    num_cls_tokens: int = 2  # AST: [CLS] + distillation token; ViT: 1; Whisper: 0
    max_frames: int = 1024  # fbank frames covered by the position table (10.24 s for AST)
    layer_norm_eps: float = 1e-12  # Hugging Face ViT/AST value
    attention: str = "padded"  # padded (SDPA + key-padding mask) | packed (no compute on padding)
    # packed attention's kernel (models/attention.py): auto (fa4, else fa2, else sdpa, by what
    # can run here) | fa4 | fa2 | sdpa (a named one that cannot run is an error); padded: auto/sdpa
    attention_backend: str = "auto"
    # under bf16 autocast, carry the residual stream between blocks in bf16 instead of fp32 (the
    # fp32 position table makes it fp32): half its memory traffic, for a coarser sum
    bf16_residual: bool = False
    # local structure for models trained from scratch (0 = off, as in AST): a depthwise
    # convolution over time added to the patch embeddings (wav2vec2's convolutional position
    # embedding) and/or a Conformer-style convolution module in every block; kernels in columns
    conv_pos: int = 0
    conv_kernel: int = 0
    # patches: AST's linear patch embedding; whisper: Whisper's stem, two convolutions along time
    # (kernel 3, the second with stride 2) over all mel bins, each followed by GELU: one token
    # per 2 frames, so patch_freq = stride_freq = num_mel_bins, patch_time = 1, stride_time = 2
    stem: str = "patches"

    def check_stem(self, prefix: str = "encoder.") -> None:
        """ValueError naming the keys when the geometry does not fit the stem."""
        if self.stem not in ("patches", "whisper"):
            raise ValueError(f"{prefix}stem must be patches or whisper, not {self.stem!r}")
        if self.stem != "whisper":
            return
        want = {
            "patch_freq": self.num_mel_bins,
            "stride_freq": self.num_mel_bins,
            "patch_time": 1,
            "stride_time": 2,
        }
        bad = {k: v for k, v in want.items() if getattr(self, k) != v}
        if bad:
            sets = " ".join(f"{prefix}{k}={v}" for k, v in bad.items())
            raise ValueError(f"{prefix}stem whisper makes one token per 2 frames over all mel bins: set {sets}")

    def check_attention(self, prefix: str = "encoder.") -> None:
        """ValueError naming the key when `attention` / `attention_backend` take no such value,
        or a kernel is asked of the padded path (SDPA with a mask: it has no other)."""
        if self.attention not in ("padded", "packed"):
            raise ValueError(f"{prefix}attention must be padded or packed, not {self.attention!r}")
        if self.attention_backend not in BACKENDS:
            choices = ", ".join(BACKENDS)
            raise ValueError(f"{prefix}attention_backend must be one of {choices}, not {self.attention_backend!r}")
        if self.attention == "padded" and self.attention_backend not in ("auto", "sdpa"):
            raise ValueError(
                f"{prefix}attention_backend {self.attention_backend} needs {prefix}attention packed "
                "(padded attention is SDPA with a key-padding mask)"
            )

    @property
    def freq_rows(self) -> int:
        return (self.num_mel_bins - self.patch_freq) // self.stride_freq + 1

    def time_columns(self, frames):
        """Token columns for `frames` fbank frames (an int, or a tensor of them); inputs shorter
        than a patch are padded to one."""
        if isinstance(frames, Tensor):
            return (frames.clamp(min=self.patch_time) - self.patch_time) // self.stride_time + 1
        frames = max(frames, self.patch_time)
        return (frames - self.patch_time) // self.stride_time + 1

    @property
    def max_time_columns(self) -> int:
        return self.time_columns(self.max_frames)

    def frame_seconds(self, frame_shift_ms: float = FeatureConfig.frame_shift_ms) -> float:
        """Seconds of audio per token column (a CTC frame): the time stride in fbank frames
        times their shift. The one place the output frame rate is computed."""
        return self.stride_time * frame_shift_ms / 1000.0

    @property
    def frame_rate(self) -> float:
        """Token columns per second at the default fbank shift: 1 / frame_seconds(), written
        as one division so that it is exact (10, not 9.999...)."""
        return 1000.0 / (self.stride_time * FeatureConfig.frame_shift_ms)


class PatchEmbeddings(nn.Module):
    """Patches -> tokens as one matrix product: the patches are cut out by a reshape
    (non-overlapping: kernel = stride, every frame-patch layout) or `unfold` (AST's overlapping
    16x16 with stride 10), then multiplied by the kernel. The result is the convolution's, but no
    convolution kernel is involved: torch 2.11's CPU bf16 conv2d (oneDNN's AMX path) asked for
    67 GB on frame patches. The weights stay those of a Conv2d, so checkpoints load unchanged."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.projection = nn.Conv2d(
            1,
            cfg.embed_dim,
            kernel_size=(cfg.patch_freq, cfg.patch_time),
            stride=(cfg.stride_freq, cfg.stride_time),
        )

    def patches(self, feats: Tensor) -> Tensor:
        """(B, T, F) -> (B, F', T', patch_freq, patch_time): every patch, frequency-major."""
        c = self.cfg
        B, T, nbins = feats.shape
        rows, cols = (nbins - c.patch_freq) // c.stride_freq + 1, (T - c.patch_time) // c.stride_time + 1
        if (c.patch_freq, c.patch_time) == (c.stride_freq, c.stride_time):
            x = feats[:, : cols * c.patch_time, : rows * c.patch_freq]
            return x.reshape(B, cols, c.patch_time, rows, c.patch_freq).permute(0, 3, 1, 4, 2)
        x = feats.transpose(1, 2).unfold(1, c.patch_freq, c.stride_freq)  # (B, F', T, pf)
        return x.unfold(2, c.patch_time, c.stride_time)  # (B, F', T', pf, pt)

    def forward(self, feats: Tensor) -> Tensor:
        # (B, T, F) -> (B, F'*T', D), frequency-major like HF
        x = self.patches(feats)
        B, rows, cols = x.shape[:3]
        w = self.projection.weight
        x = x.reshape(B, rows * cols, w.shape[2] * w.shape[3])
        return F.linear(x, w.flatten(1), self.projection.bias)


def _conv_as_product(x: Tensor, conv: nn.Conv1d, stride: int) -> Tensor:
    """A kernel-3, padding-1 convolution along time of (B, T, C) -> (B, T', D) as unfold + one
    matrix product (no oneDNN convolution: see PatchEmbeddings), equal to `conv`'s result."""
    windows = F.pad(x, (0, 0, 1, 1)).unfold(1, 3, stride)  # (B, T', C, 3)
    return F.linear(windows.flatten(2), conv.weight.flatten(1), conv.bias)


class WhisperStem(nn.Module):
    """Whisper's encoder stem: GELU(conv1), GELU(conv2 with stride 2) along time, over all mel
    bins (named as in Whisper: conv1, conv2). Frames past an utterance's length are zeroed
    after conv1, so conv2 sees there what it sees at the end of the utterance alone (its own
    zero padding): an utterance gives the same tokens in a padded batch as alone."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, cfg.embed_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.embed_dim, cfg.embed_dim, kernel_size=3, stride=2, padding=1)

    def forward(self, feats: Tensor, frame_keep: Tensor | None = None) -> Tensor:
        x = F.gelu(_conv_as_product(feats, self.conv1, 1))
        if frame_keep is not None:
            x = x * frame_keep[..., None].to(x.dtype)
        return F.gelu(_conv_as_product(x, self.conv2, 2))


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        cfg.check_stem()
        if cfg.num_cls_tokens not in (0, 1, 2):
            raise ValueError("num_cls_tokens must be 0, 1 or 2")
        if cfg.num_cls_tokens >= 1:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        if cfg.num_cls_tokens == 2:
            self.distillation_token = nn.Parameter(torch.zeros(1, 1, D))
        self.patch_embeddings = WhisperStem(cfg) if cfg.stem == "whisper" else PatchEmbeddings(cfg)
        n = cfg.num_cls_tokens + cfg.freq_rows * cfg.max_time_columns
        self.position_embeddings = nn.Parameter(torch.zeros(1, n, D))
        self.dropout = nn.Dropout(cfg.dropout)

    def positions(self, columns: int) -> Tensor:
        """The position table sliced to the first `columns` time columns: (1, C + F'*T', D)."""
        cfg = self.cfg
        if columns > cfg.max_time_columns:
            raise ValueError(
                f"input has {columns} time columns but the position table covers "
                f"{cfg.max_time_columns} ({cfg.max_frames} frames); raise encoder.max_frames "
                "or cut the audio"
            )
        c = cfg.num_cls_tokens
        pos = self.position_embeddings
        grid = pos[:, c:].reshape(1, cfg.freq_rows, cfg.max_time_columns, -1)[:, :, :columns]
        return torch.cat([pos[:, :c], grid.reshape(1, cfg.freq_rows * columns, -1)], dim=1)

    def forward(self, feats: Tensor, frame_keep: Tensor | None = None) -> Tensor:
        """(B, T, F) -> (B, C + F'*T', D); `frame_keep` (B, T) marks valid frames (the Whisper
        stem needs it in a padded batch; patches past an utterance's end are masked later)."""
        if isinstance(self.patch_embeddings, WhisperStem):
            x = self.patch_embeddings(feats, frame_keep)
        else:
            x = self.patch_embeddings(feats)
        B = x.shape[0]
        cls = [self.cls_token.expand(B, -1, -1)] if self.cfg.num_cls_tokens >= 1 else []
        if self.cfg.num_cls_tokens == 2:
            cls.append(self.distillation_token.expand(B, -1, -1))
        x = torch.cat(cls + [x], dim=1) if cls else x
        columns = (x.shape[1] - self.cfg.num_cls_tokens) // self.cfg.freq_rows
        return self.dropout(x + self.positions(columns))


def unpack(xp: Tensor, index: Tensor, shape: tuple[int, int]) -> Tensor:
    """Packed (tokens, D) -> padded (B, N, D) = `shape` + (D,): token i goes to flat position
    index[i] of B x N, zeros elsewhere. (An index known in advance, not a boolean mask: masked
    indexing has a data-dependent size, which makes the host wait for the device.)"""
    B, N = shape
    return xp.new_zeros(B * N, xp.shape[-1]).index_copy(0, index, xp).view(B, N, -1)


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor onto `device` without making the host wait: pinned, asynchronous."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class Grid:
    """Where the time columns of a token sequence are, so convolutions along time can run on
    the padded (B, N, D) layout or the packed (tokens, D) one and never see padding.
    `keep` (B, N) marks the real tokens; `index` their flat positions in B x N."""

    def __init__(
        self, cfg: EncoderConfig, columns: int, keep: Tensor | None, index: Tensor | None = None, batch: int = 0
    ):
        self.c, self.rows, self.T, self.keep = cfg.num_cls_tokens, cfg.freq_rows, columns, keep
        self.index, self.B = index, batch

    def conv(self, x: Tensor, conv: nn.Conv1d) -> Tensor:
        """`conv` along time over each frequency row of x -> tensor shaped like x; class
        tokens pass through as zeros, padded columns are zeroed before the convolution.
        Sizes come from tensors' shapes where there are some (traced as sizes, not constants)."""
        packed = x.dim() == 2
        if packed:  # back to (B, N, D) with zeros at the padding
            shape = self.keep.shape if self.keep is not None else (self.B, self.c + self.rows * self.T)
            x = unpack(x, self.index, tuple(shape))
        else:
            x = self.zero_padding(x)
        B, N, D = x.shape
        T = (N - self.c) // self.rows
        grid = x[:, self.c :].reshape(B * self.rows, T, D).transpose(1, 2)
        y = conv(grid).transpose(1, 2).reshape(B, self.rows * T, D)
        y = torch.cat([y.new_zeros(B, self.c, D), y], dim=1)
        return y.flatten(0, 1).index_select(0, self.index) if packed else y

    def zero_padding(self, x: Tensor) -> Tensor:
        return x if self.keep is None else x * self.keep[..., None]


def _depthwise(D: int, kernel: int) -> nn.Conv1d:
    if kernel % 2 == 0:
        raise ValueError(f"convolution kernels must be odd (centred), got {kernel}")
    return nn.Conv1d(D, D, kernel, padding=kernel // 2, groups=D)


class ConvModule(nn.Module):
    """Conformer's convolution module (pointwise + GLU, depthwise, norm, SiLU, pointwise), with
    LayerNorm in place of BatchNorm so an utterance gives the same output alone or in a batch."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        D = cfg.embed_dim
        self.layernorm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.pointwise_in = nn.Linear(D, 2 * D)
        self.depthwise = _depthwise(D, cfg.conv_kernel)
        self.norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.pointwise_out = nn.Linear(D, D)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        y = F.glu(self.pointwise_in(self.layernorm(x)), dim=-1)
        y = F.silu(self.norm(grid.conv(y, self.depthwise)))
        return self.dropout(self.pointwise_out(y))


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        D = cfg.embed_dim
        if D % cfg.num_heads:
            raise ValueError(f"embed_dim {D} is not divisible by num_heads {cfg.num_heads}")
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(D, D)
        self.key = nn.Linear(D, D)
        self.value = nn.Linear(D, D)
        self.attn_dropout = cfg.attn_dropout

    def forward(self, x: Tensor, mask: Tensor | Packed | None) -> Tensor:
        h = self.num_heads
        dropout_p = self.attn_dropout if self.training else 0.0
        if isinstance(mask, Packed):  # x: (tokens, D)
            T, D = x.shape
            q, k, v = (lin(x).view(T, h, D // h) for lin in (self.query, self.key, self.value))
            return packed_attention(q, k, v, mask, dropout_p).reshape(T, D)
        B, N, D = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(B, N, h, D // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=mask,
            dropout_p=dropout_p,
        )
        return out.transpose(1, 2).reshape(B, N, D)


class SelfOutput(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.dense(x))


class Attention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.output = SelfOutput(cfg)

    def forward(self, x: Tensor, mask: Tensor | Packed | None) -> Tensor:
        return self.output(self.attention(x, mask))


class Intermediate(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Output(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(int(cfg.embed_dim * cfg.mlp_ratio), cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.dense(x))


class Block(nn.Module):
    """Pre-LN transformer block, named like HF's ASTLayer."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attention = Attention(cfg)
        self.layernorm_after = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)
        self.conv = ConvModule(cfg) if cfg.conv_kernel else None

    def forward(self, x: Tensor, mask: Tensor | Packed | None, grid: Grid | None = None) -> Tensor:
        x = x + self.attention(self.layernorm_before(x), mask)
        if self.conv is not None:
            x = x + self.conv(x, grid)
        return x + self.output(self.intermediate(self.layernorm_after(x)))


class Layers(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))


@dataclass
class EncoderOutput:
    hidden: Tensor  # (B, C + F'*T', D) after the final LayerNorm
    columns: Tensor  # (B,) valid time columns per utterance
    num_cls_tokens: int
    freq_rows: int

    @property
    def cls(self) -> Tensor:
        return self.hidden[:, : self.num_cls_tokens]

    def grid(self) -> Tensor:
        """Patch tokens as (B, F', T', D)."""
        B, _, D = self.hidden.shape
        return self.hidden[:, self.num_cls_tokens :].reshape(B, self.freq_rows, -1, D)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts to on this device type, or None where it is off or has no autocast
    (the meta device of a shape-only trace)."""
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class ASTEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        cfg.check_attention()
        self.embeddings = Embeddings(cfg)
        self.conv_pos = _depthwise(cfg.embed_dim, cfg.conv_pos) if cfg.conv_pos else None
        self.encoder = Layers(cfg)
        self.layernorm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        emb = self.embeddings
        nn.init.trunc_normal_(emb.position_embeddings, std=0.02)
        if self.cfg.num_cls_tokens >= 1:
            nn.init.trunc_normal_(emb.cls_token, std=0.02)
        if self.cfg.num_cls_tokens == 2:
            nn.init.trunc_normal_(emb.distillation_token, std=0.02)

    def compile_blocks(self, backend: str = "inductor") -> None:
        """torch.compile the block stack (every block and the final LayerNorm) as one graph, with
        dynamic shapes since every batch has another shape: no graph break at attention (its
        kernels are custom ops taking the batch's boundaries as a tensor and an int), so norms,
        residual adds and dropout fuse across blocks, and a new batch shape does not recompile.
        Parameter names, hence checkpoints, are unchanged. The glue (positions, masks, packing
        indices, planned on the CPU from the lengths) stays eager: compiling the whole forward
        failed in inductor on dynamic shapes (torch 2.11). Attention dropout is the exception:
        its loop stays eager (models/attention.py), a graph break per block."""
        leave_loop_out_of_graphs()
        self._compiled = torch.compile(self.stack, dynamic=True, backend=backend)

    _compiled = None

    def stack(self, x: Tensor, attn: Tensor | Packed | None, grid: Grid, dtype: torch.dtype | None = None) -> Tensor:
        """The blocks and the final LayerNorm over (B, N, D) tokens (attn: a key-padding mask
        or None) or packed (tokens, D) ones (attn: Packed); `dtype`: the residual stream's."""
        if dtype is not None:
            x = x.to(dtype)
        for block in self.encoder.layer:
            x = block(x, attn, grid)
        return self.layernorm(x)

    def residual_dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 where `bf16_residual` asks for it and bf16 autocast is on; else None (as built)."""
        dtype = _autocast_dtype(device.type)
        return dtype if self.cfg.bf16_residual and dtype == torch.bfloat16 else None

    def attention_kind(self, x: Tensor) -> tuple[torch.dtype, int, float]:
        """(dtype, head size, dropout) of this forward's attention: what a backend must take."""
        cfg = self.cfg
        dtype = _autocast_dtype(x.device.type) or x.dtype
        return dtype, cfg.embed_dim // cfg.num_heads, cfg.attn_dropout if self.training else 0.0

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """feats: (B, T, num_mel_bins) normalised fbank; lengths: (B,) valid frames.

        The lengths decide shapes (masks, packing), which the host must know: they are read on
        the CPU. Pass the loader's CPU tensor; a CUDA one costs one copy back (a device sync)."""
        cfg = self.cfg
        B, T, nbins = feats.shape
        if nbins != cfg.num_mel_bins:
            raise ValueError(f"expected {cfg.num_mel_bins} mel bins, got {nbins}")
        cfg.check_attention()
        if T < cfg.patch_time:  # shorter than one patch: pad (the same alone or in a batch)
            feats = F.pad(feats, (0, 0, 0, cfg.patch_time - T))
        dev = feats.device
        frames = torch.full((B,), T) if lengths is None else lengths.detach().to("cpu", torch.long)
        columns = cfg.time_columns(frames)  # (B,) on the CPU
        frame_keep = None
        if cfg.stem == "whisper" and bool((frames < feats.shape[1]).any()):
            frame_keep = to_device(torch.arange(feats.shape[1])[None, :] < frames[:, None], dev)
        x = self.embeddings(feats, frame_keep)
        total = (x.shape[1] - cfg.num_cls_tokens) // cfg.freq_rows
        N = x.shape[1]
        padded = bool((columns < total).any())
        packed = cfg.attention == "packed"  # packed: always, so one graph serves every batch
        keep = index = None
        if padded or packed:
            valid_t = torch.arange(total)[None, :] < columns[:, None]
            keep_cpu = torch.cat(
                [
                    torch.ones(B, cfg.num_cls_tokens, dtype=torch.bool),
                    valid_t[:, None, :].expand(B, cfg.freq_rows, total).reshape(B, -1),
                ],
                dim=1,
            )
            keep = to_device(keep_cpu, dev)
            index = to_device(keep_cpu.flatten().nonzero().squeeze(1), dev)
        grid = Grid(cfg, total, keep, index, B)
        columns_dev = to_device(columns, dev)
        if self.conv_pos is not None:
            x = x + F.gelu(grid.conv(x, self.conv_pos))
        stack = self._compiled or self.stack
        dtype = self.residual_dtype(dev)
        if packed:
            lengths_tok = cfg.num_cls_tokens + cfg.freq_rows * columns
            cu = torch.cat([torch.zeros(1, dtype=torch.long), lengths_tok.cumsum(0)]).to(torch.int32)
            backend = choose(cfg.attention_backend, dev, *self.attention_kind(x))
            attn = Packed(to_device(cu, dev), int(lengths_tok.max()), cu, backend)
            xp = x.flatten(0, 1).index_select(0, index)  # (tokens, D), utterance after utterance
            xp = stack(xp, attn, grid, dtype)
            return EncoderOutput(unpack(xp, index, (B, N)), columns_dev, cfg.num_cls_tokens, cfg.freq_rows)
        mask = keep[:, None, None, :] if padded else None  # (B, 1, 1, N): True = may be attended to
        x = stack(x, mask, grid, dtype)
        return EncoderOutput(x, columns_dev, cfg.num_cls_tokens, cfg.freq_rows)
