"""Whisper as an init source: its log-mel frontend equals transformers' WhisperFeatureExtractor,
its encoder loaded into ours equals transformers' WhisperEncoder, our encoder runs any length
unpadded and is padding-invariant in a batch, and the init report says what was loaded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from astctc.audio import load_audio
from astctc.features import FeatureConfig, fbank, whisper_log_mel
from astctc.models.encoder import EncoderConfig
from astctc.models.heads import ClassifierConfig, CTCHeadConfig
from astctc.models.model import ASTModel, ModelConfig
from astctc.models.pretrained import init_from_pretrained, load_source, whisper_sinusoids

from .test_hub import hub  # noqa: F401  (the local stand-in Hub fixture)


def whisper_tiny_encoder(**kw) -> EncoderConfig:
    """Whisper tiny's encoder geometry in our config."""
    cfg = dict(num_mel_bins=80, patch_freq=80, stride_freq=80, patch_time=1, stride_time=2, embed_dim=384)
    cfg.update(depth=4, num_heads=6, mlp_ratio=4.0, num_cls_tokens=0, max_frames=3000, layer_norm_eps=1e-5)
    return EncoderConfig(**{**cfg, "stem": "whisper", **kw})


@pytest.fixture(scope="module")
def clips(shared_data) -> dict[str, torch.Tensor]:
    """Real clips of other speakers, corpora and lengths (a 0.6-16 s spread)."""
    ls = shared_data / "librispeech_sample" / "LibriSpeech"
    an4 = sorted((shared_data / "an4" / "wav" / "an4test_clstk").rglob("*.flac"))[0]
    paths = {
        "librispeech": ls / "test-clean" / "1089" / "134686" / "1089-134686-0000.flac",
        "ljspeech": shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac",
        "an4": an4,
    }
    return {k: load_audio(p) for k, p in paths.items()}


@pytest.fixture(scope="module")
def whisper_dir(shared_data):
    return shared_data / "whisper_tiny_en"


