"""The packed attention path (encoder.attention = "packed") computes what the padded one does."""

import copy

import pytest
import torch

from astctc.models.attention import Packed, packed_attention
from astctc.models.heads import ClassifierConfig, CTCHead, CTCHeadConfig
from astctc.models.model import ASTModel, ModelConfig
from tests.test_model import LAYOUTS, small

LENGTHS = [400, 257, 31, 9]  # 9 frames: shorter than one 16-frame patch


def _pair(layout: str, **kw) -> tuple[ASTModel, ASTModel]:
    torch.manual_seed(0)
    enc = small(layout, **kw)
    padded = ASTModel(
        ModelConfig(enc, CTCHeadConfig(vocab_size=12, dropout=0.0), {"cls": ClassifierConfig(num_classes=3)})
    )
    packed = copy.deepcopy(padded)
    packed.encoder.cfg.attention = "packed"
    return padded, packed


def _batch():
    torch.manual_seed(1)
    lengths = torch.tensor(LENGTHS)
    feats = torch.randn(len(LENGTHS), max(LENGTHS), 128)
    for b, n in enumerate(LENGTHS):
        feats[b, n:] = 0
    targets, target_lengths = torch.randint(1, 12, (10,)), torch.tensor([4, 3, 2, 1])
    return feats, lengths, targets, target_lengths


def _loss(model, feats, lengths, targets, target_lengths):
    out = model(feats, lengths)
    loss = CTCHead.loss(out["log_probs"], out["lengths"], targets, target_lengths) + out["cls"].square().mean()
    return out, loss


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_equals_padded_outputs_and_gradients(layout):
    padded, packed = _pair(layout)
    batch = _batch()
    out_a, loss_a = _loss(padded, *batch)
    out_b, loss_b = _loss(packed, *batch)
    assert torch.equal(out_a["lengths"], out_b["lengths"])
    for b, cols in enumerate(out_a["lengths"].tolist()):
        assert torch.allclose(out_a["log_probs"][b, :cols], out_b["log_probs"][b, :cols], atol=1e-5)
    assert torch.allclose(out_a["cls"], out_b["cls"], atol=1e-5)
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
    loss_a.backward()
    loss_b.backward()
    grads_b = dict(packed.named_parameters())
    for name, p in padded.named_parameters():
        g_a, g_b = p.grad, grads_b[name].grad
        assert g_a is not None and g_b is not None, name
        # float32 sums over hundreds of tokens in another order: tolerance scales with the
        # gradient (in float64 the two paths agree to 1e-13)
        atol = 5e-5 * max(1.0, float(g_a.abs().max()))
        assert torch.allclose(g_a, g_b, atol=atol, rtol=1e-4), (name, (g_a - g_b).abs().max())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_path_skips_padding(layout):
    """The blocks see only valid tokens: C + F' x columns per utterance, no padding."""
    _, packed = _pair(layout)
    feats, lengths, *_ = _batch()
    seen = []
    hook = packed.encoder.encoder.layer[0].attention.attention.query.register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape)
    )
    with torch.no_grad():
        out = packed(feats, lengths)
    hook.remove()
    cfg = packed.cfg.encoder
    valid = sum(cfg.num_cls_tokens + cfg.freq_rows * c for c in out["lengths"].tolist())
    assert seen == [torch.Size([valid, cfg.embed_dim])]
    assert valid < len(LENGTHS) * (cfg.num_cls_tokens + cfg.freq_rows * int(out["lengths"].max()))


def test_packed_attention_keeps_utterances_apart():
    """Changing one utterance's keys changes only that utterance's outputs."""
    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 8, 15], dtype=torch.int32)  # lengths 5, 3, 7
    q, k, v = (torch.randn(15, 2, 8) for _ in range(3))
    p = Packed(cu, 7)
    base = packed_attention(q, k, v, p)
    k2 = k.clone()
    k2[5:8] += 1.0
    v2 = v.clone()
    v2[5:8] += 1.0
    moved = packed_attention(q, k2, v2, p)
    assert torch.equal(base[:5], moved[:5]) and torch.equal(base[8:], moved[8:])
    assert not torch.allclose(base[5:8], moved[5:8])
    full = torch.nn.functional.scaled_dot_product_attention(
        q[None].transpose(1, 2), k[None].transpose(1, 2), v[None].transpose(1, 2)
    )[0].transpose(0, 1)
    assert not torch.allclose(base, full, atol=1e-3)  # attending across utterances would differ


