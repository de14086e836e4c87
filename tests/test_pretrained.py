"""Pretrained initialisation: parity with transformers' AST/ViT/DeiT, the AST adaptations, the
feature extractor, hub errors, and fine-tuning (layer decay, freezing, exact resume)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from astctc.config import load_config
from astctc.models.encoder import EncoderConfig
from astctc.models.heads import ClassifierConfig
from astctc.models.model import ASTModel, ModelConfig
from astctc.models.pretrained import (
    POS,
    PROJ,
    _our_name,
    _resize_matrix,
    adapt_patch_kernel,
    init_from_pretrained,
    resize_kernel,
)
from astctc.train import TrainConfig, Trainer, checkpoints, load_checkpoint
from tests.conftest import REPO, lj_rows, tiny_train_config

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def _randomise(hf, seed=0):
    """HF initialises positions and tokens to zeros; random values make every mapping matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in hf.named_parameters():
            mean = 1.0 if "layernorm" in n and n.endswith("weight") else 0.0
            p.copy_(mean + 0.2 * torch.randn(p.shape, generator=g))
    return hf.eval()


def _model(ctc=False, classifiers=None, **enc) -> ASTModel:
    from astctc.models.heads import CTCHeadConfig

    cfg = ModelConfig(EncoderConfig(**enc), CTCHeadConfig(vocab_size=5) if ctc else None, classifiers or {})
    return ASTModel(cfg).eval()


@pytest.fixture(scope="module")
def hf_ast(tmp_path_factory):
    cfg = transformers.ASTConfig(
        **{**TINY, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 256},
        num_mel_bins=128,
        max_length=100,
        num_labels=5,
    )
    assert cfg.hidden_act == "gelu" and cfg.layer_norm_eps == 1e-12  # our encoder: exact GELU, 1e-12
    hf = _randomise(transformers.ASTForAudioClassification(cfg))
    d = tmp_path_factory.mktemp("hf_ast")
    hf.save_pretrained(d)
    return hf, d


AST_ENC = dict(
    num_mel_bins=128,
    patch_freq=16,
    patch_time=16,
    stride_freq=10,
    stride_time=10,
    embed_dim=64,
    depth=2,
    num_heads=4,
    num_cls_tokens=2,
    max_frames=100,
)


