"""What must not stop a long GPU run: over-long and CTC-infeasible utterances, resuming on fewer
GPUs, a loader that featurises everything before its first batch, host-device syncs, DDP with a
frozen encoder, silent device fallbacks. Each test fails on the code before its fix."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from astctc.config import load_config
from astctc.data.pipeline import DataConfig, Featurizer, make_loader
from astctc.data.shards import BatchedShardDataset, IncompleteSetError, ShardDataset
from astctc.features import FeatureConfig
from astctc.models.encoder import EncoderConfig
from astctc.models.heads import CTCHeadConfig
from astctc.models.model import ASTModel, ModelConfig
from astctc.tokenizer import load_tokenizer
from astctc.train import TrainConfig, Trainer, distributed
from astctc.train import checkpoint as ckpt
from astctc.train.losses import head_losses
from tests.conftest import tiny_train_config

# ----------------------------------------------------------- 1. over-long utterances


def test_clip_too_long_after_speed_perturbation_is_dropped_not_fatal(tiny_corpus, tmp_path, caplog):
    """The clips are 2 s (198 fbank frames): max_frames 205 admits them as they are, but not
    slowed down to 0.9x (220 frames). Before: the encoder raised in the middle of the epoch."""
    exp = tmp_path / "exp"
    sets = tiny_train_config(
        tiny_corpus,
        exp,
        max_steps=4,
        validate=False,
        **{"model.encoder.max_frames": 205, "data.augment.speeds": "[0.9, 1.0, 1.1]", "data.max_batch_seconds": 5},
    )
    with caplog.at_level(logging.WARNING, logger="astctc.train"):
        Trainer(load_config(TrainConfig, None, sets)).run()
    rows = [line.split("\t") for line in (exp / "dropped.tsv").read_text().splitlines()]
    assert rows and all(r[3] == "too_long" for r in rows)
    assert all("max_duration 2.05" in r[4] or "max_frames 205" in r[4] for r in rows)
    assert "dropped by the loader (too_long" in caplog.text
    train = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("dropped_too_long", 0) for r in train) == len(rows)


def test_decode_leaves_out_what_the_position_table_cannot_hold(tiny_corpus, tmp_path):
    """A model whose table covers 1.5 s decodes 1 s and 2 s clips: the 2 s ones are left out,
    listed and counted. Before: the encoder raised, naming no utterance."""
    from astctc.decode import DecodeOptions, decode_set

    data = tmp_path / "data"
    _short_shards(tiny_corpus, data, keep_whole=10)  # 10 clips of 2 s, 2 of 1 s
    corpus = {**tiny_corpus, "shards": data / "shards"}
    exp = tmp_path / "exp"
    sets = tiny_train_config(corpus, exp, max_steps=1, validate=False, **{"model.encoder.max_frames": 150})
    trainer = Trainer(load_config(TrainConfig, None, sets))
    trainer.run()
    model_dir = trainer.model.save(tmp_path / "model", trainer.cfg.features, trainer.tokenizer)
    with pytest.raises(IncompleteSetError, match="2 of 12 utterances scored; 10 utterance"):
        decode_set(str(model_dir), str(data / "shards"), str(tmp_path / "dec"))  # all written first
    dropped = (tmp_path / "dec" / "dropped.tsv").read_text().splitlines()
    assert len(dropped) == 10 and all("\ttoo_long\t" in d for d in dropped)
    assert json.loads((tmp_path / "dec" / "speed.json").read_text())["dropped"] == 10
    report = decode_set(str(model_dir), str(data / "shards"), str(tmp_path / "dec"), DecodeOptions(allow_missing=True))
    assert report.num_utts == 2


def _short_shards(corpus, out, keep_whole: int) -> None:
    """The corpus with all but the first `keep_whole` clips cut to 1 s."""
    from astctc.audio import encode_flac, load_audio
    from astctc.data.manifest import read_manifest, write_manifest
    from astctc.data.shards import write_shards

    rows = read_manifest(corpus["manifest"])
    out.mkdir()
    for i, r in enumerate(rows):
        if i >= keep_whole:
            p = out / f"{r['id']}.flac"
            p.write_bytes(encode_flac(load_audio(r["audio"])[:16000]))
            r["audio"], r["duration"] = str(p), 1.0
    write_manifest(rows, out / "manifest.jsonl")
    write_shards(out / "manifest.jsonl", out / "shards", progress=False)


def test_max_duration_defaults_follow_the_position_table(tmp_path):
    assert DataConfig().max_duration is None
    with pytest.raises(ValueError, match="data.max_duration 40 s is longer than the position table"):
        Trainer(load_config(TrainConfig, None, ["data.max_duration=40", "model.encoder.max_frames=3600"]))


def test_featurizer_drops_infeasible_and_counts_every_drop():
    tok = _chars("abc")
    f = Featurizer(FeatureConfig(), tok, output_frames=lambda frames: 3, max_frames=300, max_duration=2.5)
    wav = torch.randn(16000) * 0.1
    assert f({"id": "ok", "wav": wav, "text": "abc"}) is not None  # 3 tokens, 3 frames
    assert f({"id": "rep", "wav": wav, "text": "aab"}) is None  # a blank between the a's: 4
    assert f({"id": "long", "wav": torch.randn(48000) * 0.1, "text": "a"}) is None  # 3 s > 2.5 s
    assert f.plan({"id": "x", "duration": 2.6}) is None
    assert [(u, k) for u, k, _ in f.take_dropped()] == [("rep", "infeasible"), ("long", "too_long"), ("x", "too_long")]
    assert f.take_dropped() == []


def _chars(text):
    from astctc.tokenizer import CharTokenizer

    return CharTokenizer.train([text])


# ------------------------------------------------------------- 2. resume on fewer GPUs


def test_resume_a_checkpoint_of_eight_gpus_on_one(monkeypatch):
    """A checkpoint written where 8 GPUs were visible (older format: one CUDA state each)
    resumes on a machine with one. Before: set_rng_state_all walked all eight and crashed."""
    calls = []

    def fake_set(state, device="cuda"):
        index = 0 if device == "cuda" else torch.device(device).index if not isinstance(device, int) else device
        if index >= 1:
            raise RuntimeError(f"invalid device ordinal {index}")
        calls.append(index)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake_set)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", fake_set)
    state = ckpt.rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]
    ckpt.set_rng_state(state)
    assert calls == [0]

    # and a new checkpoint holds this process's device's state alone
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.ones(16, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.ones(16, dtype=torch.uint8)] * 8)
    assert torch.equal(ckpt.rng_state()["cuda"], torch.ones(16, dtype=torch.uint8))


# ------------------------------------------------------------------ 3. the loader


class _Counting:
    """A transform that counts its calls (a stand-in for the Featurizer)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, sample):
        self.calls += 1
        return {"id": sample["id"], "duration": sample["wav"].numel() / 16000, "feats": torch.zeros(3, 2)}


