"""Log-mel features: Kaldi's fbank exactly as AST computes it, Whisper's log-mel exactly as
Whisper computes it, plus SpecAugment.

AST (Gong et al. 2021) feeds Kaldi-compatible fbank: 128 mel bins, 25 ms Hanning windows every
10 ms, HTK-compatible mel scale, no dither, waveform mean removed, then normalises with the
AudioSet statistics as (x - mean) / (2 * std). Pretrained AST weights expect exactly this, so
we keep it byte-for-byte rather than using a faster but different mel implementation.

Whisper (Radford et al. 2022; `kind: whisper`) feeds log10 power mel spectra: a 400-point
periodic Hann STFT every 160 samples (centred, reflect-padded, the last frame dropped), Slaney
mel filters over 0-8 kHz (80 or 128 bins), floored at 1e-10 and at the utterance's maximum
minus 8, then (x + 4) / 4. Equal to transformers' WhisperFeatureExtractor (tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

KINDS = ("kaldi", "whisper")


@dataclass
class FeatureConfig:
    # kaldi: AST's fbank (the keys below); whisper: Whisper's log-mel, whose STFT, mel filters and
    # normalisation are fixed (sample_rate 16000, 25 / 10 ms, 80 or 128 bins; the kaldi-only keys
    # dither, high_freq, remove_waveform_mean and norm_* do not apply to it)
    kind: str = "kaldi"
    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    remove_waveform_mean: bool = True  # AST's original code does; ASTFeatureExtractor too
    norm_mean: float = -4.2677393  # AudioSet statistics used by every AST checkpoint
    norm_std: float = 4.5689974
    # per-utterance mean/variance normalisation of each mel bin (CMVN), after the global one:
    # removes speaker and channel colouring; off for pretrained AST, which expects global only
    utterance_cmvn: bool = False
    # upper edge of the mel filterbank in Hz (0: Nyquist). For narrow-band audio (e.g. 8 kHz recordings)
    # 4000 keeps every bin on real signal; bins above the band sit at the log floor, move with
    # the recording level, and utterance CMVN turns them into noise
    high_freq: float = 0.0
    # subtract the utterance's mean log energy (one number over all bins and frames): level
    # invariance that keeps the spectral shape, which per-bin CMVN removes from a one-word clip
    utterance_level: bool = False

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def hop_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    def frames(self, num_samples: int) -> int:
        """Feature frames for `num_samples`: Kaldi's (snip_edges=True), or Whisper's (centred
        STFT frames less the last one; reflect padding needs more than half a window)."""
        win, hop = self.window_samples, self.hop_samples
        if self.kind == "whisper":
            return num_samples // hop if num_samples > win // 2 else 0
        return 0 if num_samples < win else 1 + (num_samples - win) // hop

    def samples_for(self, frames: int) -> int:
        """The fewest samples that give `frames` frames (frames >= 1)."""
        if self.kind == "whisper":
            return max(frames * self.hop_samples, self.window_samples // 2 + 1)
        return (frames - 1) * self.hop_samples + self.window_samples


LOW_FREQ = 20.0  # Kaldi's (and torchaudio's) default lower edge of the mel filters, in Hz


def check_features(cfg: FeatureConfig, prefix: str = "features.") -> None:
    """Raise ValueError (a ConfigError naming `prefix`<key>) for settings Kaldi fbank cannot
    compute: it would fail later, inside a DataLoader worker, with a bare assertion."""
    from .config import ConfigError

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{prefix}{key}", f"{prefix}{key} {problem}", whole=True)

    if cfg.kind not in KINDS:
        raise bad("kind", f"must be one of {', '.join(KINDS)}, not {cfg.kind!r}")
    if cfg.kind == "whisper":
        fixed = {"sample_rate": 16000, "frame_length_ms": 25.0, "frame_shift_ms": 10.0, "dither": 0.0, "high_freq": 0.0}
        for key, value in fixed.items():
            if getattr(cfg, key) != value:
                raise bad(key, f"is {getattr(cfg, key)!r}; Whisper's log-mel is fixed at {value:g}")
        if cfg.num_mel_bins not in (80, 128):
            raise bad("num_mel_bins", f"must be 80 or 128 for Whisper's log-mel, not {cfg.num_mel_bins}")
        return
    if cfg.sample_rate < 1:
        raise bad("sample_rate", f"must be >= 1 Hz, not {cfg.sample_rate}")
    if cfg.num_mel_bins < 4:
        raise bad("num_mel_bins", f"must be >= 4 (Kaldi fbank needs more than 3 mel bins), not {cfg.num_mel_bins}")
    for key, least in (("frame_length_ms", 2), ("frame_shift_ms", 1)):
        ms = getattr(cfg, key)
        if not ms > 0:
            raise bad(key, f"must be > 0, not {ms!r}")
        if int(cfg.sample_rate * ms / 1000) < least:
            raise bad(key, f"{ms:g} ms is less than {least} sample(s) at {cfg.sample_rate} Hz")
    if not cfg.dither >= 0:
        raise bad("dither", f"must be >= 0, not {cfg.dither!r}")
    if not cfg.norm_std > 0:
        raise bad("norm_std", f"must be > 0, not {cfg.norm_std!r}")
    nyquist = cfg.sample_rate / 2
    top = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq  # Kaldi: <= 0 is an offset from Nyquist
    if not LOW_FREQ < top <= nyquist:
        raise bad(
            "high_freq",
            f"{cfg.high_freq:g} Hz puts the top of the mel filters at {top:g} Hz; it must lie in "
            f"({LOW_FREQ:g}, {nyquist:g}] Hz (0: Nyquist, negative: below Nyquist)",
        )


@lru_cache(maxsize=8)
def _whisper_filters(num_mel_bins: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper's Slaney mel filters (bins, 201) over 0-8 kHz and its periodic Hann window."""
    import torchaudio.functional as AF

    mel = AF.melscale_fbanks(201, 0.0, 8000.0, num_mel_bins, 16000, norm="slaney", mel_scale="slaney")
    return mel.T.contiguous().to(device), torch.hann_window(400, device=device)


