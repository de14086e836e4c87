"""From shards to padded training batches: fbank, SpecAugment, targets, collation.

The randomness of augmentation is drawn from (seed, epoch, utterance id) rather than from a
global generator, so a batch is a pure function of the data position: that is what lets a killed
run resume to exactly the parameters an uninterrupted run reaches.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from ..features import (
    AugmentConfig,
    FeatureConfig,
    SpecAugmentConfig,
    fbank,
    freq_warp,
    spec_augment,
    speed_perturb,
)
from ..text import normalize
from ..tokenizer import Tokenizer
from .shards import BatchedShardDataset, ShardDataset

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    train: str = ""  # shard directory (or its index.json)
    valid: str | None = None
    tokenizer: str = ""  # directory or file of the tokenizer
    max_batch_seconds: float = 120.0  # padded seconds of audio per batch
    max_batch_size: int | None = None
    max_batch_seconds2: float | None = None  # budget on len x longest^2 (attention ~ length^2)
    num_buckets: int = 0  # 0: sort the buffer, cut it in order (least padding); k: k buckets
    bucket_buffer: int = 2000
    num_workers: int = 1
    max_duration: float = 30.0  # longer utterances are dropped from training (counted)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class Featurizer:
    """Sample dict (from ShardDataset) -> training item; runs inside DataLoader workers."""

    def __init__(
        self,
        features: FeatureConfig,
        tokenizer: Tokenizer | None,
        augment: SpecAugmentConfig | None = None,
        seed: int = 0,
        max_duration: float | None = None,
        perturb: AugmentConfig | None = None,
    ):
        self.features = features
        self.tokenizer = tokenizer
        self.augment = augment
        self.perturb = perturb
        self.seed = seed
        self.epoch = 0
        self.max_duration = max_duration

    def __call__(self, sample: dict) -> dict | None:
        wav = sample["wav"]
        if self.max_duration and wav.numel() / self.features.sample_rate > self.max_duration:
            return None
        text = sample.get("text", "")
        if self.tokenizer is not None and not normalize(text):
            log.warning("utterance %s has an empty transcript; skipped", sample["id"])
            return None
        g = None
        if self.augment is not None or self.perturb is not None:
            key = f"{self.seed}/{self.epoch}/{sample['id']}".encode()
            g = torch.Generator().manual_seed(zlib.crc32(key))
        if self.perturb is not None and len(self.perturb.speeds) > 1:
            speeds = self.perturb.speeds
            wav = speed_perturb(wav, speeds[int(torch.randint(len(speeds), (1,), generator=g))])
        feats = fbank(wav, self.features)
        if self.perturb is not None and self.perturb.freq_warp > 0:
            w = self.perturb.freq_warp
            feats = freq_warp(feats, 1 + (2 * float(torch.rand(1, generator=g)) - 1) * w)
        if self.augment is not None and self.augment.enabled:
            feats = spec_augment(feats, self.augment, g)
        item = {
            "id": sample["id"],
            "feats": feats,
            "text": sample.get("text", ""),
            "duration": wav.numel() / self.features.sample_rate,
        }
        if self.tokenizer is not None:
            item["targets"] = torch.tensor(self.tokenizer.encode(normalize(item["text"])), dtype=torch.long)
        return item


def collate(items: list[dict]) -> dict:
    """Pad features with zeros (the normalised mean) and concatenate CTC targets."""
    items = [it for it in items if it is not None]
    B = len(items)
    T = max(it["feats"].shape[0] for it in items)
    F = items[0]["feats"].shape[1]
    feats = torch.zeros(B, T, F)
    for i, it in enumerate(items):
        feats[i, : it["feats"].shape[0]] = it["feats"]
    batch = {
        "ids": [it["id"] for it in items],
        "texts": [it["text"] for it in items],
        "feats": feats,
        "lengths": torch.tensor([it["feats"].shape[0] for it in items]),
        "seconds": sum(it["duration"] for it in items),
    }
    if "targets" in items[0]:
        batch["targets"] = torch.cat([it["targets"] for it in items])
        batch["target_lengths"] = torch.tensor([len(it["targets"]) for it in items])
    return batch


def _drop_none(collate_fn):
    def fn(items):
        items = [it for it in items if it is not None]
        return collate_fn(items) if items else None

    return fn


def make_loader(
    shards: str,
    featurizer: Featurizer,
    cfg: DataConfig,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> DataLoader:
    """A DataLoader over duration-bucketed dynamic batches of `shards` for one epoch."""
    featurizer.epoch = epoch
    source = ShardDataset(
        shards, shuffle=train, seed=seed, rank=rank, world_size=world_size, transform=featurizer
    )
    batched = BatchedShardDataset(
        source,
        collate=_drop_none(collate),
        max_batch_seconds=cfg.max_batch_seconds,
        max_batch_size=cfg.max_batch_size,
        max_batch_seconds2=cfg.max_batch_seconds2,
        num_buckets=cfg.num_buckets if train else 1,
        bucket_buffer=cfg.bucket_buffer,
        seed=seed,
        shuffle=train,
    )
    batched.set_epoch(epoch)
    return DataLoader(
        batched,
        batch_size=None,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(seed * 1000 + epoch),  # leave the global RNG alone
        persistent_workers=False,
    )
