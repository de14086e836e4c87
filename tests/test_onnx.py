"""ONNX export: log-probs of onnxruntime equal PyTorch's on real clips, with dynamic batch and length."""

from __future__ import annotations

import pytest
import torch

from astctc.audio import load_audio
from astctc.export import ONNX_NAME, OnnxModel, batch_features, export_onnx, max_difference
from astctc.features import FeatureConfig, fbank
from astctc.models.model import load_model
from tests.conftest import tiny_ctc_model

TOL = 1e-4
CLIPS = ("LJ001-0001", "LJ001-0002", "LJ001-0003")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random model with AST-like patches, a convolution module and two class tokens."""
    model, tok = tiny_ctc_model(
        patch_freq=32, stride_freq=32, patch_time=4, stride_time=4, depth=2, num_cls_tokens=2, max_frames=1024,
        conv_kernel=3,
    )  # fmt: skip
    d = tmp_path_factory.mktemp("onnx") / "model"
    model.save(d, FeatureConfig(), tok)
    export_onnx(d)
    return d


@pytest.fixture(scope="module")
def clips(shared_data) -> list[torch.Tensor]:
    """fbank features of LJ001 clips of different lengths, cut to the position table."""
    return [fbank(load_audio(shared_data / "ljspeech_lj001" / "wavs" / f"{c}.flac"))[:1024] for c in CLIPS]


def test_export_writes_model_and_sidecar(model_dir):
    assert (model_dir / ONNX_NAME).is_file()
    meta = (model_dir / (ONNX_NAME + ".json")).read_text()
    assert '"max_frames": 1024' in meta and '"opset"' in meta


def test_parity_real_clips_batched_and_alone(model_dir, clips):
    model, onnx = load_model(model_dir).model, OnnxModel(model_dir)
    assert len({c.shape[0] for c in clips}) == len(clips)  # different lengths: padding in the batch
    x, lengths = batch_features(clips)
    assert max_difference(model, onnx, x, lengths) <= TOL
    for c in clips:  # alone, unpadded; also a second and third T in the same session
        x, lengths = batch_features([c])
        assert max_difference(model, onnx, x, lengths) <= TOL
    got = onnx(*batch_features(clips))
    with torch.no_grad():
        ref = model(*batch_features(clips))
    assert torch.equal(got["lengths"], ref["lengths"])
    assert got["log_probs"].shape == ref["log_probs"].shape and got["log_probs"].dtype == torch.float32


def test_dynamic_length_one_session(model_dir):
    model, onnx = load_model(model_dir).model, OnnxModel(model_dir, threads=1)
    for T in (4, 37, 300):  # T=4: one patch; shorter inputs are padded as the encoder does
        x = torch.randn(3, T, 128)
        lengths = torch.tensor([T, max(1, T // 2), max(1, T - 3)])
        assert max_difference(model, onnx, x, lengths) <= TOL
    x = torch.randn(1, 2, 128)  # shorter than a patch
    assert max_difference(model, onnx, x, torch.tensor([2])) <= TOL


def test_missing_onnx_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.onnx.*astctc export --model .* --format onnx"):
        OnnxModel(tmp_path)


def test_cli_export(model_dir, tmp_path, shared_data, capsys):
    from astctc.cli import main

    out = tmp_path / "m.onnx"
    wav = shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac"
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--out", str(out), "--audio", str(wav)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "max |log-prob difference|" in printed
    assert out.is_file()


def test_transcribe_onnx_runtime_same_text(model_dir, shared_data):
    from astctc.transcribe import Transcriber

    wav = load_audio(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")
    ref = Transcriber(model_dir, device="cpu").transcribe(wav)
    got = Transcriber(model_dir, device="cpu", runtime="onnx").transcribe(wav)
    assert got.text == ref.text and len(ref.text) > 0
