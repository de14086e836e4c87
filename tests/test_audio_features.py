import io

import numpy as np
import pytest
import soundfile as sf
import torch

from astctc.audio import AudioError, audio_duration, encode_flac, load_audio
from astctc.features import FeatureConfig, SpecAugmentConfig, fbank, spec_augment


def _wav_bytes(x: np.ndarray, sr: int, fmt="WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


def test_resample_and_downmix(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1).astype("float32") * 0.5
    p = tmp_path / "a.wav"
    sf.write(p, stereo, 8000)
    wav = load_audio(p)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert wav.numel() == 16000
    assert audio_duration(p) == pytest.approx(1.0)
    # a 440 Hz tone stays a 440 Hz tone after resampling
    spec = torch.fft.rfft(wav).abs()
    assert abs(int(spec.argmax()) - 440) <= 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.wav", None, "no such audio file"),
        ("empty.wav", b"", "empty audio file"),
        ("junk.flac", b"not audio at all" * 10, "cannot decode"),
        ("zero.wav", _wav_bytes(np.zeros(0, "float32"), 16000), "zero samples"),
    ],
)
def test_bad_audio_names_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_bad_bytes_named():
    with pytest.raises(AudioError, match="shard.tar:key1"):
        load_audio(b"garbage" * 20, name="shard.tar:key1")
    with pytest.raises(AudioError, match="empty audio data"):
        load_audio(b"")


def test_flac_round_trip():
    x = torch.rand(16000) - 0.5
    y = load_audio(encode_flac(x))
    assert torch.allclose(x, y, atol=1 / 32768 + 1e-6)


