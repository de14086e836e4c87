"""Model FLOPs of a batch, counted on its valid tokens: what MFU divides by.

Per utterance of N tokens (P patch tokens, C class tokens, N = C + P), the forward pass costs
the patch embedding 2*P*pf*pt*D (Whisper's stem: conv1 2*frames*bins*3*D, conv2 2*P*D*3*D),
per block the qkv/output/MLP matmuls 2*N*D*(4D + 2*mlp*D) and
the attention scores and values 4*N^2*D, the convolution module when configured (pointwise
D->2D and D->D: 2*N*D*3D; depthwise 2*P*D*k), and the CTC projection 2*T'*width*V. A training
step is 3x the forward (backward = input + weight gradients), except the patch embedding,
whose input needs no gradient (2x). Padding is waste, not work: it is not counted.
Checked against torch.utils.flop_counter on the matmuls and the patch convolution
(tests/test_model.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from .encoder import EncoderConfig
from .model import ModelConfig


def encoder_tokens(enc: EncoderConfig, frames: int) -> int:
    """Tokens the encoder runs on for an utterance of `frames` fbank frames."""
    return enc.num_cls_tokens + enc.freq_rows * enc.time_columns(frames)


def forward_flops(cfg: ModelConfig, frames: Iterable[int]) -> tuple[float, float]:
    """(encoder blocks + heads, patch embedding) forward FLOPs of utterances of `frames`."""
    enc = cfg.encoder
    D, hidden = enc.embed_dim, int(enc.embed_dim * enc.mlp_ratio)
    width = 0
    if cfg.ctc is not None:
        width = D * (enc.freq_rows if cfg.ctc.combine == "concat" else 1)
    body, patch = 0.0, 0.0
    for n in frames:
        cols = enc.time_columns(int(n))
        P = enc.freq_rows * cols
        N = enc.num_cls_tokens + P
        if enc.stem == "whisper":  # conv1 over every frame (its input needs no gradient), conv2 per token
            patch += 2 * int(n) * enc.num_mel_bins * 3 * D
            body += 2 * P * D * 3 * D
        else:
            patch += 2 * P * enc.patch_freq * enc.patch_time * D
        body += enc.depth * (2 * N * D * (4 * D + 2 * hidden) + 4 * N * N * D)
        if enc.conv_kernel:
            body += enc.depth * (2 * N * D * 3 * D + 2 * P * D * enc.conv_kernel)
        if enc.conv_pos:
            body += 2 * P * D * enc.conv_pos
        if cfg.ctc is not None:
            body += 2 * cols * width * cfg.ctc.vocab_size
        body += sum(2 * D * c.num_classes for c in cfg.classifiers.values())
    return body, patch


def train_flops(cfg: ModelConfig, frames: Iterable[int], encoder_backward: bool = True) -> float:
    """FLOPs of a training step over utterances of `frames` fbank frames: 3x the forward, 2x
    for the patch embedding; with a frozen encoder (`encoder_backward=False`) the encoder runs
    forward only (the heads' share, small, is counted 3x all the same)."""
    body, patch = forward_flops(cfg, frames)
    return 3 * body + 2 * patch if encoder_backward else body + patch
