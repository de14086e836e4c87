"""Streamed transcription: files are read, featurised and decoded a chunk of windows at a time.

The streamed (overlapping) windows must equal an independent window-by-window reference (the
fbank of each window's own samples), their stitched log-probabilities an independent choice of
each frame's most central window, context=0 the old consecutive windows; a file that fits in
one window must give exactly what the whole-file path gave, a clip shorter than one analysis
window must fail with an error naming it, and the samples and feature frames held at once must
not grow with the file's length.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest
import soundfile as sf
import torch

import astctc.inference as inference
from astctc.audio import AudioError, iter_audio, load_audio, resample
from astctc.decode import greedy_decode
from astctc.features import FeatureConfig, fbank
from astctc.inference import WindowedModel
from astctc.transcribe import Transcriber
from astctc.words import greedy_words, transcribe_words
from tests.conftest import tiny_ctc_model

WINDOW = 64  # fbank frames per window (0.64 s): many windows from a few seconds of speech
HOP, WIN = 160, 400  # fbank shift and analysis window, in samples at 16 kHz
SPAN, STEP = (WINDOW - 1) * HOP + WIN, WINDOW * HOP  # samples one window reads; between windows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tok = tiny_ctc_model(max_frames=WINDOW)
    d = tmp_path_factory.mktemp("stream") / "model"
    model.save(d, FeatureConfig(), tok)
    return d


@pytest.fixture(scope="module")
def speech(shared_data) -> torch.Tensor:
    """~9.8 s of real speech at 16 kHz (LJ001-0001), peak-scaled below 1."""
    return load_audio(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")


def write(path, wav: torch.Tensor | np.ndarray, sr: int = 16000, subtype: str = "FLOAT"):
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sr, subtype=subtype)
    return path


def one_by_one(asr: Transcriber, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """The reference's log-probabilities: each window through the model alone."""
    out = []
    with torch.no_grad():
        for f in feats:
            r = asr.model(f[None], torch.tensor([f.shape[0]]))
            out.append(r["log_probs"][0, : r["lengths"][0]])
    return out


def text_of(asr: Transcriber, lps: list[torch.Tensor]) -> str:
    pieces = [greedy_decode(lp[None], torch.tensor([lp.shape[0]]), asr.tokenizer)[0] for lp in lps]
    return " ".join(p for p in pieces if p)


def test_a_file_that_fits_in_one_window_is_featurised_as_before(model_dir, speech, tmp_path):
    asr = Transcriber(model_dir, device="cpu")
    assert asr.window == WINDOW
    cases = {
        "short.flac": (speech[: SPAN - 1000], 16000, 1),
        "exactly_one_window.wav": (speech[:SPAN], 16000, 1),
        "resampled_44k.wav": (resample(speech[: SPAN - 2000], 16000, 44100), 44100, 1),
        "stereo_22k.wav": (resample(speech[: SPAN - 2000], 16000, 22050), 22050, 2),
    }
    for name, (wav, sr, channels) in cases.items():
        data = wav.numpy() if channels == 1 else np.stack([wav.numpy(), 0.5 * wav.numpy()], axis=1)
        f = write(tmp_path / name, data, sr, "PCM_16" if name.endswith(".flac") else "FLOAT")
        before = fbank(load_audio(f), asr.features)  # what WindowedModel.windows computed before
        assert before.shape[0] <= WINDOW
        (w,) = asr.windows([str(f)])
        assert (w.source, w.start) == (0, 0)
        assert torch.equal(w.feats, before), name
        assert asr(str(f)) == text_of(asr, one_by_one(asr, [before])), name
    # a waveform tensor, as before: the whole of it is one window
    (w,) = asr.windows([speech[:SPAN]])
    assert torch.equal(w.feats, fbank(speech[:SPAN], asr.features))


