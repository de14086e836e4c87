"""The Python API: `astctc.load_model(dir).transcribe(path or waveform)` gives text, words with
times and per-word confidence; `transcribe_all` keeps going past a bad item; `import astctc`
loads no torch.

Real speech (an LJ001 clip) through a tiny random model built here (tests/test_transcribe_cli.py's).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import astctc
from astctc.audio import AudioError, load_audio
from astctc.features import FeatureConfig
from astctc.models.encoder import EncoderConfig
from astctc.models.heads import ClassifierConfig
from astctc.models.model import ASTModel, ModelConfig
from astctc.transcribe import Transcriber, transcribe
from tests.test_transcribe_cli import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("api") / "model")


@pytest.fixture(scope="module")
def speech(shared_data) -> torch.Tensor:
    """4.5 s of LJ001-0001 at 16 kHz: several 2 s windows."""
    return load_audio(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")[: int(4.5 * 16000)]


def test_load_model_transcribes_a_path_and_an_array(model_dir, speech, tmp_path):
    path = tmp_path / "a.wav"  # float samples: the array and the file hold the same numbers
    sf.write(str(path), speech.numpy(), 16000, subtype="FLOAT")
    asr = astctc.load_model(model_dir, device="cpu")
    assert isinstance(asr, Transcriber)
    hyp = asr.transcribe(str(path))
    assert len(hyp.words) > 3 and hyp.text == " ".join(w.word for w in hyp.words)
    prev_end = 0.0
    for w in hyp.words:
        assert prev_end <= w.start < w.end <= 4.5 + asr.frame_seconds
        assert 0.0 <= w.confidence <= 1.0
        prev_end = w.end
    assert len({w.confidence for w in hyp.words}) > 1  # per word, not one number for all
    # the same samples as a numpy array and as a tensor: the same result
    for audio in (speech.numpy(), speech, speech.numpy().astype(np.float64)):
        other = asr.transcribe(audio)
        assert other.text == hyp.text
        assert [(w.start, w.end, w.confidence) for w in other.words] == [
            (w.start, w.end, w.confidence) for w in hyp.words
        ]
    # the text-only calls of earlier versions still work, and agree
    assert asr(str(path)) == hyp.text and asr([str(path), speech]) == [hyp.text, hyp.text]
    assert transcribe([str(path)], model_dir, device="cpu") == [hyp.text]


def test_transcribe_all_goes_past_a_bad_item(model_dir, speech, tmp_path):
    asr = astctc.load_model(str(model_dir), device="cpu")
    seconds = []
    out = list(
        asr.transcribe_all(
            [speech[:32000], tmp_path / "missing.wav", np.zeros((2, 400), "float32"), speech.numpy()],
            progress=seconds.append,
        )
    )
    assert [n for n, _ in out] == [0, 1, 2, 3]
    assert isinstance(out[1][1], AudioError) and str(out[1][1]) == f"{tmp_path / 'missing.wav'}: no such audio file"
    assert isinstance(out[2][1], ValueError) and "expected a 1-D waveform" in str(out[2][1])
    assert out[3][1].text == asr.transcribe(speech).text and out[0][1].text == asr.transcribe(speech[:32000]).text
    assert sum(seconds) == pytest.approx(2.0 + 4.5, abs=0.1)  # progress in seconds of audio
    with pytest.raises(AudioError, match="missing.wav: no such audio file"):
        asr.transcribe(tmp_path / "missing.wav")


def test_a_model_without_a_ctc_head_is_a_clear_error(tmp_path):
    enc = EncoderConfig(patch_freq=128, stride_freq=128, embed_dim=32, depth=1, num_heads=2, max_frames=100)
    cfg = ModelConfig(enc, None, {"digit": ClassifierConfig(num_classes=2, classes=["0", "1"])})
    ASTModel(cfg).save(tmp_path / "clf", FeatureConfig(), None)
    with pytest.raises(ValueError, match=r"clf: model has no CTC head, nothing to transcribe with"):
        astctc.load_model(tmp_path / "clf", device="cpu")


def test_import_astctc_loads_no_torch():
    code = "import sys, astctc; assert callable(astctc.load_model); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_beam_search_with_an_lm(model_dir, speech, tmp_path):
    from tests.test_lm_decode import write_arpa

    lm = write_arpa(tmp_path / "2gram.arpa", {"the": -1.0, "cat": -1.5, "sat": -1.5})
    asr = astctc.load_model(model_dir, device="cpu")
    hyp = asr.transcribe(speech, lm=lm)
    assert hyp.words and all(0.0 <= w.confidence <= 1.0 and w.start < w.end for w in hyp.words)
    with asr.beam_search(lm) as search:
        ((n, same),) = list(asr.transcribe_all([speech.numpy()], search=search))
    assert n == 0 and same == hyp
