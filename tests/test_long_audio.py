"""Long audio: overlapping windows whose centres are stitched into one matrix per item.

With a model whose receptive field fits in the context, the stitched log-probabilities must not
depend on where the cuts fall (the same audio shifted by a few hundred ms gives the same frames),
while the old non-overlapping windows (context=0) do; the kept spans must tile the file's CTC
frames; words come from one decode over the stitched matrix; an item that fails is reported and
the others go on; and memory stays bounded by the window and chunk, not the file.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import astctc.inference as inference
import astctc.words as words_mod
from astctc.audio import AudioError, iter_audio, load_audio
from astctc.decode import BeamSearch
from astctc.features import FeatureConfig, fbank
from astctc.inference import WindowedModel
from astctc.words import greedy_words, transcribe_words
from tests.conftest import tiny_ctc_model

WINDOW, STRIDE, PATCH = 64, 2, 2  # fbank frames per window; per CTC frame; per patch
HOP = 160


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, tok = tiny_ctc_model(patch_time=PATCH, stride_time=STRIDE, max_frames=WINDOW)
    d = tmp_path_factory.mktemp("long") / "model"
    model.save(d, FeatureConfig(), tok)
    return d


@pytest.fixture(scope="module")
def speech(shared_data) -> torch.Tensor:
    return load_audio(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")


def write(path, wav, sr: int = 16000):
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sr, subtype="PCM_16")
    return path


class LocalModel(nn.Module):
    """A CTC model that sees `reach` CTC frames on each side of a frame (a strided conv over
    zero-padded time): frames within `reach` of a window's edge differ from mid-file ones."""

    def __init__(self, bins: int, vocab: int, reach: int):
        super().__init__()
        torch.manual_seed(1)
        self.pad = reach * STRIDE
        self.conv = nn.Conv1d(bins, vocab, PATCH + 2 * self.pad, stride=STRIDE)

    def forward(self, x, lengths):
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).float()
        x = torch.nn.functional.pad((x * mask[..., None]).transpose(1, 2), (self.pad, self.pad))
        out = self.conv(x).transpose(1, 2).log_softmax(-1)
        return {"log_probs": out, "lengths": (lengths - PATCH) // STRIDE + 1}


def local(model_dir, context: float, reach: int) -> WindowedModel:
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=0.1, context=context)
    asr.model = LocalModel(asr.features.num_mel_bins, asr.tokenizer.vocab_size, reach)
    # no per-window statistics: a frame's features are the same whichever window holds it
    asr.features = dataclasses.replace(asr.features, remove_waveform_mean=False)
    return asr


def test_the_result_does_not_depend_on_where_the_cuts_fall(model_dir, speech, tmp_path):
    lead = 30  # fbank frames (300 ms) of other audio before the same speech: every cut moves
    wav = speech[: 8 * 16000]
    a = write(tmp_path / "a.flac", wav)
    b = write(tmp_path / "b.flac", torch.cat([0.3 * speech[-lead * HOP :], wav]))
    shift = lead // STRIDE  # CTC frames
    asr = local(model_dir, context=0.1, reach=4)  # 5 CTC frames of context >= 4 of reach
    assert asr.context == 5
    ((_, la),) = asr.item_log_probs([str(a)])
    ((_, lb),) = asr.item_log_probs([str(b)])
    assert lb.shape[0] == la.shape[0] + shift
    # whole-file reference: one pass over all frames (the conv's reach is all a frame sees)
    feats = fbank(load_audio(a), asr.features)
    with torch.no_grad():
        ref = asr.model(feats[None], torch.tensor([feats.shape[0]]))["log_probs"][0]
    torch.testing.assert_close(la, ref, rtol=0, atol=1e-5)
    # interior frames (away from both files' edges, where the audio itself differs) agree
    torch.testing.assert_close(lb[shift + 4 : -4], la[4:-4], rtol=0, atol=1e-5)

    old = local(model_dir, context=0, reach=4)  # the old windows: frames at each cut differ
    ((_, oa),) = old.item_log_probs([str(a)])
    ((_, ob),) = old.item_log_probs([str(b)])
    assert oa.shape == la.shape
    assert (ob[shift + 4 : -4] - oa[4:-4]).abs().max() > 1e-3
    assert (oa - ref).abs().max() > 1e-3