def n_windows(asr: WindowedModel, n_frames: int) -> int:
    """Windows of a file of `n_frames` fbank frames: one, or one more per step while what is
    left after a window's start does not fit in a window."""
    return 1 if n_frames <= asr.window else 1 + -(-(n_frames - asr.window) // asr.step)


def stitched_reference(asr: WindowedModel, starts: list[int], lps: list[torch.Tensor], n_frames: int) -> torch.Tensor:
    """Each CTC frame of the file from the window where it has the most context on its worse
    side (the file's own start and end count as unlimited context): an independent statement
    of 'keep each window's centre'."""
    total = asr.model.cfg.encoder.time_columns(n_frames)
    rows = []
    for t in range(total):
        best, pick = -1.0, None
        for s, lp in zip(starts, lps):
            j = t - s // asr.stride
            if 0 <= j < lp.shape[0]:
                left = float("inf") if s == 0 else j
                right = float("inf") if j + s // asr.stride == total - 1 or s == starts[-1] else lp.shape[0] - 1 - j
                if min(left, right) > best:
                    best, pick = min(left, right), lp[j]
        rows.append(pick)
    return torch.stack(rows)


def test_several_windows_equal_a_window_by_window_reference(model_dir, speech, tmp_path):
    # batch_seconds under one window: every window runs alone, in the streamed path and the
    # reference, so even the log-probabilities must be equal bit for bit
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=0.1)
    assert asr.context > 0 and asr.step % asr.stride == 0 and asr.step < WINDOW  # overlapping windows
    f = write(tmp_path / "long.flac", speech, subtype="PCM_16")
    wav = load_audio(f)
    n_frames = asr.features.frames(wav.numel())
    windows = list(asr.iter_windows([str(f)]))
    starts = [k * asr.step for k in range(n_windows(asr, n_frames))]
    assert len(starts) > 10 and [w.start for w in windows] == starts
    assert [w.last for w in windows] == [False] * (len(starts) - 1) + [True]
    assert windows[-1].start + windows[-1].feats.shape[0] == n_frames  # the last window reaches the end
    ref_feats = [fbank(wav[s * HOP : s * HOP + SPAN], asr.features) for s in starts]
    for w, r in zip(windows, ref_feats):
        assert torch.equal(w.feats, r)

    # stitched: every CTC frame of the file once, from the window where it is most central
    ref = stitched_reference(asr, starts, one_by_one(asr, ref_feats), n_frames)
    ((i, lp),) = list(asr.item_log_probs([str(f)]))
    assert i == 0 and lp.shape[0] == asr.model.cfg.encoder.time_columns(n_frames)
    assert torch.equal(lp, ref)

    # words: one decode over the stitched matrix, times already the file's
    (hyp,) = transcribe_words(asr, [str(f)])
    words = greedy_words(ref, asr.tokenizer, asr.frame_seconds).words
    assert [(w.word, w.start, w.end) for w in hyp.words] == [(w.word, w.start, w.end) for w in words]
    assert hyp.text == greedy_decode(ref[None], torch.tensor([ref.shape[0]]), asr.tokenizer)[0]
    assert all(0.0 <= w.confidence <= 1.0 for w in hyp.words)

    # without waveform-mean removal the windows are exactly the whole file's fbank, cut: the
    # only thing per-window featurisation changes is the mean each window's samples lose
    asr.features = dataclasses.replace(asr.features, remove_waveform_mean=False)
    whole = fbank(wav, asr.features)
    for w in asr.iter_windows([str(f)]):
        assert torch.equal(w.feats, whole[w.start : w.start + WINDOW])