@pytest.mark.parametrize("bins", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(clips, bins):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=bins)
    for name, wav in clips.items():
        ref = fe(wav.numpy(), sampling_rate=16000, return_tensors="np", padding="longest")["input_features"][0].T
        ours = fbank(wav, FeatureConfig(kind="whisper", num_mel_bins=bins)).numpy()
        assert ours.shape == ref.shape == (wav.numel() // 160, bins), name
        assert np.abs(ours - ref).max() < 1e-4, (name, np.abs(ours - ref).max())
        # padded to 30 s, as Whisper itself is fed
        ref30 = fe(wav.numpy(), sampling_rate=16000, return_tensors="np")["input_features"][0].T
        ours30 = whisper_log_mel(torch.nn.functional.pad(wav, (0, 480000 - wav.numel())), bins).numpy()
        assert np.abs(ours30 - ref30).max() < 1e-4, name


def test_log_mel_batch_equals_one_by_one(clips):
    wavs = [clips["librispeech"][:48000], clips["an4"][:30000]]  # lengths multiples of 160
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    out = whisper_log_mel(batch, 80, torch.tensor([w.numel() for w in wavs]))
    for b, w in enumerate(wavs):
        alone = whisper_log_mel(w, 80)
        assert torch.allclose(out[b, : alone.shape[0]], alone, atol=1e-5)


def test_frame_counts():
    cfg = FeatureConfig(kind="whisper", num_mel_bins=80)
    assert [cfg.frames(n) for n in (200, 201, 319, 320, 16000)] == [0, 1, 1, 2, 100]
    assert all(cfg.frames(cfg.samples_for(f)) == f for f in (1, 2, 7, 3000))
    kaldi = FeatureConfig()
    assert all(kaldi.frames(kaldi.samples_for(f)) == f for f in (1, 2, 7, 1024))


def test_encoder_equals_transformers_whisper_encoder(clips, whisper_dir):
    """Our encoder with Whisper tiny.en's weights, on a real clip padded to 30 s as Whisper is fed."""
    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    hf = WhisperEncoder(WhisperConfig.from_pretrained(whisper_dir)).eval()
    weights = load_file(whisper_dir / "model.safetensors")
    state = {k.removeprefix("model.encoder."): v.float() for k, v in weights.items()}
    hf.load_state_dict(state, strict=True)
    model = ASTModel(ModelConfig(whisper_tiny_encoder(), CTCHeadConfig(vocab_size=30))).eval()
    init_from_pretrained(model, str(whisper_dir))
    wav = clips["librispeech"]
    x = whisper_log_mel(torch.nn.functional.pad(wav, (0, 480000 - wav.numel())), 80)  # (3000, 80)
    with torch.no_grad():
        ref = hf(x.T[None]).last_hidden_state
        ours = model.encoder(x[None]).hidden
    assert ours.shape == ref.shape == (1, 1500, 384)
    err = (ours - ref).abs().max().item()
    assert err < 1e-4, err


@pytest.mark.parametrize("attention", ["padded", "packed"])
def test_unpadded_any_length_and_padding_invariant(clips, attention):
    """Clips run at their own length (tokens follow the audio: ceil(frames / 2)), and each gives
    the same outputs in a padded batch as alone, odd frame counts included."""
    torch.manual_seed(0)
    enc = whisper_tiny_encoder(embed_dim=48, num_heads=4, depth=2, attention=attention)
    model = ASTModel(ModelConfig(enc, CTCHeadConfig(vocab_size=12), {"c": ClassifierConfig(3, pool="mean")})).eval()
    feats = [whisper_log_mel(w[:n], 80) for w, n in zip(clips.values(), (48000, 30080, 12000))]
    feats[1] = feats[1][:-1]  # an odd number of frames
    lengths = torch.tensor([f.shape[0] for f in feats])
    batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    with torch.no_grad():
        out = model(batch, lengths)
        for b, f in enumerate(feats):
            alone = model(f[None])
            n = (f.shape[0] + 1) // 2
            assert alone["log_probs"].shape[1] == n and int(out["lengths"][b]) == n
            assert torch.allclose(out["log_probs"][b, :n], alone["log_probs"][0], atol=1e-5), b
            assert torch.allclose(out["c"][b], alone["c"][0], atol=1e-5), b


def test_init_report(whisper_dir):
    model = ASTModel(ModelConfig(whisper_tiny_encoder(), CTCHeadConfig(vocab_size=30)))
    report = init_from_pretrained(model, str(whisper_dir), features=FeatureConfig(kind="whisper", num_mel_bins=80))
    assert report.kind == "whisper"
    assert (report.count("loaded"), report.count("adapted"), report.count("new")) == (67, 4, 2)
    assert all(n.endswith("attention.key.bias") for n, s, _ in report.rows if s == "adapted")  # Whisper has none
    assert {n for n, s, _ in report.rows if s == "new"} == {"ctc.proj.weight", "ctc.proj.bias"}
    assert report.status("encoder.embeddings.position_embeddings") == "loaded"
    assert report.unused == []


def test_positions_cut_or_extended(whisper_dir):
    src = load_source(str(whisper_dir))
    table = src.state["encoder.embeddings.position_embeddings"]
    assert (whisper_sinusoids(1500, 384) - table[0]).abs().max() < 1e-3  # the table is Whisper's formula
    for frames, how in ((1000, "first 500"), (4000, "from Whisper's sinusoid formula")):
        model = ASTModel(ModelConfig(whisper_tiny_encoder(max_frames=frames), None))
        report = init_from_pretrained(model, src)
        row = next(r for r in report.rows if r[0] == "encoder.embeddings.position_embeddings")
        assert row[1] == "adapted" and how in row[2]
        pos = model.encoder.embeddings.position_embeddings[0]
        assert torch.equal(pos[: min(1500, frames // 2)], table[0, : min(1500, frames // 2)])
        if frames > 3000:
            assert (pos[1500:] - whisper_sinusoids(2000, 384)[1500:]).abs().max() < 1e-6


def test_geometry_and_features_must_fit(whisper_dir):
    ast = ASTModel(ModelConfig(EncoderConfig(embed_dim=384, num_heads=6, depth=4), None))
    with pytest.raises(ValueError, match=r"set model\.encoder\.stem=whisper .*num_mel_bins=80"):
        init_from_pretrained(ast, str(whisper_dir))
    model = ASTModel(ModelConfig(whisper_tiny_encoder(), None))
    with pytest.raises(ValueError, match=r"hears Whisper's log-mel: set features\.kind=whisper"):
        init_from_pretrained(model, str(whisper_dir), features=FeatureConfig(num_mel_bins=80))


def test_pickle_only_directory_is_refused(whisper_dir, tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    shutil.copy(whisper_dir / "config.json", d)
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: pickle weights are never loaded"):
        load_source(str(d))


def test_hub_spec_downloads_safetensors_only(hub, whisper_dir):  # noqa: F811
    """hf://openai/whisper-tiny.en through huggingface_hub (a local stand-in Hub): the same
    tensors as the local directory, and no pickle is asked for."""
    files = {p.name: p.read_bytes() for p in whisper_dir.iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"\x80\x04pickle"
    hub.repos["openai/whisper-tiny.en"] = {"files": files, "sha": "a" * 40, "private": False}
    src = load_source("hf://openai/whisper-tiny.en")
    local = load_source(str(whisper_dir))
    assert src.kind == "whisper" and src.state.keys() == local.state.keys()
    assert all(torch.equal(src.state[k], local.state[k]) for k in local.state)
    assert not any(path.endswith(".bin") for _, path in hub.log)
    assert json.loads((whisper_dir / "config.json").read_text())["model_type"] == "whisper"


WHISPER_STEM = {
    "features.kind": "whisper",
    "features.num_mel_bins": 80,
    "model.encoder.stem": "whisper",
    "model.encoder.num_mel_bins": 80,
    "model.encoder.patch_freq": 80,
    "model.encoder.stride_freq": 80,
    "model.encoder.patch_time": 1,
    "model.encoder.stride_time": 2,
    "model.encoder.num_cls_tokens": 0,
    "model.encoder.max_frames": 3000,
    "model.encoder.layer_norm_eps": 1e-5,
}


def test_whisper_stem_model_trains_decodes_transcribes_and_exports(tiny_corpus, tmp_path, capsys):
    """The whole path with a tiny Whisper-stem model on real clips: train (packed attention),
    average, decode, transcribe with the features its directory records, ONNX within 1e-4."""
    from astctc.cli import main
    from astctc.export import OnnxModel
    from astctc.models.model import load_model
    from tests.conftest import tiny_train_config

    exp = tmp_path / "exp"
    sets = tiny_train_config(
        tiny_corpus, exp, max_steps=4, checkpoint_every=2, **WHISPER_STEM, **{"model.encoder.attention": "packed"}
    )
    assert main(["train", *[a for s in sets for a in ("--set", s)]]) == 0
    model = exp / "model"
    assert main(["average", "--exp", str(exp), "--last", "2", "--out", str(model)]) == 0
    assert json.loads((model / "features.json").read_text())["kind"] == "whisper"
    decode = ["decode", "--model", str(model), "--data", str(tiny_corpus["shards"]), "--out", str(tmp_path / "d")]
    assert main(decode) == 0
    assert "%WER" in (tmp_path / "d" / "wer.txt").read_text()
    clip = str(tiny_corpus["root"] / json.loads(tiny_corpus["manifest"].read_text().splitlines()[0])["audio"])
    capsys.readouterr()
    assert main(["transcribe", "--model", str(model), "--device", "cpu", clip]) == 0
    torch_text = capsys.readouterr().out
    assert main(["export", "--model", str(model), "--format", "onnx", "--audio", clip]) == 0
    capsys.readouterr()
    assert main(["transcribe", "--model", str(model), "--device", "cpu", "--runtime", "onnx", clip]) == 0
    assert capsys.readouterr().out == torch_text
    # padded batch of two lengths through onnxruntime = PyTorch
    loaded = load_model(model)
    feats = [fbank(load_audio(clip)[:n], loaded.features) for n in (16000, 25000)]
    lengths = torch.tensor([f.shape[0] for f in feats])
    batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    with torch.no_grad():
        ref = loaded.model(batch, lengths)
    got = OnnxModel(model)(batch, lengths)
    n = int(ref["lengths"][0])
    assert torch.equal(got["lengths"], ref["lengths"])
    assert (got["log_probs"][0, :n] - ref["log_probs"][0, :n]).abs().max() < 1e-4


def test_init_check_prints_the_whisper_table(whisper_dir, capsys):
    from astctc.cli import main

    sets = [a for k, v in WHISPER_STEM.items() for a in ("--set", f"{k}={v}")]
    for kv in ("model.encoder.embed_dim=384", "model.encoder.num_heads=6", "model.encoder.depth=4"):
        sets += ["--set", kv]
    assert main(["init-check", "--init", str(whisper_dir), *sets]) == 0
    out = capsys.readouterr().out
    assert "(whisper): " in out and "loaded   encoder.embeddings.patch_embeddings.conv1.weight" in out