def test_the_kept_spans_tile_the_file(model_dir, speech):
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=0.1)
    c, cols = asr.context, asr.columns
    for n in (3000, 10 * 1024 + 17, speech.numel(), 2 * speech.numel() + 333):
        wav = speech.repeat(3)[:n]
        frames = asr.features.frames(n)
        covered = []
        for w in asr.iter_windows([wav]):
            assert w.start % STRIDE == 0  # cuts at whole CTC frames
            first = w.start // STRIDE
            width = asr.model.cfg.encoder.time_columns(w.feats.shape[0])
            lo, hi = w.keep
            hi = width if hi is None else hi
            assert lo == (0 if w.start == 0 else c) and (w.last or hi == cols - c)
            covered += range(first + lo, first + hi)
        assert covered == list(range(asr.model.cfg.encoder.time_columns(frames))), n
        ((_, lp),) = asr.item_log_probs([wav])
        assert lp.shape[0] == len(covered)


def test_one_window_is_the_whole_file(model_dir, speech):
    asr = WindowedModel(model_dir, device="cpu")
    wav = speech[: (WINDOW - 1) * HOP + 400]
    ((_, lp),) = asr.item_log_probs([wav])
    f = fbank(wav, asr.features)
    with torch.no_grad():
        r = asr.model(f[None], torch.tensor([f.shape[0]]))
    assert torch.equal(lp, r["log_probs"][0, : r["lengths"][0]])


def test_words_come_from_one_decode_of_the_stitched_matrix(model_dir, speech, tmp_path, monkeypatch):
    asr = WindowedModel(model_dir, device="cpu")
    files = [str(write(tmp_path / "x.flac", speech)), str(write(tmp_path / "y.flac", speech[: 3 * 16000]))]
    stitched = [lp for _, lp in asr.item_log_probs(files)]
    seen = []
    real = words_mod.greedy_words

    def spy(lp, tok, seconds):
        seen.append(lp)
        return real(lp, tok, seconds)

    monkeypatch.setattr(words_mod, "greedy_words", spy)
    hyps = transcribe_words(asr, files)
    assert len(seen) == 2 and all(torch.equal(s, r) for s, r in zip(seen, stitched))
    for h, lp in zip(hyps, stitched):
        assert h == greedy_words(lp, asr.tokenizer, asr.frame_seconds)
    search = BeamSearch(asr.tokenizer, frame_seconds=asr.frame_seconds)
    calls = []
    real_one = search.decode_one
    monkeypatch.setattr(search, "decode_one", lambda lp, *a: calls.append(lp.shape) or real_one(lp, *a))
    beam = transcribe_words(asr, files, search)
    assert calls == [tuple(s.shape) for s in stitched]
    for h in beam:
        assert all(0.0 <= w.confidence <= 1.0 for w in h.words)
        assert all(w.end <= stitched[0].shape[0] * asr.frame_seconds for w in h.words)


def test_a_failed_item_does_not_stop_the_others(model_dir, speech, tmp_path):
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=2.0)
    good = str(write(tmp_path / "good.flac", speech))
    items = [good, str(tmp_path / "missing.wav"), torch.zeros(10), torch.zeros(2, 5), speech[:20000], good]
    seconds = []
    out = list(asr.item_log_probs(items, progress=seconds.append))
    assert [i for i, _ in out] == list(range(len(items)))
    assert isinstance(out[1][1], AudioError) and "missing.wav" in str(out[1][1])
    assert isinstance(out[2][1], AudioError) and "waveform 2" in str(out[2][1])
    assert isinstance(out[3][1], ValueError) and "1-D" in str(out[3][1])
    ((_, alone),) = asr.item_log_probs([good])
    torch.testing.assert_close(out[0][1], alone)
    torch.testing.assert_close(out[5][1], alone)
    ((_, short),) = asr.item_log_probs([speech[:20000]])
    torch.testing.assert_close(out[4][1], short)
    frames = sum(lp.shape[0] for _, lp in out if isinstance(lp, torch.Tensor))
    assert sum(seconds) == pytest.approx(frames * asr.frame_seconds)


def test_batch_size_caps_the_windows_per_pass(model_dir, speech):
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=100.0, batch_size=3)
    ws = asr.windows([speech])
    sizes = [len(idx) for idx, _ in asr.run(ws)]
    assert max(sizes) == 3 and sum(sizes) == len(ws) > 3
    ((_, capped),) = asr.item_log_probs([speech])
    ((_, free),) = WindowedModel(model_dir, device="cpu").item_log_probs([speech])
    torch.testing.assert_close(capped, free, rtol=0, atol=1e-4)