def test_context_zero_gives_the_old_consecutive_windows(model_dir, speech, tmp_path):
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=0.1, context=0)
    f = write(tmp_path / "long.flac", speech, subtype="PCM_16")
    wav = load_audio(f)
    n_frames = asr.features.frames(wav.numel())
    ref_feats = [fbank(wav[k * HOP : k * HOP + SPAN], asr.features) for k in range(0, n_frames, WINDOW)]
    windows = list(asr.iter_windows([str(f)]))
    assert [w.start for w in windows] == list(range(0, n_frames, WINDOW))
    assert all(w.keep in ((0, WINDOW // 2), (0, None)) for w in windows)  # every column
    for w, r in zip(windows, ref_feats):
        assert torch.equal(w.feats, r)
    ((_, lp),) = list(asr.item_log_probs([str(f)]))
    assert torch.equal(lp, torch.cat(one_by_one(asr, ref_feats)))  # every window whole, end to end


def test_several_files_and_a_resampled_file(model_dir, speech, tmp_path):
    asr = Transcriber(model_dir, device="cpu", batch_seconds=0.1)
    a = write(tmp_path / "a.flac", speech[: 3 * STEP + 5000], subtype="PCM_16")
    b = write(tmp_path / "b_44k.wav", resample(speech, 16000, 44100), 44100)  # read in blocks, resampled
    texts = asr([str(a), str(b)])
    assert texts == [asr(str(a)), asr(str(b))]
    wb = load_audio(b)  # resampled whole
    ws = list(asr.iter_windows([str(a), str(b)]))
    na = n_windows(asr, asr.features.frames(3 * STEP + 5000))
    assert [w.source for w in ws] == [0] * na + [1] * n_windows(asr, asr.features.frames(wb.numel()))
    for w in ws[na:]:  # equal up to float rounding where the reader's blocks meet
        ref = fbank(wb[w.start * HOP : w.start * HOP + SPAN], asr.features)
        torch.testing.assert_close(w.feats, ref, rtol=0, atol=1e-4)


def test_block_reader_equals_load_audio(speech, tmp_path):
    f = write(tmp_path / "x.flac", speech, subtype="PCM_16")
    whole = load_audio(f)
    for seconds in (0.01, 0.3, 2.0, 100.0):
        assert torch.equal(torch.cat(list(iter_audio(f, block_seconds=seconds))), whole)
    g = write(tmp_path / "x_22k.wav", resample(speech, 16000, 22050), 22050)
    whole = load_audio(g)
    assert torch.equal(torch.cat(list(iter_audio(g, block_seconds=100.0))), whole)  # one block: one call
    for seconds in (0.05, 0.3, 2.0):
        torch.testing.assert_close(torch.cat(list(iter_audio(g, block_seconds=seconds))), whole, rtol=0, atol=1e-6)
    with pytest.raises(AudioError, match="zero samples"):
        list(iter_audio(write(tmp_path / "empty.wav", np.zeros(0))))
    with pytest.raises(AudioError, match="no such audio file"):
        list(iter_audio(tmp_path / "missing.wav"))


@pytest.mark.parametrize("samples", [1, WIN - 1])
def test_a_clip_shorter_than_one_analysis_window_is_a_clear_error(model_dir, tmp_path, capsys, samples):
    from astctc.cli import main

    x = write(tmp_path / "x.wav", np.full(samples, 0.1))
    for fmt in ("text", "json"):
        assert main(["transcribe", "--model", str(model_dir), "--device", "cpu", "--format", fmt, str(x)]) == 1
        err = capsys.readouterr().err
        assert f"astctc transcribe: error: {x}: {samples} sample" in err, err
        assert "shorter than one 25 ms analysis window" in err and "Traceback" not in err
    asr = Transcriber(model_dir, device="cpu")
    with pytest.raises(AudioError, match=f"^{x}: {samples} sample"):
        asr(str(x))
    with pytest.raises(AudioError, match="^waveform 1: "):
        asr([torch.zeros(WIN), torch.zeros(samples)])
    assert asr(str(write(tmp_path / "y.wav", np.full(WIN, 0.1)))) is not None  # one frame is enough


def test_memory_does_not_grow_with_the_file(model_dir, speech, tmp_path, monkeypatch):
    """Counts, not RSS or time: the largest read, the samples of the reader's blocks alive at
    once, and the fbank frames alive at once, for a file 6x longer than another."""
    live = {"samples": 0, "frames": 0}
    peak = {"samples": 0, "frames": 0, "read": 0}

    def track(t: torch.Tensor, kind: str, n: int):
        live[kind] += n
        peak[kind] = max(peak[kind], live[kind])
        weakref.finalize(t, drop, kind, n)

    def drop(kind: str, n: int):
        live[kind] -= n

    real_iter_audio, real_fbank, real_read = inference.iter_audio, inference.fbank, sf.SoundFile.read

    def iter_audio_tracked(*a, **k):
        for block in real_iter_audio(*a, **k):
            track(block, "samples", block.numel())
            yield block

    def fbank_tracked(wav, cfg=None):
        out = real_fbank(wav, cfg)
        track(out, "frames", out.shape[0])
        return out

    def read_tracked(self, frames=-1, *a, **k):
        data = real_read(self, frames, *a, **k)
        peak["read"] = max(peak["read"], len(data))
        return data

    monkeypatch.setattr(inference, "iter_audio", iter_audio_tracked)
    monkeypatch.setattr(inference, "fbank", fbank_tracked)
    monkeypatch.setattr(sf.SoundFile, "read", read_tracked)

    asr = Transcriber(model_dir, device="cpu", batch_seconds=2.0)  # 3 windows a batch, 12 a chunk
    assert asr.chunk_frames == 12 * WINDOW
    block = SPAN + 16000  # the reader's block: a second more than a window's samples
    results = {}
    for seconds in (10, 60):
        reps = -(-seconds * 16000 // speech.numel())
        f = write(tmp_path / f"{seconds}s.flac", speech.repeat(reps)[: seconds * 16000], subtype="PCM_16")
        live.update(samples=0, frames=0)
        peak.update(samples=0, frames=0, read=0)
        for fmt in ("text", "words"):
            if fmt == "text":
                asr(str(f))
            else:
                transcribe_words(asr, [str(f)])
        results[seconds] = dict(peak)
        assert live == {"samples": 0, "frames": 0}  # everything released at the end
        # bounded by constants of the model and the reader, not by the file's length
        assert peak["read"] <= block
        assert peak["samples"] <= 2 * block
        assert peak["frames"] <= asr.chunk_frames + WINDOW
    assert results[60] == results[10], results
    assert results[60]["frames"] < 6000 / 4 and results[60]["samples"] < 60 * 16000 / 8
