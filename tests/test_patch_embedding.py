"""The patch embedding is a reshape (or unfold) and one matrix product, not a convolution: equal
to nn.Conv2d with the same weights, and safe under CPU bf16 autocast at decode-sized inputs
(torch 2.11's bf16 conv2d on AMX CPUs asked for 35-67 GB for frame patches)."""

import pytest
import torch
from torch import nn

from astctc.models.encoder import EncoderConfig, PatchEmbeddings

# (patch_freq, patch_time, stride_freq, stride_time): every layout the recipes and tests use
LAYOUTS = {
    "frame128x4": (128, 4, 128, 4),  # the LibriSpeech / mini recipes' frame patches
    "frame128x2": (128, 2, 128, 2),
    "frame128x1": (128, 1, 128, 1),
    "ast16x16s10": (16, 16, 10, 10),  # AST: overlapping
    "ast16x16s16": (16, 16, 16, 16),  # non-overlapping square patches, several rows
    "rows16x4": (16, 4, 16, 4),
    "overlap_time": (128, 4, 128, 2),
}


def _embedding(layout: str, dim: int = 32) -> PatchEmbeddings:
    pf, pt, sf, st = LAYOUTS[layout]
    torch.manual_seed(0)
    cfg = EncoderConfig(patch_freq=pf, patch_time=pt, stride_freq=sf, stride_time=st, embed_dim=dim)
    emb = PatchEmbeddings(cfg)
    nn.init.normal_(emb.projection.weight, std=0.05)
    nn.init.normal_(emb.projection.bias, std=0.05)
    return emb


def _conv_reference(emb: PatchEmbeddings, feats: torch.Tensor) -> torch.Tensor:
    """What the Conv2d-based embedding computed: (B, T, F) -> (B, F'*T', D)."""
    return emb.projection(feats.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("frames", [16, 301, 1003])
def test_equals_the_convolution_in_fp32(layout, frames):
    emb = _embedding(layout)
    feats = torch.randn(3, frames, 128)
    with torch.no_grad():
        ours, ref = emb(feats), _conv_reference(emb, feats)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 1e-5, (ours - ref).abs().max()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_runs_under_cpu_bf16_autocast_at_decode_size(layout):
    """A decode batch (8 utterances of 10 s) in bf16 on the CPU: no huge allocation (it raised
    on AMX CPUs through conv2d), and the tokens are the fp32 ones to bf16's precision."""
    emb = _embedding(layout, dim=192)
    feats = torch.randn(8, 1000, 128)
    with torch.no_grad():
        ref = emb(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = emb(feats)
    assert ours.dtype == torch.bfloat16 and ours.shape == ref.shape
    err = (ours.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.02, err


def test_checkpoint_weights_are_a_conv2d_kernel():
    """The parameter names and shapes of the convolution are kept: old checkpoints load."""
    emb = _embedding("frame128x4")
    shapes = {k: tuple(v.shape) for k, v in emb.state_dict().items()}
    assert shapes == {"projection.weight": (32, 1, 128, 4), "projection.bias": (32,)}