def test_memory_does_not_grow_with_the_file(model_dir, speech, tmp_path, monkeypatch):
    """Counts, not RSS: samples and fbank frames alive at once, for a file 6x longer."""
    live = {"samples": 0, "frames": 0}
    peak = {"samples": 0, "frames": 0}

    def track(t, kind, n):
        live[kind] += n
        peak[kind] = max(peak[kind], live[kind])
        weakref.finalize(t, drop, kind, n)

    def drop(kind, n):
        live[kind] -= n

    real_iter_audio, real_fbank = inference.iter_audio, inference.fbank

    def iter_audio_tracked(*a, **k):
        for block in real_iter_audio(*a, **k):
            track(block, "samples", block.numel())
            yield block

    def fbank_tracked(wav, cfg=None):
        out = real_fbank(wav, cfg)
        track(out, "frames", out.shape[0])
        return out

    monkeypatch.setattr(inference, "iter_audio", iter_audio_tracked)
    monkeypatch.setattr(inference, "fbank", fbank_tracked)
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=2.0)
    results = {}
    for seconds in (10, 60):
        reps = -(-seconds * 16000 // speech.numel())
        f = write(tmp_path / f"{seconds}s.flac", speech.repeat(reps)[: seconds * 16000])
        live.update(samples=0, frames=0)
        peak.update(samples=0, frames=0)
        ((_, lp),) = asr.item_log_probs([str(f)])
        assert lp.shape[0] == asr.model.cfg.encoder.time_columns(asr.features.frames(seconds * 16000))
        del lp
        results[seconds] = dict(peak)
        assert live == {"samples": 0, "frames": 0}
        assert peak["frames"] <= asr.chunk_frames + WINDOW
    assert results[60] == results[10], results


def test_a_failed_batch_or_read_fails_only_its_own_item(model_dir, speech, tmp_path, monkeypatch):
    """Windows of several items share a forward pass: when it fails, each item's windows run
    alone; an item whose windows fail (or whose reading fails in any way) yields its error,
    naming it, and its later windows are neither read nor run."""
    asr = WindowedModel(model_dir, device="cpu", batch_seconds=2.0)
    good = str(write(tmp_path / "good.flac", speech))
    bad = str(write(tmp_path / "bad.flac", speech))
    items = [good, bad, speech[:20000], good]
    expected = {n: lp for n, lp in asr.item_log_probs(items)}
    real = WindowedModel.window_log_probs
    runs = []

    def window_log_probs(self, windows):
        runs.append({w.source for w in windows})
        if any(w.source == 1 and w.start > 0 for w in windows):  # its first window runs, a later one fails
            raise RuntimeError("out of memory\nmore detail")
        return real(self, windows)

    monkeypatch.setattr(WindowedModel, "window_log_probs", window_log_probs)
    out = list(asr.item_log_probs(items))
    assert [n for n, _ in out] == [0, 1, 2, 3]
    assert isinstance(out[1][1], ValueError)
    assert str(out[1][1]) == f"{bad}: the model failed (RuntimeError: out of memory)"
    for n in (0, 2, 3):
        torch.testing.assert_close(out[n][1], expected[n], rtol=0, atol=1e-5)
    assert any(len(r) > 1 for r in runs) and {1} in runs  # shared batches, then item 1 alone
    reads = []
    real_windows = WindowedModel._item_windows

    def item_windows(self, n, a):
        for w in real_windows(self, n, a):
            reads.append(n)
            yield w

    monkeypatch.setattr(WindowedModel, "_item_windows", item_windows)
    list(asr.item_log_probs([speech[:20000], bad]))
    assert 1 < reads.count(1) < len(asr.windows([speech]))  # the failed item was read no further

    def broken_reader(src, *args, **kwargs):
        if str(src) == bad:
            raise MemoryError("cannot allocate")
        return iter_audio(src, *args, **kwargs)

    monkeypatch.undo()
    monkeypatch.setattr(inference, "iter_audio", broken_reader)
    out = list(asr.item_log_probs(items))
    assert str(out[1][1]) == f"{bad}: reading failed (MemoryError: cannot allocate)"
    for n in (0, 2, 3):
        torch.testing.assert_close(out[n][1], expected[n], rtol=0, atol=1e-5)