def test_first_batch_comes_before_the_buffer_is_featurised(tiny_corpus):
    """The buffer holds raw samples; a batch is featurised when it is emitted. Before: the
    worker featurised all of `bucket_buffer` before yielding anything."""
    t = _Counting()
    src = ShardDataset(tiny_corpus["shards"], shuffle=False, transform=t)
    batches = iter(BatchedShardDataset(src, lambda items: items, 4.5, bucket_buffer=12, num_buckets=0, shuffle=False))
    first = next(batches)
    assert len(first) == 2 and t.calls == 2  # 2 s clips, 4.5 s budget
    rest = list(batches)
    assert t.calls == 12 and sum(len(b) for b in rest) == 10


def test_lazy_batches_equal_batches_cut_from_featurised_samples(tiny_corpus):
    """Refilling as batches leave gives the batches a burst refill gives (the old loader)."""
    feat = Featurizer(FeatureConfig(), None, None, seed=0)
    kw = dict(max_batch_seconds=4.5, bucket_buffer=5, num_buckets=0, seed=2)
    lazy = BatchedShardDataset(ShardDataset(tiny_corpus["shards"], seed=1, transform=feat), _ids, **kw)
    eager_src = list(ShardDataset(tiny_corpus["shards"], seed=1, transform=feat))  # the same order
    eager = BatchedShardDataset(eager_src, _ids, **kw)
    assert list(lazy) == list(eager) and len(list(eager)) > 3


