"""Hub sharing against a local stand-in of the Hub API (tests/hub_server.py, HF_ENDPOINT pointed at it):
push a tiny random model (with its model card), load it back as hf://org/name and transcribe a real clip
to the same text as the local directory; pickles neither go up nor come down; a missing repo is a
one-line error; a second load is served from the cache (offline mode works). HF_HOME is a tmp dir.
"""

from __future__ import annotations

import pytest

from astctc.cli import main
from astctc.features import FeatureConfig
from astctc.hub import model_card, parse_spec, push, resolve_model
from tests.conftest import tiny_ctc_model

from .hub_server import HubServer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tok = tiny_ctc_model(max_frames=64)
    exp = tmp_path_factory.mktemp("exp")
    d = exp / "model"
    model.save(d, FeatureConfig(), tok)
    (d / "optimizer.pt").write_bytes(b"\x80\x04pickle")  # must never travel
    (exp / "results.md").write_text("| set | WER |\n|---|---|\n| test | 12.34 |\n")
    return d


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The stand-in server, with HF_ENDPOINT and a tmp HF_HOME (huggingface_hub reads both at import)."""
    import huggingface_hub.constants as c

    server = HubServer().start()
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(c, "ENDPOINT", server.url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


def test_spec_parsing():
    assert parse_spec("hf://org/name") == ("org/name", None)
    assert parse_spec("hf://org/name@v1") == ("org/name", "v1")
    for bad in ("hf://org", "hf://a/b/c", "hf://org/name@"):
        with pytest.raises(ValueError, match="not a Hub model spec"):
            parse_spec(bad)
    assert str(resolve_model("some/local/dir")) == "some/local/dir"  # unchanged, not checked


def test_card_has_results_and_usage(model_dir):
    card = model_card(model_dir, "org/tiny", model_dir.parent / "results.md")
    assert card.startswith("---\nlibrary_name: astctc\n")
    assert "12.34" in card and "hf://org/tiny" in card and "parameters:" in card


def test_round_trip_push_hf_transcribe(hub, model_dir, shared_data, capsys, monkeypatch):
    clip = str(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")
    assert main(["push", "--model", str(model_dir), "--repo", "org/tiny", "--message", "first"]) == 0
    assert capsys.readouterr().out.strip().endswith("/org/tiny")
    files = hub.repos["org/tiny"]["files"]
    assert "optimizer.pt" not in files and "model.safetensors" in files
    card = files["README.md"].decode()
    assert "12.34" in card and "results.md" in card  # the exp dir's results.md, found beside the model
    assert not (model_dir / "README.md").exists()  # the user's directory is left as it was

    files["stray.bin"] = b"\x80\x04pickle"  # a pickle in the repo is not downloaded
    assert main(["transcribe", "--model", str(model_dir), clip]) == 0
    local_text = capsys.readouterr().out
    assert main(["transcribe", "--model", "hf://org/tiny", clip]) == 0
    assert capsys.readouterr().out == local_text
    snap = resolve_model("hf://org/tiny")
    assert (snap / "model.safetensors").exists() and not (snap / "stray.bin").exists()
    assert not (snap / "optimizer.pt").exists()

    # a second load: no file is fetched again, and offline mode serves the cache
    n = len([r for r in hub.log if "/resolve/" in r[1]])
    resolve_model("hf://org/tiny")
    assert len([r for r in hub.log if "/resolve/" in r[1]]) == n
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    before = len(hub.log)
    assert resolve_model("hf://org/tiny") == snap
    assert len(hub.log) == before


def test_missing_repo_is_one_line_error(hub, capsys):
    assert main(["transcribe", "--model", "hf://missing/repo", "x.wav"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hf://missing/repo" in err, err


def test_repo_without_weights(hub):
    hub.repos["org/empty"] = {"files": {"config.json": b"{}"}, "sha": "1" * 40}
    with pytest.raises(FileNotFoundError, match="hf://org/empty.*no model.safetensors"):
        resolve_model("hf://org/empty")


def test_push_rejects_incomplete_dir(hub, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="missing features.json"):
        push(tmp_path, "org/x")


def test_onnx_from_the_hub_is_checked_and_export_never_writes_the_cache(hub, model_dir, tmp_path, shared_data, capsys):
    """A repo whose model.onnx was exported from older weights is refused; `export` of a hf://
    model needs --out and never writes into the cache (its files are links to shared blobs)."""
    import shutil

    import torch

    from astctc.export import OnnxModel, export_onnx
    from astctc.models.model import load_model

    clip = str(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")
    d = tmp_path / "m"
    shutil.copytree(model_dir, d, ignore=shutil.ignore_patterns("*.pt"))
    export_onnx(d)
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    hub.repos["org/onnx"] = {"files": dict(files), "sha": "1" * 40}
    assert main(["transcribe", "--model", "hf://org/onnx", "--runtime", "onnx", "--device", "cpu", clip]) == 0
    capsys.readouterr()

    loaded = load_model(d)  # new weights pushed, the old model.onnx left in the repo
    with torch.no_grad():
        loaded.model.ctc.proj.bias.add_(1.0)
    loaded.model.save(tmp_path / "new", loaded.features, loaded.tokenizer)
    new = (tmp_path / "new" / "model.safetensors").read_bytes()
    hub.repos["org/onnx"] = {"files": {**files, "model.safetensors": new}, "sha": "2" * 40}
    assert main(["transcribe", "--model", "hf://org/onnx", "--runtime", "onnx", "--device", "cpu", clip]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the download's log lines
    assert err.startswith(f"astctc transcribe: error: {resolve_model('hf://org/onnx') / 'model.onnx'}: exported from")
    assert "another model.safetensors than the one in" in err, err
    assert err.endswith("re-export it: astctc export --model hf://org/onnx --format onnx --out FILE"), err

    snap = resolve_model("hf://org/onnx")
    blob = (snap / "model.onnx").resolve()
    assert blob != snap / "model.onnx"  # the snapshot's file is a link to a blob
    cached = blob.read_bytes()
    assert main(["export", "--model", "hf://org/onnx"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "astctc export: error: hf://org/onnx: a Hub model is read from the Hub cache, which export never "
        "writes: give --out FILE"
    )
    assert main(["export", "--model", "hf://org/onnx", "--out", str(snap / "model.onnx")]) == 1
    assert "inside the Hugging Face cache, which export never writes" in capsys.readouterr().err
    assert blob.read_bytes() == cached
    out = tmp_path / "mine.onnx"
    assert main(["export", "--model", "hf://org/onnx", "--out", str(out)]) == 0
    OnnxModel(out, model_dir="hf://org/onnx")  # made from the repo's new weights
    assert blob.read_bytes() == cached
