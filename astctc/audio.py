"""Reading audio: any file or bytes libsndfile understands -> mono float32 at 16 kHz.

Everything downstream (features, shards, models) assumes 16 kHz mono, so this is the one
place where formats, channels and rates are reconciled, and the one place that turns a bad
file into an error that names it.
"""

from __future__ import annotations

import io
import math
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16000

Source = Union[str, Path, bytes, bytearray]


class AudioError(ValueError):
    """An input that cannot be used as speech; the message names the file."""


def source_name(src: Source, name: str | None = None) -> str:
    """How errors name `src`: `name` when given, else its path, or its size for bytes."""
    if name:
        return name
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    return str(src)


# rates a file may declare: below 1 kHz is not speech audio, above 768 kHz no converter records
MIN_RATE, MAX_RATE = 1000, 768000
# torchaudio's kernel holds about p * q floats for a reduced ratio p:q (44101 -> 16000 Hz:
# 44101 * 16000 = 706M: 12 GB with its temporaries); ratios above this are approximated
MAX_KERNEL = 1 << 20


@lru_cache(maxsize=256)
def resample_ratio(orig: int, new: int) -> tuple[int, int]:
    """(p, q): the resampler maps p input samples to q output samples. The exact reduced ratio
    orig:new when p * q <= MAX_KERNEL (every common rate: 44100 -> 16000 is 441:160); else the
    closest ratio whose larger side is at most sqrt(MAX_KERNEL * larger / smaller), so p * q
    stays about MAX_KERNEL (44101 -> 16000 becomes 1527:554, 1.9e-6 fast). The relative error
    of the ratio is at most 4.8e-4 over every rate from MIN_RATE to MAX_RATE to 16 kHz (near
    16008 Hz), under 3e-5 for 99% of them."""
    g = math.gcd(orig, new)
    p, q = orig // g, new // g
    if p * q <= MAX_KERNEL:
        return p, q
    big, small = max(orig, new), min(orig, new)
    f = Fraction(small, big).limit_denominator(math.isqrt(MAX_KERNEL * big // small))
    return (f.denominator, f.numerator) if orig >= new else (f.numerator, f.denominator)


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    import torchaudio.functional as AF  # imported lazily: torchaudio is slow to import

    p, q = resample_ratio(orig, new)
    return lambda x: AF.resample(x, p, q)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling (torchaudio's sinc interpolation) by `resample_ratio`: exact for
    the common rates, with memory bounded (tens of MB) for any rate."""
    if orig_sr == new_sr:
        return wav
    # oneDNN caches a primitive per input length: over many clips of different lengths memory
    # grows without bound (1 GB+ seen), and the plain kernel is also ~3x faster here.
    with torch.backends.mkldnn.flags(enabled=False):
        return _resampler(orig_sr, new_sr)(wav)


def check_rate(sr: int, label: str) -> None:
    """AudioError naming the file when its declared sample rate is outside MIN_RATE..MAX_RATE."""
    if not MIN_RATE <= sr <= MAX_RATE:
        raise AudioError(f"{label}: sample rate of {sr} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")


def _open(src: Source, label: str):
    """What libsndfile reads for `src` (a path or a BytesIO), after the checks that need no decoding."""
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise AudioError(f"{label}: empty audio data (0 bytes)")
        return io.BytesIO(src)
    path = Path(src)
    if not path.exists():
        raise AudioError(f"{label}: {_missing(path)}")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: empty audio file (0 bytes)")
    return str(path)


def _missing(path: Path) -> str:
    """Why a path that does not exist cannot be read: no file, or a link whose target is gone."""
    if path.is_symlink():
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    return "no such audio file"


def _sound_file(src: Source, label: str) -> sf.SoundFile:
    """`src` opened by libsndfile (its header read, no samples yet); AudioError when it cannot be."""
    handle = _open(src, label)
    try:
        return sf.SoundFile(handle)
    except Exception as e:  # libsndfile raises several types; all mean "unreadable"
        raise AudioError(f"{label}: cannot decode audio ({e})") from None


def _mono(data: np.ndarray, label: str) -> torch.Tensor:
    """(frames, channels) float32 -> contiguous 1-D tensor, channels averaged; rejects NaN/inf."""
    # numpy, not torch, for these per-clip checks: tiny torch ops fan out to the intra-op thread
    # pool, whose spin-waiting makes them ~30x slower when other processes hold the cores
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{label}: audio contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(mono))


def load_audio(src: Source, sr: int = SAMPLE_RATE, name: str | None = None) -> torch.Tensor:
    """Decode `src` (path or encoded bytes) to a 1-D float32 tensor at `sr` Hz.

    Multi-channel audio is averaged to mono. Raises AudioError naming the file when it is
    missing, unreadable, empty or has no samples.
    """
    label = source_name(src, name)
    with _sound_file(src, label) as f:
        check_rate(f.samplerate, label)
        try:
            data, file_sr = f.read(dtype="float32", always_2d=True), f.samplerate
        except Exception as e:  # libsndfile raises several types; all mean "unreadable"
            raise AudioError(f"{label}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{label}: audio has zero samples")
    return resample(_mono(data, label), file_sr, sr).contiguous()


class _BlockResampler:
    """`resample` of a signal that arrives in pieces, equal to resampling it whole.

    torchaudio's resampler is a strided convolution: with p:q = resample_ratio(orig, new) (the
    reduced orig:new, or its approximation for odd rates), input samples [i*p, (i+1)*p) give
    output samples [i*q, (i+1)*q), computed from the input [i*p - w, (i+1)*p + w) (w: the
    filter's half-width; zeros beyond the ends). So a piece of input that starts on a multiple
    of p, `context` >= w samples before the outputs wanted, and ends `context` after them, gives
    exactly those outputs (up to float rounding: the convolution runs over a different length).
    Holds one piece plus 2 * context samples (p is at most MAX_RATE samples: one second)."""

    def __init__(self, orig: int, new: int):
        self.orig, self.new = orig, new
        self.p, self.q = resample_ratio(orig, new)  # the ratio `resample` uses, approximated or not
        # torchaudio.functional.resample's default filter: 6 zero crossings, rolloff 0.99
        width = math.ceil(6 * self.p / (min(self.p, self.q) * 0.99))
        self.context = self.p * (width // self.p + 2)  # whole periods, more than the half-width
        self.buf = torch.zeros(0)
        self.buf_start = 0  # input index of buf[0]: a multiple of p
        self.done = 0  # input index (a multiple of p) below which the outputs were returned

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs that `x` (the next input samples) completes."""
        self.buf = torch.cat([self.buf, x])
        stop = (self.buf_start + self.buf.numel() - self.context) // self.p * self.p
        return self._emit(stop) if stop > self.done else self.buf[:0]

    def flush(self, x: torch.Tensor) -> torch.Tensor:
        """The rest of the outputs, given the last input samples `x` (a signal given whole
        to flush is resampled in one call, as `resample` does it)."""
        self.buf = torch.cat([self.buf, x]) if self.buf.numel() else x
        return self._emit(None)

    def _emit(self, stop: int | None) -> torch.Tensor:
        y = resample(self.buf, self.orig, self.new)
        lo = (self.done - self.buf_start) // self.p * self.q
        out = y[lo:] if stop is None else y[lo : (stop - self.buf_start) // self.p * self.q]
        if stop is not None:
            keep = max(self.buf_start, stop - self.context)
            self.buf = self.buf[keep - self.buf_start :].clone()
            self.buf_start, self.done = keep, stop
        return out.clone()


def iter_audio(
    src: Source, sr: int = SAMPLE_RATE, name: str | None = None, block_seconds: float = 10.0
) -> Iterator[torch.Tensor]:
    """Decode `src` block by block: consecutive 1-D float32 pieces at `sr` Hz whose concatenation
    is `load_audio(src, sr)`: exactly for a file at `sr` Hz; up to float rounding near the seams
    for one that is resampled (the resampler is given the context it needs, see
    `_BlockResampler`). Holds about `block_seconds` of samples at a time, whatever the length
    of the file.

    Raises AudioError as load_audio does; a problem found in the middle of the file (NaN
    samples, a corrupt frame) is raised when its block is reached, after the blocks before it.
    """
    label = source_name(src, name)
    with _sound_file(src, label) as f:
        check_rate(f.samplerate, label)
        rs = _BlockResampler(f.samplerate, sr) if f.samplerate != sr else None
        frames = max(1, int(block_seconds * f.samplerate))
        seen = False
        held = None  # with a resampler, one block is held back: the last one goes to flush
        while True:
            try:
                data = f.read(frames, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"{label}: cannot decode audio ({e})") from None
            if data.shape[0] == 0:
                break
            x = _mono(data, label)
            del data
            seen = True
            if rs is None:
                yield x
                continue
            if held is not None and (y := rs.push(held)).numel():
                yield y
            held = x
        if not seen:
            raise AudioError(f"{label}: audio has zero samples")
        if rs is not None and held is not None and (y := rs.flush(held)).numel():
            yield y


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding the samples."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{path}: {_missing(p)}")
    if p.stat().st_size == 0:
        raise AudioError(f"{path}: empty audio file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio header ({e})") from None
    check_rate(info.samplerate, str(path))  # a rate no reader takes: refused where the header is read
    return info.frames / info.samplerate


def encode_flac(wav: torch.Tensor, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of a mono waveform (what shards store)."""
    buf = io.BytesIO()
    x = wav.detach().cpu().float().numpy()
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 1.0:  # avoid wrap-around clipping in the int16 conversion
        x = x / peak
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