def _ids(items):
    return [it["id"] for it in items]


def test_loader_reports_dropped_utterances_with_the_batches(tiny_corpus):
    feat = Featurizer(FeatureConfig(), None, max_frames=150)  # every 2 s clip is too long
    loader = make_loader(str(tiny_corpus["shards"]), feat, DataConfig(num_workers=2), train=False)
    items = list(loader)
    assert all("feats" not in it for it in items)
    assert sorted(u for it in items for u, _, _ in it["dropped"]) == sorted(
        json.loads(line)["id"] for line in tiny_corpus["manifest"].read_text().splitlines()
    )
    pinned = make_loader(
        str(tiny_corpus["shards"]), Featurizer(FeatureConfig(), None), DataConfig(), False, pin_memory=True
    )
    assert pinned.pin_memory


# ---------------------------------------------------------- 4. host-device syncs


def test_forward_and_loss_need_no_device_values_on_the_host(tiny_corpus):
    """On the meta device a tensor has no values: anything that reads one on the host (int(),
    bool(), .tolist(), boolean-mask indexing) raises. Before: the encoder turned each length
    into an int and tested `.any()` on the device, and the CTC loss masked on the device."""
    tok = load_tokenizer(tiny_corpus["lang"])
    for attention in ("padded", "packed"):
        enc = EncoderConfig(patch_freq=128, stride_freq=128, patch_time=4, stride_time=4, embed_dim=32, depth=2)
        enc.num_heads, enc.num_cls_tokens, enc.max_frames, enc.attention = 2, 1, 512, attention
        enc.conv_kernel = 3
        cfg = ModelConfig(enc, CTCHeadConfig(vocab_size=tok.vocab_size))
        with torch.device("meta"):
            model = ASTModel(cfg)
        lengths = torch.tensor([200, 150, 90])
        tl = torch.tensor([5, 0, 3])
        batch = {
            "feats": torch.empty(3, 200, 128, device="meta"),
            "lengths": lengths,
            "targets": torch.ones(8, dtype=torch.long),
            "target_lengths": tl,
        }
        out = model(batch["feats"], batch["lengths"])
        assert out["log_probs"].shape == (3, 50, tok.vocab_size)
        # ctc_loss itself has no meta kernel: reaching it means the selection before it (which
        # utterances have targets) ran on the CPU
        with pytest.raises(NotImplementedError, match="_ctc_loss"):
            head_losses(model, out, batch, torch.device("meta"))


def test_train_step_returns_device_tensors(tiny_corpus, tmp_path):
    """The loop reads the loss and the gradient norm at log steps only, not every step."""
    trainer = Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, tmp_path, max_steps=2)))
    batch = next(b for b in trainer.epoch_batches(Featurizer(FeatureConfig(), trainer.tokenizer)) if "feats" in b)
    loss, norm = trainer.train_step(batch)
    assert isinstance(loss, torch.Tensor) and isinstance(norm, torch.Tensor) and float(norm) > 0


def test_training_logs_throughput_gradient_norm_and_data_wait(tiny_corpus, tmp_path, caplog):
    exp = tmp_path / "exp"
    caplog.set_level(logging.INFO, logger="astctc.train")
    Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, exp, max_steps=3, validate=False))).run()
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    for key in ("grad_norm", "grad_norm_max", "tokens_per_second", "audio_seconds_per_second", "data_wait"):
        assert all(r[key] >= 0 for r in train), key
    assert all(0 <= r["data_wait"] <= 1 for r in train)
    assert "mfu" not in train[0]  # no known peak on a CPU
    assert "grad norm" in caplog.text


