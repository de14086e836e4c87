"""Bad input on the command line: a clear one-line error naming the file, no traceback,
and nothing already done is lost."""
import json

import numpy as np
import soundfile as sf

from astctc.cli import main


def _clip(path, seconds=0.5):
    sf.write(path, (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.1).astype("float32"), 16000)
    return path


def test_transcribe_bad_audio(tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    assert main(["transcribe", "--model", str(tmp_path / "nomodel"), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "astctc transcribe: error:" in err and "not a model directory" in err and "Traceback" not in err


def test_manifest_drops_empty_transcript_and_bad_audio_by_name(tmp_path, capsys, caplog):
    good = _clip(tmp_path / "good.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    rows = [
        {"id": "u1", "audio": str(good), "duration": 0.5, "text": "hello there"},
        {"id": "u2", "audio": str(good), "duration": 0.5, "text": "  ...  "},
        {"id": "u3", "audio": str(empty), "duration": 0.5, "text": "some words"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["manifest", "--in", str(src), "--out", str(tmp_path / "out.jsonl")]) == 0
    captured = capsys.readouterr()
    assert "1 utterances" in captured.out and "2 rejected" in captured.out
    assert "u2 skipped: empty transcript" in caplog.text
    assert "u3 skipped" in caplog.text and "empty.wav: empty audio file" in caplog.text
    kept = [json.loads(l)["id"] for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert kept == ["u1"]


def test_tokenizer_without_any_transcript(tmp_path, capsys):
    src = tmp_path / "m.jsonl"
    src.write_text(json.dumps({"id": "a", "audio": "x.wav", "duration": 1.0, "text": ""}) + "\n")
    assert main(["tokenizer", "--manifest", str(src), "--out", str(tmp_path / "lang")]) == 1
    assert "no transcripts to train a tokenizer on" in capsys.readouterr().err


def test_empty_transcript_in_training_data_is_skipped(tmp_path, caplog):
    import torch

    from astctc.data.pipeline import Featurizer
    from astctc.features import FeatureConfig
    from astctc.tokenizer import CharTokenizer

    f = Featurizer(FeatureConfig(), CharTokenizer.train(["ab"]))
    assert f({"id": "x1", "wav": torch.zeros(8000), "text": "?!"}) is None
    assert "x1 has an empty transcript" in caplog.text
    assert f({"id": "x2", "wav": torch.zeros(8000), "text": "ab"})["targets"].tolist() == [3, 4]


def test_malformed_manifest_line(tmp_path, capsys):
    src = tmp_path / "m.jsonl"
    src.write_text('{"id": "a", "audio": "x.wav", "duration": 1.0}\n{not json\n')
    assert main(["shards", "--manifest", str(src), "--out", str(tmp_path / "s")]) == 1
    assert f"{src}:2: invalid JSON" in capsys.readouterr().err
