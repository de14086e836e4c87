"""Reading audio: any file or bytes libsndfile understands -> mono float32 at 16 kHz.

Everything downstream (features, shards, models) assumes 16 kHz mono, so this is the one
place where formats, channels and rates are reconciled, and the one place that turns a bad
file into an error that names it.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16000

Source = Union[str, Path, bytes, bytearray]


class AudioError(ValueError):
    """An input that cannot be used as speech; the message names the file."""


def _name(src: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    return str(src)


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    import torchaudio.functional as AF  # imported lazily: torchaudio is slow to import

    return lambda x: AF.resample(x, orig, new)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling (torchaudio's sinc interpolation)."""
    if orig_sr == new_sr:
        return wav
    # oneDNN caches a primitive per input length: over many clips of different lengths memory
    # grows without bound (1 GB+ seen), and the plain kernel is also ~3x faster here.
    with torch.backends.mkldnn.flags(enabled=False):
        return _resampler(orig_sr, new_sr)(wav)


def load_audio(src: Source, sr: int = SAMPLE_RATE, name: str | None = None) -> torch.Tensor:
    """Decode `src` (path or encoded bytes) to a 1-D float32 tensor at `sr` Hz.

    Multi-channel audio is averaged to mono. Raises AudioError naming the file when it is
    missing, unreadable, empty or has no samples.
    """
    label = _name(src, name)
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise AudioError(f"{label}: empty audio data (0 bytes)")
        handle = io.BytesIO(src)
    else:
        path = Path(src)
        if not path.exists():
            raise AudioError(f"{label}: no such audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{label}: empty audio file (0 bytes)")
        handle = str(path)
    try:
        data, file_sr = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types; all mean "unreadable"
        raise AudioError(f"{label}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{label}: audio has zero samples")
    # numpy, not torch, for these per-clip checks: tiny torch ops fan out to the intra-op thread
    # pool, whose spin-waiting makes them ~30x slower when other processes hold the cores
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{label}: audio contains NaN or infinite samples")
    wav = torch.from_numpy(np.ascontiguousarray(mono))
    return resample(wav, file_sr, sr).contiguous()


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding the samples."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{path}: no such audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{path}: empty audio file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio header ({e})") from None
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
