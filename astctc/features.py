"""Log-mel features exactly as AST computes them, plus SpecAugment.

AST (Gong et al. 2021) feeds Kaldi-compatible fbank: 128 mel bins, 25 ms Hanning windows every
10 ms, HTK-compatible mel scale, no dither, waveform mean removed, then normalises with the
AudioSet statistics as (x - mean) / (2 * std). Pretrained AST weights expect exactly this, so
we keep it byte-for-byte rather than using a faster but different mel implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FeatureConfig:
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

    def frames(self, num_samples: int) -> int:
        """Number of fbank frames Kaldi produces for `num_samples` (snip_edges=True)."""
        win = int(self.sample_rate * self.frame_length_ms / 1000)
        hop = int(self.sample_rate * self.frame_shift_ms / 1000)
        return 0 if num_samples < win else 1 + (num_samples - win) // hop


LOW_FREQ = 20.0  # Kaldi's (and torchaudio's) default lower edge of the mel filters, in Hz


def check_features(cfg: FeatureConfig, prefix: str = "features.") -> None:
    """Raise ValueError (a ConfigError naming `prefix`<key>) for settings Kaldi fbank cannot
    compute: it would fail later, inside a DataLoader worker, with a bare assertion."""
    from .config import ConfigError

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{prefix}{key}", f"{prefix}{key} {problem}", whole=True)

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


def fbank(wav: torch.Tensor, cfg: FeatureConfig | None = None) -> torch.Tensor:
    """(num_samples,) float waveform at cfg.sample_rate -> (T, num_mel_bins) normalised fbank
    (T: cfg.frames(num_samples))."""
    import torchaudio.compliance.kaldi as kaldi

    cfg = cfg or FeatureConfig()
    wav = wav.float()
    if wav.dim() != 1:
        raise ValueError(f"fbank expects a 1-D waveform, got shape {tuple(wav.shape)}")
    if cfg.frames(wav.numel()) < 1:
        raise ValueError(
            f"waveform of {wav.numel()} samples is shorter than one {cfg.frame_length_ms} ms analysis window"
        )
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
