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


def copy_model(model_dir, dest):
    import shutil

    shutil.copytree(model_dir, dest)
    return dest


def test_the_export_records_its_source_and_the_runtime_checks_it(model_dir, tmp_path):
    import json

    from astctc.export import sha256

    onnx = OnnxModel(model_dir)
    for name in ("model.safetensors", "config.json"):
        assert onnx.record[f"{name}.sha256"] == sha256(model_dir / name)
    assert onnx.record["vocab_size"] == str(load_model(model_dir).model.cfg.ctc.vocab_size)
    assert json.loads((model_dir / "model.onnx.json").read_text())["source"]["model.safetensors.sha256"] == sha256(
        model_dir / "model.safetensors"
    )
    # other weights in the folder after the export (as `astctc average` into it writes them)
    d = copy_model(model_dir, tmp_path / "averaged")
    model = load_model(d).model
    with torch.no_grad():
        model.ctc.proj.bias.add_(1.0)
    loaded = load_model(d)
    model.save(d, loaded.features, loaded.tokenizer)
    redo = rf"re-export it: astctc export --model {d} --format onnx$"
    with pytest.raises(
        ValueError, match=rf"^{d / ONNX_NAME}: exported from another model\.safetensors than the one in {d}: {redo}"
    ):
        OnnxModel(d)
    # a .onnx file alone is not checked (nothing to check it against) unless its model is named
    OnnxModel(d / ONNX_NAME)
    with pytest.raises(ValueError, match="exported from another model.safetensors"):
        OnnxModel(d / ONNX_NAME, model_dir=d)


def test_an_export_without_a_record_is_refused(model_dir, tmp_path):
    import onnx

    d = copy_model(model_dir, tmp_path / "old")
    proto = onnx.load(str(d / ONNX_NAME))
    del proto.metadata_props[:]
    onnx.save(proto, str(d / ONNX_NAME))
    with pytest.raises(
        ValueError, match=rf"^{d / ONNX_NAME}: records no source weights \(an older export\): re-export"
    ):
        OnnxModel(d)


@pytest.mark.parametrize("damage", ["truncated", "junk", "empty"])
def test_a_broken_model_onnx_is_one_line_naming_it(model_dir, tmp_path, damage, capsys):
    from astctc.cli import main

    d = copy_model(model_dir, tmp_path / damage)
    data = (d / ONNX_NAME).read_bytes()
    (d / ONNX_NAME).write_bytes({"truncated": data[: len(data) // 2], "junk": b"\x00junk" * 100, "empty": b""}[damage])
    with pytest.raises(ValueError, match=rf"^{d / ONNX_NAME}: onnxruntime cannot load it \(.*\); re-export it"):
        OnnxModel(d)
    assert main(["transcribe", "--model", str(d), "--runtime", "onnx", "--device", "cpu", "x.wav"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{d / ONNX_NAME}: onnxruntime cannot load it" in err, err


def test_vocabulary_and_run_errors_name_the_file(model_dir):
    with pytest.raises(
        ValueError, match=rf"^{model_dir / ONNX_NAME}: outputs \d+ tokens, the model's vocabulary has 7"
    ):
        OnnxModel(model_dir, vocab_size=7)
    onnx = OnnxModel(model_dir)
    with pytest.raises(ValueError, match=rf"^{model_dir / ONNX_NAME}: onnxruntime failed \([^\n]*\)$"):
        onnx(torch.randn(1, 40, 64), torch.tensor([40]))  # 64 mel bins where the graph takes 128


def test_the_sidecar_is_for_people_only(model_dir, tmp_path, shared_data):
    from astctc.transcribe import Transcriber

    d = copy_model(model_dir, tmp_path / "sidecar")
    (d / "model.onnx.json").write_text("{not json")
    wav = load_audio(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")[:32000]
    ref = Transcriber(d, device="cpu").transcribe(wav)
    assert Transcriber(d, device="cpu", runtime="onnx").transcribe(wav).text == ref.text


def test_export_replaces_a_link_at_its_target_and_never_writes_the_hub_cache(model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    cache = tmp_path / "hf" / "hub"
    blob = cache / "models--org--x" / "blobs" / "abc"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"the cached model.onnx")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    link = tmp_path / "elsewhere" / "link.onnx"
    link.parent.mkdir()
    link.symlink_to(blob)  # a link out of the cache: writing through it corrupts the blob
    with pytest.raises(ValueError, match=rf"^{link}: inside the Hugging Face cache, which export never writes"):
        export_onnx(model_dir, link)
    with pytest.raises(ValueError, match=r"^hf://org/x: a Hub model .* give --out FILE$"):
        export_onnx("hf://org/x")
    target = tmp_path / "out.onnx"
    other = tmp_path / "other.onnx"
    other.write_bytes(b"someone else's file")
    target.symlink_to(other)
    assert export_onnx(model_dir, target) == target
    assert not target.is_symlink() and other.read_bytes() == b"someone else's file"  # the link replaced
    assert blob.read_bytes() == b"the cached model.onnx"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    OnnxModel(target, model_dir=model_dir)