def test_mfu_is_logged_against_a_given_peak(tiny_corpus, tmp_path, caplog):
    exp = tmp_path / "exp"
    sets = tiny_train_config(tiny_corpus, exp, max_steps=2, validate=False, peak_tflops=0.001, precision="bf16")
    caplog.set_level(logging.INFO, logger="astctc.train")
    Trainer(load_config(TrainConfig, None, sets)).run()
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert all(r["mfu"] > 0 for r in rows if r["split"] == "train")
    assert "MFU" in caplog.text


# ------------------------------------------------------- 6. silent device fallbacks


def test_cuda_asked_for_without_a_gpu_is_an_error_and_auto_says_so(tiny_corpus, tmp_path, caplog, monkeypatch):
    from astctc.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device cuda: no usable GPU"):
        resolve_device("cuda")
    sets = tiny_train_config(tiny_corpus, tmp_path, max_steps=1, device="auto")
    with caplog.at_level(logging.WARNING, logger="astctc.train"):
        Trainer(load_config(TrainConfig, None, sets))
    assert "device auto: no usable GPU" in caplog.text and "training on the CPU" in caplog.text


def test_gpu_recipes_ask_for_cuda():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes"
    for conf in [*root.glob("librispeech/conf/*.yaml"), *root.glob("fleurs/conf/*.yaml")]:
        assert load_config(TrainConfig, conf).device == "cuda", conf


# -------------------------------------------------------------- 7. one GPU, several ranks


def test_local_rank_beyond_the_visible_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="LOCAL_RANK 1 but only 1 GPU"):
        distributed.init_distributed(torch.device("cuda"))


def test_tests_train_on_the_cpu():
    """Bit-exact comparisons hold on the CPU: the suite's tiny config must not follow `auto`
    onto a GPU machine's CUDA device."""
    assert "device=cpu" in tiny_train_config({"shards": "s", "lang": "l"}, "e")


# ------------------------------------------------------------- 6. NaN and foreign checkpoints


def test_nan_state_is_not_saved_and_a_bad_checkpoint_is_set_aside_on_resume(tiny_corpus, tmp_path):
    """A diverged state is not written (the checkpoint before it stays the newest); one that
    holds NaN anyway, or is not a checkpoint's mapping, is set aside when resuming, naming the
    tensor. Before: NaN was saved, resumed from and trained on."""
    exp = tmp_path / "exp"
    trainer = Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, exp)))
    state = trainer.state()
    ckpt.save_checkpoint(ckpt.checkpoint_path(exp, 1), **{**state, "step": 1})
    pos = "encoder.embeddings.position_embeddings"
    nan_state = {**state, "step": 2, "model": {**state["model"], pos: state["model"][pos].clone()}}
    nan_state["model"][pos][0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match=rf"step-00000002\.pt: not written: model/{pos} holds NaN"):
        ckpt.save_checkpoint(ckpt.checkpoint_path(exp, 2), **nan_state)
    assert [p.name for p in (exp / "ckpt").iterdir()] == ["step-00000001.pt"]

    torch.save(nan_state, ckpt.checkpoint_path(exp, 2))
    torch.save(list(state.values()), ckpt.checkpoint_path(exp, 3))
    warnings: list[str] = []
    path, loaded = ckpt.load_latest(exp, warnings.append)
    assert path.name == "step-00000001.pt" and loaded["step"] == 1
    assert "step-00000003.pt: not a training checkpoint (a list" in warnings[0]
    assert f"step-00000002.pt: model/{pos} holds NaN or infinite values" in warnings[1]
    assert sorted(p.name for p in (exp / "ckpt").iterdir()) == [
        "step-00000001.pt",
        "step-00000002.pt.bad",
        "step-00000003.pt.bad",
    ]
    assert Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, exp))).resume()
