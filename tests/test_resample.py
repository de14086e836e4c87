"""Resampling at any declared rate with bounded memory, and absurd rates refused.

torchaudio's resampler builds a kernel of about p * q floats for the reduced ratio p:q of the
two rates: 441 * 160 for 44100 -> 16000 Hz, but 44101 * 16000 (12 GB with its temporaries) for
44101 Hz. `resample_ratio` keeps the exact ratio for every common rate (the output is what
torchaudio gives, bit for bit) and approximates the others by a close ratio with a small kernel.
Checked: the common rates unchanged, the approximation's error and kernel size over the rates a
file may declare, a real odd-rate file's peak memory (in a child process), the block reader
agreeing with the whole-file reader at an odd rate, and rates outside 1 kHz..768 kHz refused
with one line naming the file.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from astctc.audio import (
    MAX_KERNEL,
    MAX_RATE,
    MIN_RATE,
    AudioError,
    audio_duration,
    iter_audio,
    load_audio,
    resample,
    resample_ratio,
)

COMMON = (8000, 11025, 12000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000)


def tone(sr: int, seconds: float, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def relative_error(orig: int, p: int, q: int) -> float:
    """How far the ratio used (q outputs per p inputs) is from 16000 / orig, relatively."""
    return abs(q * orig / (p * 16000) - 1)


@pytest.mark.parametrize("sr", COMMON)
def test_common_rates_are_resampled_exactly_as_before(sr):
    g = math.gcd(sr, 16000)
    assert resample_ratio(sr, 16000) == (sr // g, 16000 // g)
    x = torch.from_numpy(tone(sr, 0.3)) + 0.01 * torch.randn(int(sr * 0.3), generator=torch.Generator().manual_seed(0))
    with torch.backends.mkldnn.flags(enabled=False):  # as resample runs it (and ran it before)
        before = AF.resample(x, sr, 16000)
    assert torch.equal(resample(x, sr), before)


def test_odd_rates_get_a_close_ratio_with_a_small_kernel():
    rates = [44101, 96001, 1000003 // 2, 16008, 16001, 1001, 8001, MAX_RATE - 1, *range(MIN_RATE, MAX_RATE, 997)]
    worst = 0.0
    for sr in rates:
        p, q = resample_ratio(sr, 16000)
        assert p * q <= 1.1 * MAX_KERNEL, (sr, p, q)
        worst = max(worst, relative_error(sr, p, q))
    assert worst <= 4.8e-4  # the bound over every rate from MIN_RATE to MAX_RATE (16008 Hz is the worst)
    assert relative_error(44101, *resample_ratio(44101, 16000)) < 2e-6


def test_an_odd_rate_file_is_read_as_the_same_sound(tmp_path):
    f = tmp_path / "odd.wav"
    sf.write(str(f), tone(44101, 1.0, hz=1000.0), 44101)
    wav = load_audio(f)
    assert abs(wav.numel() - 16000) <= 1
    spectrum = torch.fft.rfft(wav[:16000]).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz bins: the tone stays at 1000 Hz
    assert 0.45 < float(wav[2000:-2000].abs().max()) < 0.55


def test_an_odd_rate_file_is_read_in_bounded_memory(tmp_path):
    """Peak RSS of a fresh process that reads a 1 s 44101 Hz file: 12 GB before, now about what
    importing torch costs."""
    f = tmp_path / "odd.wav"
    sf.write(str(f), tone(44101, 1.0), 44101)
    code = (
        "import resource, sys; from astctc.audio import load_audio; w = load_audio(sys.argv[1]); "
        "print(w.numel(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    samples, peak_kb = map(int, out.stdout.split())
    assert abs(samples - 16000) <= 1
    assert peak_kb < 1.5 * 2**20, f"peak RSS {peak_kb / 2**20:.2f} GB"


@pytest.mark.parametrize("sr", [44101, 8001, 22051])
def test_the_block_reader_agrees_with_the_whole_file_reader_at_odd_rates(tmp_path, sr):
    rng = np.random.default_rng(0)
    f = tmp_path / "odd.wav"
    sf.write(str(f), (0.1 * rng.standard_normal(3 * sr) + tone(sr, 3.0)).astype(np.float32), sr)
    whole = load_audio(f)
    assert torch.equal(torch.cat(list(iter_audio(f, block_seconds=100.0))), whole)  # one block: one call
    for seconds in (0.05, 0.3, 1.0):
        torch.testing.assert_close(torch.cat(list(iter_audio(f, block_seconds=seconds))), whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sr", [1000003, MAX_RATE + 1, MIN_RATE - 1, 8])
def test_absurd_rates_are_one_line_errors_naming_the_file(tmp_path, sr):
    f = tmp_path / f"rate{sr}.wav"
    sf.write(str(f), np.zeros(200, np.float32), sr)  # a small file that declares the rate
    message = rf"^{f}: sample rate of {sr} Hz is outside {MIN_RATE}\.\.{MAX_RATE} Hz$"
    with pytest.raises(AudioError, match=message):
        load_audio(f)
    with pytest.raises(AudioError, match=message):
        list(iter_audio(f))
    with pytest.raises(AudioError, match=message):
        audio_duration(f)  # the header says it: a manifest drops it, naming it


@pytest.mark.parametrize("sr", [MIN_RATE, MAX_RATE])
def test_the_edge_rates_are_read(tmp_path, sr):
    f = tmp_path / "edge.wav"
    sf.write(str(f), tone(sr, 0.1, hz=200.0), sr)
    assert abs(load_audio(f).numel() - 1600) <= 1


def test_a_broken_link_is_named_as_one(tmp_path):
    link = tmp_path / "gone.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    message = rf"^{link}: broken symbolic link \(its target {tmp_path / 'nowhere.wav'} does not exist\)$"
    for read in (load_audio, audio_duration, lambda f: list(iter_audio(f))):
        with pytest.raises(AudioError, match=message):
            read(link)
