"""Smoke test on real human speech from ../shared/data: every corpus's clips go through
reading, features, a model and decoding without error (8 kHz wav, 16 kHz flac, 1-35 s)."""

from astctc.features import FeatureConfig
from astctc.transcribe import Transcriber
from tests.conftest import tiny_ctc_model


def test_transcribe_shared_clips(shared_data, tmp_path):
    clips = sorted((shared_data / "librispeech_sample" / "LibriSpeech" / "test-clean").rglob("*.flac"))[:2]
    clips += sorted((shared_data / "fsdd" / "recordings").glob("*_theo_*.wav"))[:3]
    clips += sorted((shared_data / "speech_commands_v2_test12" / "yes").glob("*.flac"))[:2]
    clips += sorted((shared_data / "ljspeech_lj001" / "wavs").glob("*.flac"))[:2]
    assert len(clips) == 9, clips
    model, tok = tiny_ctc_model(depth=2, max_frames=1000)
    enc = model.cfg.encoder
    model.save(tmp_path / "m", FeatureConfig(), tok)
    asr = Transcriber(tmp_path / "m", device="cpu")
    texts = asr([str(c) for c in clips])
    assert len(texts) == len(clips) and all(isinstance(t, str) for t in texts)
    # a LibriSpeech clip is longer than the 10 s window: it is cut into overlapping windows
    # whose kept centres tile its CTC frames, stitched and decoded once
    from astctc.audio import load_audio

    longest = max(clips[:2], key=lambda c: load_audio(c).numel())
    n_frames = asr.features.frames(load_audio(longest).numel())
    assert n_frames > 1000
    windows = asr.windows([str(longest)])
    assert len(windows) == 2 and [w.start for w in windows] == [0, asr.step] and windows[-1].last
    assert windows[-1].start + windows[-1].feats.shape[0] == n_frames
    kept = [(lo, hi or enc.time_columns(w.feats.shape[0])) for w in windows for lo, hi in [w.keep]]
    assert sum(hi - lo for lo, hi in kept) == enc.time_columns(n_frames)
    ((_, lp),) = asr.item_log_probs([str(longest)])
    assert lp.shape[0] == enc.time_columns(n_frames)
    from astctc.cli import main

    assert main(["transcribe", "--model", str(tmp_path / "m"), str(clips[-1])]) == 0