def test_fbank_matches_kaldi_ast_recipe():
    """AST's recipe: mean removed, htk mel, hanning, 128 bins, 25/10 ms, normalised."""
    import torchaudio.compliance.kaldi as kaldi

    torch.manual_seed(0)
    wav = torch.randn(16000) * 0.1 + 0.05
    cfg = FeatureConfig()
    ours = fbank(wav, cfg)
    ref = kaldi.fbank(
        (wav - wav.mean())[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    ref = (ref + 4.2677393) / (4.5689974 * 2)
    assert ours.shape == (98, 128) == ref.shape
    assert cfg.frames(16000) == 98
    assert torch.allclose(ours, ref, atol=1e-5)


def test_fbank_too_short():
    with pytest.raises(ValueError, match="shorter than one"):
        fbank(torch.zeros(100))


def test_spec_augment_masks_and_is_seeded():
    feats = torch.randn(300, 128) + 5
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=20, time_masks=2, time_width=30, time_ratio=0.2)
    a = spec_augment(feats, cfg, torch.Generator().manual_seed(1))
    b = spec_augment(feats, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    zeros = a == 0
    assert zeros.any()
    # masked values are whole rows or columns
    cols = zeros.all(dim=0).sum() + 0
    rows = zeros.all(dim=1).sum() + 0
    assert int(zeros.sum()) == int(cols * 300 + rows * 128 - cols * rows)
    assert torch.equal(spec_augment(feats, SpecAugmentConfig(enabled=False)), feats)


def test_speed_perturb_changes_length_and_pitch():
    from astctc.features import speed_perturb

    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 500 * t)
    fast = speed_perturb(tone, 1.1)
    assert fast.numel() == pytest.approx(16000 / 1.1, abs=2)
    peak_hz = int(torch.fft.rfft(fast).abs().argmax()) * 16000 / fast.numel()
    assert peak_hz == pytest.approx(550, abs=3)
    assert speed_perturb(tone, 1.0) is tone


def test_freq_warp_moves_energy_along_mel_axis():
    from astctc.features import freq_warp

    feats = torch.zeros(5, 128)
    feats[:, 40] = 1.0
    up = freq_warp(feats, 1.1)
    down = freq_warp(feats, 0.9)
    assert int(up[0].argmax()) == 44 and int(down[0].argmax()) == 36
    assert torch.equal(freq_warp(feats, 1.0), feats)
    assert up.shape == feats.shape


def test_time_stretch_changes_rate_not_spectrum():
    from astctc.features import time_stretch

    # a "word": 20 frames of one spectrum, then 40 of another
    feats = torch.zeros(60, 40)
    feats[:20, 5], feats[20:, 30] = 1.0, 1.0
    fast, slow = time_stretch(feats, 1.25), time_stretch(feats, 0.8)
    assert fast.shape == (48, 40) and slow.shape == (75, 40)
    for out in (fast, slow):  # each frame still one of the two spectra (or a blend at the edge)
        assert torch.equal(out[0], feats[0]) and torch.equal(out[-1], feats[-1])
        assert torch.allclose(out.sum(1), torch.ones(out.shape[0]))
        assert set(out.argmax(1).tolist()) == {5, 30}
    # ...in the same proportion: the first sound keeps a third of the clip
    assert int((fast[:, 5] > 0.5).sum()) == 16 and int((slow[:, 5] > 0.5).sum()) == 25
    assert time_stretch(feats, 1.0) is feats


def test_featurizer_tempo_is_seeded_per_utterance():
    from astctc.data.pipeline import Featurizer
    from astctc.features import AugmentConfig

    wav = torch.randn(16000) * 0.1
    f = Featurizer(FeatureConfig(), None, None, seed=0, perturb=AugmentConfig(tempo=0.3))
    lengths = {f({"id": f"u{i}", "wav": wav, "text": ""})["feats"].shape[0] for i in range(8)}
    assert len(lengths) > 1 and all(98 / 1.3 - 1 <= n <= 98 / 0.7 + 1 for n in lengths)
    a, b = (
        Featurizer(FeatureConfig(), None, None, seed=0, perturb=AugmentConfig(tempo=0.3))(
            {"id": "u1", "wav": wav, "text": ""}
        )["feats"]
        for _ in range(2)
    )
    assert torch.equal(a, b)


def test_utterance_cmvn():
    torch.manual_seed(0)
    wav = torch.randn(16000) * 0.1
    feats = fbank(wav, FeatureConfig(utterance_cmvn=True))
    varied = fbank(wav).std(0, unbiased=False) > 0.01
    assert varied.sum() > 100
    assert torch.allclose(feats.mean(0), torch.zeros(128), atol=1e-4)
    assert torch.allclose(feats.std(0, unbiased=False)[varied], torch.ones(int(varied.sum())), atol=1e-3)
    # a louder copy of the same clip gives the same normalised features
    assert torch.allclose(fbank(wav * 4, FeatureConfig(utterance_cmvn=True)), feats, atol=1e-3)


def test_high_freq_keeps_narrow_band_audio_level_invariant(shared_data):
    """An 8 kHz FSDD recording at 16 kHz: filters above 4 kHz sit at the log floor and change
    with the recording level under utterance CMVN; high_freq=4000 puts every filter on signal."""
    wav = load_audio(shared_data / "fsdd" / "recordings" / "2_theo_3.wav")
    full = FeatureConfig(num_mel_bins=40, utterance_cmvn=True)
    narrow = FeatureConfig(num_mel_bins=40, utterance_cmvn=True, high_freq=4000)
    drift = (fbank(wav, full) - fbank(wav * 10, full)).abs().mean(0)
    assert drift[:30].max() < 1e-3 and drift[-6:].mean() > 0.1  # the empty top band moves
    # (the lowest filter, 20-80 Hz, is below what the recording holds and touches the floor too)
    assert (fbank(wav, narrow) - fbank(wav * 10, narrow)).abs()[:, 1:].max() < 1e-3


def test_utterance_level_removes_gain_but_keeps_the_spectral_shape(shared_data):
    """Level normalisation subtracts one number: a louder copy gives the same features, and
    the vowel colour (each bin's mean over the clip) survives, which per-bin CMVN zeroes."""
    wav = load_audio(shared_data / "fsdd" / "recordings" / "2_theo_3.wav")
    level = FeatureConfig(num_mel_bins=40, high_freq=4000, utterance_level=True)
    plain = FeatureConfig(num_mel_bins=40, high_freq=4000)
    feats, unnormalised = fbank(wav, level), fbank(wav, plain)
    assert abs(float(feats.mean())) < 1e-5
    assert (fbank(wav * 10, level) - feats).abs()[:, 1:].max() < 1e-3
    assert (fbank(wav * 10, plain) - unnormalised).abs().mean() > 0.2  # without it, it moves
    shape = unnormalised.mean(0) - unnormalised.mean()
    assert torch.allclose(feats.mean(0), shape, atol=1e-4) and shape.std() > 0.1