def test_ast_parity_encoder_and_classifier(hf_ast):
    hf, d = hf_ast
    ours = _model(
        classifiers={"tags": ClassifierConfig(num_classes=5), "other": ClassifierConfig(num_classes=3)}, **AST_ENC
    )
    x = torch.randn(2, 100, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf.audio_spectrogram_transformer(x).last_hidden_state
        ref_logits = hf(x).logits
        before = (ours.encoder(x).hidden - ref).abs().max()
        report = init_from_pretrained(ours, str(d))
        out = ours(x)
        hidden = ours.encoder(x).hidden
    assert before > 0.1  # the comparison can tell a random encoder from the loaded one
    assert (hidden - ref).abs().max() < 1e-5
    assert (out["tags"] - ref_logits).abs().max() < 1e-5
    assert report.status(POS) == "loaded" and report.status(PROJ) == "loaded"
    assert report.status("classifiers.tags.dense.weight") == "loaded"
    assert report.status("classifiers.other.dense.weight") == "new"  # 3 classes, source has 5
    assert report.count("adapted") == 0 and report.unused == []


@pytest.mark.parametrize("max_frames, columns, how", [(60, 5, "cut"), (200, 19, "bilinear")])
def test_ast_positions_cut_from_middle_or_interpolated(hf_ast, max_frames, columns, how):
    hf, d = hf_ast
    ours = _model(**{**AST_ENC, "max_frames": max_frames})
    report = init_from_pretrained(ours, str(d))
    src = hf.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    grid = src[0, 2:].reshape(12, 9, 64)  # AST's table: frequency-major 12 x 9
    if how == "cut":  # AST: columns [9//2 - 5//2, +5) = [2, 7)
        want = grid[:, 2:7]
    else:  # one axis at a time; bilinear with equal row counts is linear along time
        want = F.interpolate(grid.permute(2, 0, 1)[None], size=(12, columns), mode="bilinear")[0].permute(1, 2, 0)
    got = ours.encoder.embeddings.position_embeddings.detach()
    assert got.shape == (1, 2 + 12 * columns, 64)
    assert torch.equal(got[0, :2], src[0, :2])
    assert (got[0, 2:].reshape(12, columns, 64) - want).abs().max() < 1e-6
    assert report.status(POS) == "adapted" and how in dict((n, h) for n, _, h in report.rows)[POS]


def _vit_like(kind: str, tmp_path: Path, image_size=32, seed=0):
    if kind == "vit":
        hf = transformers.ViTModel(transformers.ViTConfig(**TINY, image_size=image_size, patch_size=8))
    else:  # the hub's DeiT checkpoints are the with-teacher classifiers
        hf = transformers.DeiTForImageClassificationWithTeacher(
            transformers.DeiTConfig(**TINY, image_size=image_size, patch_size=8, num_labels=7)
        )
    hf = _randomise(hf, seed)
    hf.save_pretrained(tmp_path / kind)
    return (hf if kind == "vit" else hf.deit), tmp_path / kind


def _image(x: torch.Tensor) -> torch.Tensor:
    """Our (B, T, F) input as the grey image the 3-channel model sees: rows = mel bins."""
    return x.transpose(1, 2)[:, None].repeat(1, 3, 1, 1)


@pytest.mark.parametrize("kind, num_cls", [("vit", 1), ("deit", 2)])
def test_vit_deit_parity_with_summed_rgb_kernel(kind, num_cls, tmp_path):
    hf, d = _vit_like(kind, tmp_path)
    ours = _model(
        num_mel_bins=32,
        patch_freq=8,
        patch_time=8,
        stride_freq=8,
        stride_time=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_cls_tokens=num_cls,
        max_frames=32,
    )
    report = init_from_pretrained(ours, str(d))
    x = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(_image(x)).last_hidden_state
        got = ours.encoder(x).hidden
    assert (got - ref).abs().max() < 1e-5
    rgb = hf.embeddings.patch_embeddings.projection.weight
    assert torch.equal(ours.encoder.embeddings.patch_embeddings.projection.weight, rgb.sum(1, keepdim=True))
    assert report.status(PROJ) == "adapted" and report.status(POS) == "loaded"
    assert any("pooler" in u or "classifier" in u for u in report.unused)


@pytest.mark.parametrize("mel, frames", [(16, 64), (48, 32)])
def test_vit_positions_adapted_per_axis_gives_the_adapted_image_model(mel, frames, tmp_path):
    """Source grid 4 x 6 (32 x 48 image). (16, 64): rows cut 4->2 from the middle, columns
    interpolated 6->8; (48, 32): rows interpolated 4->6, columns cut 6->4. The reference is the
    image model with the table adapted here by hand, fed the grey image of the same input."""
    hf, d = _vit_like("vit", tmp_path, image_size=(32, 48))
    ours = _model(
        num_mel_bins=mel,
        patch_freq=8,
        patch_time=8,
        stride_freq=8,
        stride_time=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_cls_tokens=1,
        max_frames=frames,
    )
    report = init_from_pretrained(ours, str(d))
    assert report.status(POS) == "adapted"

    pos = hf.embeddings.position_embeddings.detach()
    grid = pos[0, 1:].reshape(4, 6, 32).permute(2, 0, 1)[None]  # (1, D, rows, cols)
    R, C = mel // 8, frames // 8
    grid = grid[..., 3 - C // 2 : 3 - C // 2 + C] if C < 6 else F.interpolate(grid, size=(4, C), mode="bilinear")
    grid = grid[:, :, 2 - R // 2 : 2 - R // 2 + R] if R < 4 else F.interpolate(grid, size=(R, C), mode="bilinear")
    table = torch.cat([pos[:, :1], grid[0].permute(1, 2, 0).reshape(1, R * C, 32)], dim=1)
    ref_model = transformers.ViTModel(
        transformers.ViTConfig(**TINY, image_size=(mel, frames), patch_size=8), add_pooling_layer=False
    ).eval()
    sd = {k: v for k, v in hf.state_dict().items() if not k.startswith("pooler")}
    ref_model.load_state_dict({**sd, "embeddings.position_embeddings": table})
    x = torch.randn(2, frames, mel, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours.encoder(x).hidden - ref_model(_image(x)).last_hidden_state).abs().max() < 1e-5


def test_vit_one_token_into_two_token_model(tmp_path):
    hf, d = _vit_like("vit", tmp_path)
    ours = _model(
        num_mel_bins=32,
        patch_freq=8,
        patch_time=8,
        stride_freq=8,
        stride_time=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_cls_tokens=2,
        max_frames=32,
    )
    report = init_from_pretrained(ours, str(d))
    emb = ours.encoder.embeddings
    assert torch.equal(emb.distillation_token, emb.cls_token)
    assert torch.equal(emb.cls_token, hf.embeddings.cls_token)
    assert torch.equal(emb.position_embeddings[0, 1], emb.position_embeddings[0, 0])
    assert torch.equal(emb.position_embeddings[0, 2:], hf.embeddings.position_embeddings[0, 1:])
    assert report.status("encoder.embeddings.distillation_token") == "adapted"


def test_ast_into_frame_patches_one_token_and_ctc(hf_ast):
    """AST 16x16 patches, 2 tokens -> SSAST frame patches 128 x 4 with one token and a CTC head."""
    _, d = hf_ast
    ours = _model(
        ctc=True,
        num_mel_bins=128,
        patch_freq=128,
        patch_time=4,
        stride_freq=128,
        stride_time=4,
        embed_dim=64,
        depth=1,
        num_heads=4,
        num_cls_tokens=1,
        max_frames=400,
    )
    report = init_from_pretrained(ours, str(d))
    how = dict((n, h) for n, _, h in report.rows)
    assert "16x16 -> 128x4 (pi-resize)" in how[PROJ]
    assert "frequency 12->1 cut from the middle [6:7]" in how[POS] and "time 9->100 bilinear" in how[POS]
    assert "distillation position dropped" in how[POS]
    assert report.status("ctc.proj.weight") == "new"
    assert "encoder.embeddings.distillation_token" in report.unused
    assert any(u.startswith("encoder.encoder.layer.1.") for u in report.unused)  # depth 1 of 2
    assert report.notes and "first 1" in report.notes[0]


def test_ast_into_encoder_with_convolution_modules(hf_ast):
    """conv_kernel adds modules AST lacks: they are new, everything AST has still loads."""
    hf, d = hf_ast
    ours = _model(**{**AST_ENC, "conv_kernel": 3})
    report = init_from_pretrained(ours, str(d))
    conv = [n for n, _ in ours.named_parameters() if ".conv." in n]
    assert conv and all(report.status(n) == "new" for n in conv)
    assert report.status("encoder.encoder.layer.1.attention.attention.query.weight") == "loaded"
    assert not report.unused or all(not u.startswith("encoder.") for u in report.unused)


def test_architecture_mismatch_names_the_settings(hf_ast):
    with pytest.raises(ValueError, match=r"model.encoder.embed_dim=64 model.encoder.num_heads=4"):
        init_from_pretrained(_model(**{**AST_ENC, "embed_dim": 32, "num_heads": 2}), str(hf_ast[1]))


def test_pi_resize_keeps_tokens_and_rgb_sum():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(6, 3, 8, 8, generator=g)
    x = torch.randn(5, 1, 8, 8, generator=g)
    w1, how = adapt_patch_kernel(w, (16, 16))
    assert "3 input channels summed" in how and "8x8 -> 16x16" in how
    # the grey image x in R, G and B through the RGB kernel == x through the summed kernel
    ref = F.conv2d(x.repeat(1, 3, 1, 1), w).flatten(1)
    big = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert (F.conv2d(big, w1).flatten(1) - ref).abs().max() < 1e-4  # PI-resize: same tokens
    plain = resize_kernel(w.sum(1, keepdim=True), (16, 16), "bilinear")
    assert (F.conv2d(big, plain).flatten(1) - ref).abs().max() > 1e-2  # plain interpolation is not
    assert _resize_matrix((8, 8), (16, 16)).shape == (256, 64)


def test_features_match_hf_extractor(shared_data):
    """Our fbank == ASTFeatureExtractor (torchaudio path) on the mean-removed waveform, exactly.

    Differences, all documented in docs/architecture.md: (1) AST's own code subtracts the waveform
    mean and HF's extractor does not; Kaldi's per-frame DC removal makes that a rounding-level
    difference (< 1e-4 here). (2) HF pads every clip to max_length frames with log-mel 0, i.e.
    (0 - mean) / (2 std) after normalisation; we do not pad (the encoder masks instead).
    """
    from astctc.audio import load_audio
    from astctc.features import FeatureConfig, fbank

    wav = load_audio(lj_rows(shared_data, 1)[0]["audio"])[: 3 * 16000]
    ours = fbank(wav)
    T = ours.shape[0]
    fe = transformers.ASTFeatureExtractor(max_length=T + 20)

    def hf(w):
        return torch.from_numpy(fe(w.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0])

    centred = hf(wav - wav.mean())
    assert torch.equal(centred[:T], ours)
    assert 0 < (hf(wav)[:T] - ours).abs().max() < 1e-4
    cfg = FeatureConfig()
    assert torch.allclose(centred[T:], torch.full((20, 128), (0 - cfg.norm_mean) / (2 * cfg.norm_std)))


def test_hub_offline_is_a_clear_message(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO))
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    repo = "MIT/ast-finetuned-audioset-10-10-0.4593"
    p = subprocess.run(
        [sys.executable, "-m", "astctc.cli", "init-check", "--init", f"hf://{repo}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert f"hf download {repo} --local-dir pretrained/ast-finetuned-audioset-10-10-0.4593" in p.stderr
    assert "init: pretrained/ast-finetuned-audioset-10-10-0.4593" in p.stderr


# ---- training from an init: the recipe conf, layer decay, freezing, exact resume ----------


@pytest.fixture(scope="module")
def tiny_hf_ast(tmp_path_factory):
    hf = _randomise(transformers.ASTModel(transformers.ASTConfig(**TINY, num_mel_bins=128, max_length=100)))
    d = tmp_path_factory.mktemp("tiny_ast")
    hf.save_pretrained(d)
    return hf, d


def _encoder_state(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def test_finetune_local_conf_trains_two_steps(tiny_corpus, tiny_hf_ast, tmp_path):
    hf, d = tiny_hf_ast
    exp = tmp_path / "exp"
    layout = ("patch_", "stride_", "num_cls_tokens", "max_frames")  # keep the conf's AST layout
    sets = [
        s
        for s in tiny_train_config(tiny_corpus, exp, init=d, max_steps=2, validate=False)
        if not s.startswith("model.encoder.") or not any(k in s for k in layout)
    ]
    cfg = load_config(TrainConfig, REPO / "recipes/mini/conf/finetune_local.yaml", sets)
    assert cfg.model.encoder.stride_time == 4 and cfg.optim.freeze_encoder_steps >= 2
    trainer = Trainer(cfg)
    ref = {_our_name(k): v for k, v in hf.state_dict().items()}  # either transformers layout
    q = "encoder.encoder.layer.0.attention.attention.query.weight"
    assert torch.equal(trainer.model.state_dict()[q], ref[q])
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    final = load_checkpoint(checkpoints(exp)[-1])
    assert final["step"] == 2
    for k, v in _encoder_state(final["model"]).items():  # frozen for the first N steps
        assert torch.equal(v, init[k]), k
    assert not torch.equal(final["model"]["ctc.proj.weight"], init["ctc.proj.weight"])
    text = (exp / "init.txt").read_text()
    assert "time 9->253 bilinear" in text and "frequency 12 kept" in text
    assert "new      ctc.proj.weight" in text and "loaded   " + q in text


def test_layer_decay_groups(tiny_corpus, tiny_hf_ast, tmp_path):
    sets = tiny_train_config(tiny_corpus, tmp_path / "exp", **{"optim.layer_decay": 0.5, "optim.lr": 1.0})
    trainer = Trainer(load_config(TrainConfig, None, sets))
    lr = {id(p): g["initial_lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    want = {
        "encoder.embeddings.": 0.125,
        "encoder.encoder.layer.0.": 0.25,
        "encoder.encoder.layer.1.": 0.5,
        "encoder.layernorm.": 1.0,
        "ctc.": 1.0,
    }
    for n, p in trainer.model.named_parameters():
        assert lr[id(p)] == next(v for k, v in want.items() if n.startswith(k)), n
        assert wd[id(p)] == (0.05 if p.ndim >= 2 and "embeddings" not in n else 0.0), n
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 1.0  # the logged lr is the base lr
    plain = Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, tmp_path / "plain")))
    assert [g["weight_decay"] for g in plain.optimizer.param_groups] == [0.05, 0.0]


def test_freeze_and_layer_decay_resume_exactly(tiny_corpus, tiny_hf_ast, tmp_path):
    """Stop at step 2 (encoder still frozen), resume to 4 (unfrozen at 2): equals a straight run."""
    _, d = tiny_hf_ast

    def sets(exp, steps):
        return tiny_train_config(
            tiny_corpus,
            exp,
            init=d,
            max_steps=steps,
            validate=False,
            **{
                "model.encoder.embed_dim": 32,
                "model.encoder.num_heads": 2,
                "optim.schedule": "constant",
                "optim.layer_decay": 0.5,
                "optim.freeze_encoder_steps": 2,
            },
        )

    Trainer(load_config(TrainConfig, None, sets(tmp_path / "straight", 4))).run()
    Trainer(load_config(TrainConfig, None, sets(tmp_path / "resumed", 2))).run()
    at2 = load_checkpoint(checkpoints(tmp_path / "resumed")[-1])["model"]
    Trainer(load_config(TrainConfig, None, sets(tmp_path / "resumed", 4))).run()
    a = load_checkpoint(checkpoints(tmp_path / "straight")[-1])
    b = load_checkpoint(checkpoints(tmp_path / "resumed")[-1])
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert not torch.equal(at2["encoder.layernorm.weight"], a["model"]["encoder.layernorm.weight"])  # unfrozen


def test_encoder_warms_up_again_after_a_frozen_start():
    """With freeze_encoder_steps, the encoder's lr is 0 while frozen, then ramps over warmup_steps
    from the unfreezing step; the heads follow the plain schedule."""
    from astctc.train.config import OptimConfig
    from astctc.train.optim import make_optimizer
    from tests.conftest import tiny_ctc_model

    model, _ = tiny_ctc_model()
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="constant", freeze_encoder_steps=10)
    optimizer, scheduler = make_optimizer(model, cfg, 100)
    heads = [
        g for g in optimizer.param_groups if all(p is not q for p in g["params"] for q in model.encoder.parameters())
    ]
    assert optimizer.param_groups[0] in heads  # the logged lr is the heads'
    seen = []
    for step in range(16):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    enc = [row[-1] for row in seen]
    assert enc[:10] == [0.0] * 10 and enc[10:15] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [row[0] for row in seen][3:] == [1.0] * 13
