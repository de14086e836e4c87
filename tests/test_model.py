import pytest
import torch

from astctc.features import FeatureConfig
from astctc.models.encoder import ASTEncoder, EncoderConfig
from astctc.models.heads import ClassifierConfig, CTCHead, CTCHeadConfig
from astctc.models.model import ASTModel, ModelConfig, load_model
from astctc.tokenizer import CharTokenizer

LAYOUTS = {
    "ast16x16": dict(patch_freq=16, patch_time=16, stride_freq=10, stride_time=10, num_cls_tokens=2),
    "frame": dict(patch_freq=128, patch_time=2, stride_freq=128, stride_time=2, num_cls_tokens=1),
    # convolutions along time (position embedding + Conformer module) must not see padding either
    "frame+conv": dict(
        patch_freq=128, patch_time=2, stride_freq=128, stride_time=2, num_cls_tokens=1, conv_pos=5, conv_kernel=7
    ),
    "ast16x16+conv": dict(
        patch_freq=16, patch_time=16, stride_freq=10, stride_time=10, num_cls_tokens=2, conv_pos=3, conv_kernel=5
    ),
}


def small(layout: str, **kw) -> EncoderConfig:
    return EncoderConfig(**{"embed_dim": 48, "depth": 3, "num_heads": 4, "max_frames": 600, **LAYOUTS[layout], **kw})


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_padding_invariance(layout, combine):
    """An utterance inside a padded batch gives the outputs it gives alone (within 1e-5)."""
    torch.manual_seed(0)
    model = ASTModel(
        ModelConfig(
            small(layout), CTCHeadConfig(vocab_size=12, combine=combine), {"cls": ClassifierConfig(num_classes=3)}
        )
    ).eval()
    lengths = torch.tensor([400, 257, 31, 9])  # 9 frames: shorter than one 16-frame patch
    feats = torch.randn(4, 400, 128)
    for b, n in enumerate(lengths):
        feats[b, n:] = 0  # what collate pads with
    with torch.no_grad():
        batch = model(feats, lengths)
        enc_batch = model.encoder(feats, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = model(feats[b : b + 1, :n])
            enc_alone = model.encoder(feats[b : b + 1, :n])
            cols = int(alone["lengths"][0])
            assert cols == int(batch["lengths"][b])
            assert torch.allclose(batch["log_probs"][b, :cols], alone["log_probs"][0], atol=1e-5)
            assert torch.allclose(batch["cls"][b], alone["cls"][0], atol=1e-5)
            g_b, g_a = enc_batch.grid()[b, :, :cols], enc_alone.grid()[0]
            assert torch.allclose(g_b, g_a, atol=1e-5)


def test_padding_changes_output_without_mask():
    """The invariance test can fail: dropping the mask lets padding leak into valid frames."""
    torch.manual_seed(0)
    enc = ASTEncoder(small("frame")).eval()
    feats = torch.randn(2, 200, 128)
    feats[1, 100:] = 0
    with torch.no_grad():
        masked = enc(feats, torch.tensor([200, 100])).grid()[1, :, :50]
        unmasked = enc(feats, torch.tensor([200, 200])).grid()[1, :, :50]
        alone = enc(feats[1:, :100]).grid()[0]
    assert torch.allclose(masked, alone, atol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def test_convolutions_leak_padding_when_not_zeroed(monkeypatch):
    """The conv layouts' invariance test can fail: unzeroed padding reaches valid columns."""
    from astctc.models.encoder import Grid

    torch.manual_seed(0)
    enc = ASTEncoder(small("frame+conv")).eval()
    feats = torch.randn(2, 200, 128)
    feats[1, 100:] = 0
    with torch.no_grad():
        alone = enc(feats[1:, :100]).grid()[0]
        assert torch.allclose(enc(feats, torch.tensor([200, 100])).grid()[1, :, :50], alone, atol=1e-5)
        monkeypatch.setattr(Grid, "zero_padding", lambda self, x: x)
        leaky = enc(feats, torch.tensor([200, 100])).grid()[1, :, :50]
    assert not torch.allclose(leaky, alone, atol=1e-3)


def test_shapes_and_token_counts():
    cfg = small("ast16x16")
    assert cfg.freq_rows == 12 and cfg.time_columns(1024) == 101 and cfg.frame_rate == 10
    f = small("frame")
    assert f.freq_rows == 1 and f.time_columns(100) == 50 and f.frame_rate == 50
    model = ASTModel(ModelConfig(cfg, CTCHeadConfig(vocab_size=7)))
    out = model(torch.randn(2, 300, 128), torch.tensor([300, 160]))
    assert out["log_probs"].shape == (2, 29, 7)
    assert out["lengths"].tolist() == [29, 15]
    assert torch.allclose(out["log_probs"].exp().sum(-1), torch.ones(2, 29), atol=1e-4)


def test_too_long_input_is_a_clear_error():
    enc = ASTEncoder(small("frame"))
    with pytest.raises(ValueError, match="max_frames"):
        enc(torch.randn(1, 700, 128))


def test_ctc_loss_learns_a_target():
    torch.manual_seed(0)
    model = ASTModel(ModelConfig(small("frame"), CTCHeadConfig(vocab_size=6, dropout=0.0)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    feats, lengths = torch.randn(2, 60, 128), torch.tensor([60, 40])
    targets, tl = torch.tensor([1, 2, 3, 4, 5, 5, 1]), torch.tensor([4, 3])
    first = None
    for _ in range(60):
        out = model(feats, lengths)
        loss = CTCHead.loss(out["log_probs"], out["lengths"], targets, tl)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * first


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    tok = CharTokenizer.train(["abc d"])
    cfg = ModelConfig(
        small("ast16x16"),
        CTCHeadConfig(vocab_size=tok.vocab_size),
        {"kws": ClassifierConfig(num_classes=4, classes=list("abcd"))},
    )
    model = ASTModel(cfg).eval()
    model.save(tmp_path / "m", FeatureConfig(norm_mean=-1.0), tok)
    loaded = load_model(tmp_path / "m")
    assert loaded.features.norm_mean == -1.0
    assert loaded.tokenizer.symbols == tok.symbols
    assert loaded.model.cfg.classifiers["kws"].classes == list("abcd")
    x = torch.randn(1, 200, 128)
    with torch.no_grad():
        assert torch.equal(model(x)["log_probs"], loaded.model(x)["log_probs"])
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model(tmp_path)