def test_unknown_attention_is_an_error():
    padded, _ = _pair("frame")
    padded.encoder.cfg.attention = "flash"
    with pytest.raises(ValueError, match="padded or packed"):
        padded(torch.randn(1, 50, 128))


# ------------------------------------------------------------------ duration batching


def _libri_like(n: int, seed: int = 0) -> list[dict]:
    """Durations like LibriSpeech train: mostly 11-18 s, a tail of short utterances, 2-35 s."""
    import numpy as np

    r = np.random.default_rng(seed)
    d = np.where(r.random(n) < 0.8, r.normal(14.6, 2.3, n), r.lognormal(np.log(6.0), 0.55, n))
    return [{"id": str(i), "duration": float(x)} for i, x in enumerate(np.clip(d, 2.0, 35.0))]


def _batches(src, **kw):
    from astctc.data.shards import BatchedShardDataset

    kw = {"bucket_buffer": 2000, "seed": 3, **kw}
    return list(BatchedShardDataset(src, lambda b: [(s["id"], s["duration"]) for s in b], **kw))


def _padding(batches) -> float:
    valid = sum(d for b in batches for _, d in b)
    return 1 - valid / sum(len(b) * max(d for _, d in b) for b in batches)


@pytest.mark.parametrize("budget", [120, 600])
def test_pool_batching_pads_under_5_percent(budget):
    src = _libri_like(6000)
    pool = _batches(src, max_batch_seconds=budget, num_buckets=0)
    assert sorted(i for b in pool for i, _ in b) == sorted(s["id"] for s in src)  # exactly once
    assert all(len(b) * max(d for _, d in b) <= budget for b in pool)
    buckets8 = _batches(src, max_batch_seconds=budget, num_buckets=8)
    assert _padding(pool) <= 0.05 < _padding(buckets8)


def test_seconds_squared_budget_caps_long_batches():
    src = _libri_like(3000)
    plain = _batches(src, max_batch_seconds=600, num_buckets=0)
    capped = _batches(src, max_batch_seconds=600, num_buckets=0, max_batch_seconds2=4000)
    assert sorted(i for b in capped for i, _ in b) == sorted(s["id"] for s in src)
    assert all(len(b) * max(d for _, d in b) ** 2 <= 4000 or len(b) == 1 for b in capped)
    assert any(len(b) * max(d for _, d in b) ** 2 > 4000 for b in plain)
    assert len(capped) > len(plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash-attention varlen needs CUDA")
@pytest.mark.parametrize("heads", [3, 4])  # head size 16: fa4 or fa2; 12: not a multiple of 8, sdpa
def test_packed_varlen_on_cuda_bf16_close_to_padded(heads):
    """On CUDA under bf16 autocast the packed path runs the backend `auto` picks (FA4 on Hopper
    where flash-attn-4 imports, else flash-attention 2's varlen, where the head size allows it;
    SDPA per utterance where not); either way its outputs match the padded SDPA path to bf16
    precision."""
    from astctc.models.attention import choose

    backend = choose("auto", torch.device("cuda"), torch.bfloat16, 48 // heads, 0.0)
    assert (backend != "sdpa") == (48 // heads % 8 == 0), backend
    for layout in LAYOUTS:
        padded, packed = (m.cuda() for m in _pair(layout, num_heads=heads))
        feats, lengths, targets, tl = (t.cuda() for t in _batch())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_a, loss_a = _loss(padded, feats, lengths, targets, tl)
            out_b, loss_b = _loss(packed, feats, lengths, targets, tl)
        for b, cols in enumerate(out_a["lengths"].tolist()):
            assert torch.allclose(out_a["log_probs"][b, :cols], out_b["log_probs"][b, :cols], atol=5e-2)
        assert abs(float(loss_a) - float(loss_b)) < 2e-2 * abs(float(loss_a))
        loss_b.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in packed.parameters())