def whisper_log_mel(wav: torch.Tensor, num_mel_bins: int = 80, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Whisper's log-mel of (N,) or a batch (B, N) of waveforms -> (T, bins) or (B, T, bins),
    T = N // 160, on the waveform's device. In a batch, `lengths` (B,) gives each waveform's
    samples: its end is reflect-padded and its maximum (the floor at max - 8) taken over its own
    frames, as alone (without lengths every row is taken as N samples long)."""
    single = wav.dim() == 1
    x = wav.float()[None] if single else wav.float()
    filters, window = _whisper_filters(num_mel_bins, str(x.device))
    if lengths is None:
        spec = torch.stft(x, 400, 160, window=window, center=True, pad_mode="reflect", return_complex=True)
    else:  # each row reflected at its own end, not the batch's: its last frames read past it
        x = _reflect_rows(x, lengths.to(x.device), 200)
        spec = torch.stft(x, 400, 160, window=window, center=False, return_complex=True)
    power = spec[..., :-1].abs() ** 2  # (B, 201, T): Whisper drops the last frame
    log_spec = (filters @ power).clamp(min=1e-10).log10().transpose(1, 2)  # (B, T, bins)
    if lengths is None:
        top = log_spec.amax(dim=(1, 2), keepdim=True)
    else:
        valid = torch.arange(log_spec.shape[1], device=x.device)[None, :] < (lengths.to(x.device) // 160)[:, None]
        top = log_spec.masked_fill(~valid[..., None], float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_spec = (torch.maximum(log_spec, top - 8.0) + 4.0) / 4.0
    return log_spec[0] if single else log_spec


def _reflect_rows(x: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, N) -> (B, N + 2 pad): row b reflect-padded by `pad` samples at both ends of its own
    first lengths[b] samples (as torch.stft's centring pads a lone waveform), zeros after."""
    pos = torch.arange(-pad, x.shape[1] + pad, device=x.device)[None, :]
    n = lengths[:, None]
    src = pos.abs()  # left edge: sample -k reads sample k
    src = torch.where(src >= n, 2 * (n - 1) - src, src)  # right edge: n - 1 + k reads n - 1 - k
    inside = pos < n + pad
    return torch.where(inside, x.gather(1, src.clamp(0, x.shape[1] - 1)), 0.0)


def fbank(wav: torch.Tensor, cfg: FeatureConfig | None = None) -> torch.Tensor:
    """(num_samples,) float waveform at cfg.sample_rate -> (T, num_mel_bins) normalised features
    of cfg.kind (T: cfg.frames(num_samples))."""
    import torchaudio.compliance.kaldi as kaldi

    cfg = cfg or FeatureConfig()
    wav = wav.float()
    if wav.dim() != 1:
        raise ValueError(f"fbank expects a 1-D waveform, got shape {tuple(wav.shape)}")
    if cfg.frames(wav.numel()) < 1:
        raise ValueError(
            f"waveform of {wav.numel()} samples is shorter than one {cfg.frame_length_ms} ms analysis window"
        )
    if cfg.kind == "whisper":
        return _utterance_norm(whisper_log_mel(wav, cfg.num_mel_bins), cfg)
    if cfg.remove_waveform_mean:
        wav = wav - wav.mean()
    feats = kaldi.fbank(
        wav.unsqueeze(0),
        htk_compat=True,
        sample_frequency=cfg.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=cfg.num_mel_bins,
        dither=cfg.dither,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        high_freq=cfg.high_freq,
    )
    feats = (feats - cfg.norm_mean) / (2 * cfg.norm_std)
    return _utterance_norm(feats, cfg)


def fbank_batch(wavs: torch.Tensor, lengths: torch.Tensor, cfg: FeatureConfig | None = None) -> torch.Tensor:
    """A batch of waveforms (B, N) at cfg.sample_rate, row b valid for its first lengths[b]
    samples (the rest may hold anything), -> (B, T, num_mel_bins) features of cfg.kind on the
    waveforms' device, T = the most frames of any row; row b equals `fbank` of its samples alone
    (1e-4 on real clips: tests/test_batched_fbank.py) for its cfg.frames(lengths[b]) frames and
    is zero (the normalised mean, as `collate` pads) after them. One batched FFT and one mel
    product instead of a call per clip: what decoding runs on a GPU. No host-device sync when
    `lengths` is a CPU tensor."""
    cfg = cfg or FeatureConfig()
    if wavs.dim() != 2 or lengths.shape != wavs.shape[:1]:
        raise ValueError(
            f"fbank_batch takes (B, N) waveforms and (B,) lengths, not {tuple(wavs.shape)}, {tuple(lengths.shape)}"
        )
    frames = [cfg.frames(int(n)) for n in lengths.tolist()]
    if min(frames) < 1:
        b = frames.index(min(frames))
        raise ValueError(
            f"waveform {b} of {int(lengths[b])} samples is shorter than one {cfg.frame_length_ms} ms analysis window"
        )
    wavs = wavs.float()
    T = max(frames)
    if cfg.kind == "whisper":
        lengths_dev = lengths.to(wavs.device, non_blocking=True)
        feats = whisper_log_mel(wavs, cfg.num_mel_bins, lengths_dev)
    else:
        feats = _kaldi_fbank_batch(wavs, lengths, T, cfg)
    keep = _frame_mask(frames, wavs.device)  # (B, T, 1)
    return _batch_norm(feats[:, :T], keep, cfg) * keep


def _frame_mask(frames: list[int], device: torch.device) -> torch.Tensor:
    """(B, T, 1) float: 1 at each row's valid frames; built on the CPU, copied without a sync."""
    keep = (torch.arange(max(frames))[None, :] < torch.tensor(frames)[:, None]).float()[..., None]
    if device.type == "cuda":
        return keep.pin_memory().to(device, non_blocking=True)
    return keep.to(device)


@lru_cache(maxsize=8)
def _kaldi_tables(cfg_key: tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hanning window (win,) and the mel bank padded to the FFT's bins (fft/2 + 1, bins) that
    torchaudio's Kaldi fbank uses for these settings, on `device` (cached per device)."""
    import torchaudio.compliance.kaldi as kaldi

    sample_rate, bins, win, high_freq = cfg_key
    padded = kaldi._next_power_of_2(win)
    mel, _ = kaldi.get_mel_banks(bins, padded, sample_rate, LOW_FREQ, high_freq, 100.0, -500.0, 1.0)
    mel = torch.nn.functional.pad(mel, (0, 1))  # the Nyquist bin, as kaldi.fbank pads it
    window = torch.hann_window(win, periodic=False, dtype=torch.float32)
    return window.to(device), mel.T.contiguous().float().to(device)


def _kaldi_fbank_batch(wavs: torch.Tensor, lengths: torch.Tensor, T: int, cfg: FeatureConfig) -> torch.Tensor:
    """`fbank`'s Kaldi path for every row at once -> (B, >= T, bins), not yet normalised: the
    options `fbank` passes to torchaudio's kaldi.fbank (hanning window, htk_compat, no energy,
    dither, high_freq) and the ones it leaves at their defaults (snip_edges, remove_dc_offset,
    preemphasis 0.97, round_to_power_of_two, low_freq 20 Hz), after removing each row's mean."""
    win, hop = cfg.window_samples, cfg.hop_samples
    n = lengths.to(wavs.device, non_blocking=True)
    samples = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < n[:, None]
    wavs = torch.where(samples, wavs, 0.0)
    if cfg.remove_waveform_mean:
        wavs = torch.where(samples, wavs - wavs.sum(1, keepdim=True) / n[:, None], 0.0)
    wavs = wavs[:, : (T - 1) * hop + win]
    frames = wavs.unfold(1, win, hop)  # (B, T, win): snip_edges, only whole windows
    if cfg.dither != 0.0:
        frames = frames + torch.randn_like(frames) * cfg.dither
    frames = frames - frames.mean(-1, keepdim=True)  # remove_dc_offset
    frames = frames - 0.97 * torch.nn.functional.pad(frames, (1, 0), mode="replicate")[..., :-1]  # pre-emphasis
    window, mel = _kaldi_tables((cfg.sample_rate, cfg.num_mel_bins, win, cfg.high_freq), str(wavs.device))
    padded = mel.shape[0] * 2 - 2
    spectrum = torch.fft.rfft(frames * window, n=padded).abs().pow(2.0)
    eps = torch.finfo(torch.float32).eps  # kaldi's floor before the log
    with torch.autocast(wavs.device.type, enabled=False):  # fp32 product, also under bf16 autocast
        energies = torch.matmul(spectrum, mel)
    return energies.clamp(min=eps).log()


def _batch_norm(feats: torch.Tensor, keep: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """The global normalisation (Kaldi) and `_utterance_norm` of each row over its valid frames."""
    if cfg.kind != "whisper":
        feats = (feats - cfg.norm_mean) / (2 * cfg.norm_std)
    if not (cfg.utterance_level or cfg.utterance_cmvn):
        return feats
    count = keep.sum(1, keepdim=True)  # (B, 1, 1) frames
    if cfg.utterance_level:
        feats = feats - (feats * keep).sum((1, 2), keepdim=True) / (count * feats.shape[2])
    if cfg.utterance_cmvn:
        mean = (feats * keep).sum(1, keepdim=True) / count
        std = (((feats - mean) * keep).square().sum(1, keepdim=True) / count).sqrt()
        feats = (feats - mean) / std.clamp(min=0.01)
    return feats


def _utterance_norm(feats: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    if cfg.utterance_level:
        feats = feats - feats.mean()
    if cfg.utterance_cmvn:
        # the floor keeps a near-constant bin (an empty low mel filter) from blowing up
        feats = (feats - feats.mean(dim=0)) / feats.std(dim=0, unbiased=False).clamp(min=0.01)
    return feats


@dataclass
class SpecAugmentConfig:
    """Frequency and time masking (Park et al. 2019); time masks scale with utterance length."""

    freq_masks: int = 2
    freq_width: int = 24  # of 128 bins, AST's freqm=24 for speech
    time_masks: int = 2
    time_width: int = 40  # frames (10 ms each) at most per mask
    time_ratio: float = 0.05  # ...and at most this fraction of the utterance per mask
    enabled: bool = True


def spec_augment(feats: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask random frequency bands and time spans of a (T, F) feature matrix with zeros.

    Zero is the normalised mean, so masked regions look like 'average' input, as in AST.
    """
    if not cfg.enabled:
        return feats
    feats = feats.clone()
    T, F = feats.shape

    def rand_int(high: int) -> int:
        return int(torch.randint(0, max(high, 1), (1,), generator=generator))

    for _ in range(cfg.freq_masks):
        w = rand_int(cfg.freq_width + 1)
        f0 = rand_int(F - w + 1)
        feats[:, f0 : f0 + w] = 0
    max_t = min(cfg.time_width, int(cfg.time_ratio * T))
    for _ in range(cfg.time_masks):
        w = rand_int(max_t + 1)
        t0 = rand_int(T - w + 1)
        feats[t0 : t0 + w, :] = 0
    return feats


@dataclass
class AugmentConfig:
    """Speaker-like perturbations, for models that must generalise to unseen voices.

    Speed perturbation (Ko et al. 2015, Kaldi's 0.9/1.0/1.1) changes tempo and pitch together;
    the mel-axis warp (like VTLP, Jaitly & Hinton 2013) stretches the spectrum as a longer or
    shorter vocal tract would, moving formants without touching timing; tempo does the opposite,
    a faster or slower talker with the same voice (as lhotse's tempo perturbation, here on the
    features: frames resampled in time).
    """

    speeds: list[float] = field(default_factory=lambda: [1.0])
    freq_warp: float = 0.0  # max relative stretch of the mel axis, e.g. 0.1 = +-10%
    tempo: float = 0.0  # max relative change of the speaking rate (pitch and formants kept), 0.2 = +-20%


def speed_perturb(wav: torch.Tensor, speed: float, sample_rate: int = 16000) -> torch.Tensor:
    """Play `wav` `speed` times faster (pitch rises with it), by resampling."""
    if speed == 1.0:
        return wav
    from .audio import resample

    return resample(wav, int(round(sample_rate * speed)), sample_rate)


def _lerp(feats: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(T, F) features read at fractional positions `pos` (within the axis) along `dim` (0: time,
    1: mel bins), linearly interpolated between neighbours."""
    last = feats.shape[dim] - 1
    lo = pos.floor().long().clamp(max=last)
    hi = (lo + 1).clamp(max=last)
    w = (pos - lo.float()).unsqueeze(1 - dim)
    return feats.index_select(dim, lo) * (1 - w) + feats.index_select(dim, hi) * w


def freq_warp(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """Stretch the mel axis of (T, F) features by `factor` (>1 moves energy up), linearly."""
    if factor == 1.0:
        return feats
    F_ = feats.shape[1]
    return _lerp(feats, (torch.arange(F_, dtype=torch.float32) / factor).clamp(0, F_ - 1), dim=1)


def time_stretch(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """(T, F) features as if spoken `factor` times faster: round(T / factor) frames linearly
    interpolated from the originals (the spectrum of each frame, so pitch and formants, kept)."""
    T = feats.shape[0]
    n = max(1, round(T / factor))
    if factor == 1.0 or n == T or T < 2:
        return feats
    return _lerp(feats, torch.arange(n, dtype=torch.float32) * ((T - 1) / max(n - 1, 1)), dim=0)
