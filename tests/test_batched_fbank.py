"""fbank_batch (features on the device, a batch at a time) against fbank one clip at a time, on
real speech: Kaldi's fbank as AST computes it and Whisper's log-mel, at lengths that end
anywhere in a hop, with whatever lies in the padding."""

from __future__ import annotations

import pytest
import torch

from astctc.audio import load_audio
from astctc.features import FeatureConfig, fbank, fbank_batch, whisper_log_mel

from .conftest import lj_rows

# sample counts: whole frames and not, one window exactly (1 frame), and around Whisper's hop
CUTS = [48000, 30001, 400, 16010, 24039, 24040, 12159, 8000]


@pytest.fixture(scope="module")
def clips(shared_data) -> list[torch.Tensor]:
    rows = lj_rows(shared_data, len(CUTS))
    return [load_audio(r["audio"])[:n] for r, n in zip(rows, CUTS)]


def _batch(wavs: list[torch.Tensor], fill: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (B, N) with `fill` noise (None: zeros) past each clip, and the lengths."""
    n = max(w.numel() for w in wavs)
    g = torch.Generator().manual_seed(0)
    batch = torch.zeros(len(wavs), n + 321) if fill is None else fill * torch.randn(len(wavs), n + 321, generator=g)
    for b, w in enumerate(wavs):
        batch[b, : w.numel()] = w
    return batch, torch.tensor([w.numel() for w in wavs])


def _check(batch_feats: torch.Tensor, wavs, cfg: FeatureConfig, atol: float = 1e-4) -> None:
    T = max(cfg.frames(w.numel()) for w in wavs)
    assert batch_feats.shape == (len(wavs), T, cfg.num_mel_bins)
    for b, w in enumerate(wavs):
        alone = fbank(w, cfg)
        n = alone.shape[0]
        err = (batch_feats[b, :n] - alone).abs().max().item()
        assert err < atol, (b, w.numel(), err)
        assert not batch_feats[b, n:].any(), "frames past a clip are zeros (the normalised mean)"


@pytest.mark.parametrize(
    "cfg",
    [
        FeatureConfig(),  # AST's
        FeatureConfig(num_mel_bins=80, high_freq=4000.0, utterance_cmvn=True),
        FeatureConfig(utterance_level=True, remove_waveform_mean=False),
        FeatureConfig(frame_length_ms=32.0, frame_shift_ms=12.5),
    ],
    ids=["ast", "80bins-4k-cmvn", "level-no-mean", "32ms-12.5ms"],
)
def test_kaldi_fbank_batch_equals_one_by_one(clips, cfg):
    wavs = [w for w in clips if cfg.frames(w.numel()) >= 1]  # 32 ms: the 400-sample clip has none
    for fill in (None, 0.3):  # what lies past a clip must not matter
        _check(fbank_batch(*_batch(wavs, fill), cfg), wavs, cfg)


@pytest.mark.parametrize("bins", [80, 128])
def test_whisper_fbank_batch_equals_one_by_one(clips, bins):
    cfg = FeatureConfig(kind="whisper", num_mel_bins=bins)
    wavs = [w for w in clips if w.numel() > 200]
    _check(fbank_batch(*_batch(wavs, 0.3), cfg), wavs, cfg, atol=1e-5)


def test_whisper_log_mel_batch_path_at_lengths_off_the_hop(clips):
    """whisper_log_mel(batch, lengths): a row whose last frame reads past its end (its length
    mod 160 under 40, or 0) is reflected at its own end, as alone, not at the batch's zeros."""
    wavs = [w for w in clips if w.numel() > 200]
    assert {w.numel() % 160 for w in wavs} & {0, 10, 39}
    batch, lengths = _batch(wavs)
    out = whisper_log_mel(batch, 80, lengths)
    for b, w in enumerate(wavs):
        alone = whisper_log_mel(w, 80)
        assert torch.allclose(out[b, : alone.shape[0]], alone, atol=1e-5), (w.numel(), b)


def test_a_clip_shorter_than_a_window_is_an_error(clips):
    wavs = [clips[0], clips[0][:399]]
    with pytest.raises(ValueError, match="waveform 1 of 399 samples is shorter than one 25.0 ms analysis window"):
        fbank_batch(*_batch(wavs), FeatureConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU path")
@pytest.mark.parametrize("kind", ["kaldi", "whisper"])
def test_fbank_batch_on_cuda_equals_the_cpu_and_does_not_sync(clips, kind):
    cfg = FeatureConfig(kind=kind, num_mel_bins=128)
    wavs = [w for w in clips if w.numel() > 400]
    batch, lengths = _batch(wavs, 0.3)
    fbank_batch(batch.cuda(), lengths, cfg)  # tables onto the device once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        feats = fbank_batch(batch.pin_memory().cuda(non_blocking=True), lengths, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _check(feats.cpu(), wavs, cfg)


# ------------------------------------------------------------------ decoding with features on the device


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.conftest import tiny_ctc_model

    model, tok = tiny_ctc_model(depth=2, max_frames=300, attention="packed")
    return model.save(tmp_path_factory.mktemp("devfeat") / "model", FeatureConfig(), tok)


def test_featurizer_on_the_device_gives_waveform_batches(tiny_corpus):
    """Workers that only decode audio: batches of waveforms and frame counts, whose features
    (batch_features) equal the per-utterance loader's within 1e-4; a SpecAugment is refused."""
    from astctc.data.pipeline import DataConfig, Featurizer, batch_features, make_loader
    from astctc.features import SpecAugmentConfig

    cfg = FeatureConfig()
    batches = {}
    for on_device in (False, True):
        f = Featurizer(cfg, None, device_features=on_device)
        loader = make_loader(str(tiny_corpus["shards"]), f, DataConfig(max_batch_seconds=8, num_workers=0), False)
        batches[on_device] = [b for b in loader if "lengths" in b]
    for a, b in zip(batches[False], batches[True]):
        assert a["ids"] == b["ids"] and torch.equal(a["lengths"], b["lengths"]) and "feats" not in b
        assert b["wavs"].shape == (len(b["ids"]), int(b["samples"].max()))
        assert (batch_features(b, cfg, torch.device("cpu")) - a["feats"]).abs().max() < 1e-4
    with pytest.raises(ValueError, match="no feature-level augmentation"):
        Featurizer(cfg, None, SpecAugmentConfig(), device_features=True)


def test_decode_set_with_features_on_the_device(model_dir, tiny_corpus, tmp_path):
    """decode_set's GPU path (fbank on the device), here on the CPU: the loader's transcripts."""
    from astctc.decode import DecodeOptions, decode_set

    out = {}
    for where in ("loader", "device"):
        decode_set(
            str(model_dir),
            str(tiny_corpus["shards"]),
            str(tmp_path / where),
            DecodeOptions(device="cpu", plots=1, features_on=where),
        )
        out[where] = (tmp_path / where / "hyp.trn").read_text()
        speed = __import__("json").loads((tmp_path / where / "speed.json").read_text())
        assert speed["features_on"] == where
    assert out["loader"] == out["device"] and out["device"].strip()


def test_windowed_model_with_features_on_the_device(model_dir, shared_data):
    """transcribe's windows featurised a batch at a time (fbank_batch) give the log-probabilities
    of windows featurised one by one, over a file of several windows and a short one."""
    from astctc.audio import load_audio
    from astctc.inference import WindowedModel

    speech = load_audio(shared_data / "ljspeech_lj001" / "wavs" / "LJ001-0001.flac")
    items = [speech, speech[:7001]]
    got = {}
    for where in ("cpu", "device"):
        asr = WindowedModel(model_dir, device="cpu", batch_seconds=4.0, features_on=where)
        assert asr.features_on_device == (where == "device")
        got[where] = [lp for _, lp in asr.item_log_probs(items)]
    assert len(got["cpu"]) == 2
    for a, b in zip(got["cpu"], got["device"]):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-3


def test_decode_loader_workers_one_per_shard_at_most(tiny_corpus):
    from astctc.decode.evaluate import loader_workers

    assert loader_workers(None, torch.device("cpu"), str(tiny_corpus["shards"])) == 0
    assert loader_workers(3, torch.device("cuda"), str(tiny_corpus["shards"])) == 3  # as asked
    # 12 clips in shards of 5: 3 shards, so at most 3 workers however many cores
    assert loader_workers(None, torch.device("cuda"), str(tiny_corpus["shards"])) <= 3
