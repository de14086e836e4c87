"""Shared fixtures: real speech from ../shared/data, and a tiny sharded corpus built from it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASTCTC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "ljspeech_lj001").is_dir():
        pytest.fail(f"real-speech data not found at {SHARED} (set ASTCTC_SHARED_DATA)")
    return SHARED


def lj_rows(shared: Path, n: int) -> list[dict]:
    """The first n LJSpeech LJ001 utterances as manifest rows (normalised text field)."""
    root = shared / "ljspeech_lj001"
    rows = []
    with open(root / "metadata.csv", encoding="utf-8") as f:
        for rec in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            audio = next(
                (root / d / f"{rec[0]}.flac" for d in ("wavs", "flac", ".") if (root / d / f"{rec[0]}.flac").exists()),
                None,
            )
            if audio is None:
                continue
            rows.append(
                {
                    "id": rec[0],
                    "audio": str(audio),
                    "duration": 0.0,
                    "text": rec[2],
                    "speaker": "LJ",
                    "language": "en",
                    "labels": {},
                }
            )
            if len(rows) == n:
                break
    return rows


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, shared_data) -> dict:
    """12 real LJSpeech clips (cut to 2 s) as shards + a character tokenizer."""
    from astctc.audio import encode_flac, load_audio
    from astctc.data.manifest import write_manifest
    from astctc.data.shards import write_shards
    from astctc.text import normalize
    from astctc.tokenizer import CharTokenizer

    root = tmp_path_factory.mktemp("tiny")
    rows = lj_rows(shared_data, 12)
    assert len(rows) == 12, "LJ001 clips missing"
    for r in rows:  # short clips keep the training tests fast; the text is kept whole
        wav = load_audio(r["audio"])[: 2 * 16000]
        out = root / "audio" / f"{r['id']}.flac"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(encode_flac(wav))
        r["audio"], r["duration"] = str(out), wav.numel() / 16000
        r["text"] = " ".join(normalize(r["text"]).split()[:5])
    write_manifest(rows, root / "manifest.jsonl")
    write_shards(root / "manifest.jsonl", root / "shards", max_shard_count=5, progress=False)
    tok = CharTokenizer.train(normalize(r["text"]) for r in rows)
    tok.save(root / "lang")
    return {"root": root, "manifest": root / "manifest.jsonl", "shards": root / "shards", "lang": root / "lang"}


def tiny_train_config(corpus: dict, exp: Path, **overrides) -> list[str]:
    """`--set` overrides for a 2-layer model that trains a step in well under a second."""
    sets = {
        "exp_dir": str(exp),
        # bit-exact comparisons (resume, DDP) are CPU-deterministic; on a GPU machine "auto" would pick CUDA
        "device": "cpu",
        "data.train": str(corpus["shards"]),
        "data.valid": str(corpus["shards"]),
        "data.tokenizer": str(corpus["lang"]),
        "data.max_batch_seconds": 8,
        "data.num_workers": 0,
        "model.encoder.patch_freq": 128,
        "model.encoder.stride_freq": 128,
        "model.encoder.patch_time": 4,
        "model.encoder.stride_time": 4,
        "model.encoder.embed_dim": 32,
        "model.encoder.depth": 2,
        "model.encoder.num_heads": 2,
        "model.encoder.num_cls_tokens": 1,
        "model.encoder.max_frames": 512,
        "optim.warmup_steps": 2,
        "log_every": 1,
        "progress": False,
    }
    sets.update(overrides)
    return [f"{k}={v}" for k, v in sets.items()]


def tiny_ctc_model(**encoder):
    """(a random character CTC model, its tokenizer): seed 0, one block 32 wide over whole-band
    frame patches, one class token; keyword arguments replace EncoderConfig fields."""
    import torch

    from astctc.models.encoder import EncoderConfig
    from astctc.models.heads import CTCHeadConfig
    from astctc.models.model import ASTModel, ModelConfig
    from astctc.tokenizer import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz'"])
    cfg = dict(patch_freq=128, stride_freq=128, patch_time=2, stride_time=2, embed_dim=32, depth=1, num_heads=2)
    enc = EncoderConfig(**{**cfg, "num_cls_tokens": 1, **encoder})
    return ASTModel(ModelConfig(enc, CTCHeadConfig(vocab_size=tok.vocab_size))), tok
