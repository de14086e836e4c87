"""From shards to padded training batches: fbank, SpecAugment, targets, collation.

Targets: the CTC target comes from the row's "text", classifier targets from its "labels"
dict ({head: class name, or a list of names for a multi-label head}). A batch may carry either
or both; each target that a sample lacks is masked out of its loss (see `collate`).

The randomness of augmentation is drawn from (seed, epoch, utterance id) rather than from a
global generator, so a batch is a pure function of the data position: that is what lets a killed
run resume to exactly the parameters an uninterrupted run reaches.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.data import DataLoader

from ..features import (
    AugmentConfig,
    FeatureConfig,
    SpecAugmentConfig,
    fbank,
    fbank_batch,
    freq_warp,
    spec_augment,
    speed_perturb,
    time_stretch,
)
from ..text import normalize
from ..tokenizer import Tokenizer
from .labels import LabelSpec
from .mixup import Mixup, MixupConfig
from .sampling import BalanceConfig, BalancedShardDataset
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
    # batches the workers may hold ready, all of them together (at least 2 each): a worker
    # fills the bucket buffer in one burst (decoding and featurising `bucket_buffer` clips);
    # with the DataLoader's default of 2 a lone worker makes the trainer wait through every
    # refill, a deep queue lets it refill while the trainer consumes what is queued. A total,
    # not per worker: 12 workers x 32 large batches would pin gigabytes of shared memory
    prefetch: int = 32
    # longer utterances (after speed perturbation) are dropped from training, counted and
    # logged; None: as long as the encoder's position table (encoder.max_frames) allows
    max_duration: float | None = None
    # validation over a set that lost utterances (unreadable, too long, missing from a shard)
    # is an error after the epoch's checkpoint, unless allowed: WER over a silent subset misleads
    allow_missing: bool = False
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)  # classification targets only
    balance: BalanceConfig = field(default_factory=BalanceConfig)  # class-balanced sampling


def label_target(value, cfg: LabelSpec, head: str, utt: str) -> torch.Tensor:
    """A row's label for one head -> float (C,) target: one-hot, or multi-hot if multi_label.

    Names are looked up in cfg.classes; a head without class names takes class indices."""
    names = list(value) if isinstance(value, (list, tuple)) else [value]
    if not cfg.multi_label and len(names) != 1:
        raise ValueError(f"utterance {utt}: head {head} is single-label but has labels {names}")
    target = torch.zeros(cfg.num_classes)
    for v in names:
        if cfg.classes is not None:
            if v not in cfg.classes:
                raise ValueError(f"utterance {utt}: label {v!r} is not a class of head {head}")
            target[cfg.classes.index(v)] = 1.0
        elif isinstance(v, int) and 0 <= v < cfg.num_classes:
            target[v] = 1.0
        else:
            raise ValueError(f"utterance {utt}: label {v!r} is not a class index of head {head}")
    return target


class Featurizer:
    """Sample dict (from ShardDataset) -> training item; runs inside DataLoader workers.

    It drops (returns None for) what training cannot use, and records each drop in `dropped`
    as (id, kind, detail), which the batcher hands on with the next batch so that the trainer
    counts and logs them: "too_long" (longer than `max_duration` seconds after speed
    perturbation, or more than `max_frames` fbank frames, the encoder's position table),
    "no_target" (no transcript and no label) and "infeasible" (CTC needs more output frames
    than the utterance has: `output_frames(fbank frames)` < tokens + repeated neighbours).

    `device_features`: the item carries its waveform ("wav", after speed perturbation) and its
    frame count instead of features, which `batch_features` computes later for a whole batch on
    the model's device (fbank_batch): the worker only reads and decodes audio. No feature-level
    augmentation then (SpecAugment, tempo, mel warp): those draw per utterance on its features."""

    def __init__(
        self,
        features: FeatureConfig,
        tokenizer: Tokenizer | None,
        augment: SpecAugmentConfig | None = None,
        seed: int = 0,
        max_duration: float | None = None,
        perturb: AugmentConfig | None = None,
        heads: dict[str, LabelSpec] | None = None,
        max_frames: int | None = None,
        output_frames: Callable[[int], int] | None = None,
        device_features: bool = False,
    ):
        if device_features and (
            (augment is not None and augment.enabled)
            or (perturb is not None and (perturb.tempo > 0 or perturb.freq_warp > 0))
        ):
            raise ValueError(
                "features on the device take no feature-level augmentation (SpecAugment, tempo, freq_warp)"
            )
        self.device_features = device_features
        self.features = features
        self.tokenizer = tokenizer
        self.augment = augment
        self.perturb = perturb
        self.seed = seed
        self.epoch = 0
        self.max_duration = max_duration
        self.max_frames = max_frames
        self.output_frames = output_frames
        self.heads = heads or {}
        self.keep_wav = False  # waveform-level mixup needs the audio in the item
        self.dropped: list[tuple[str, str, str]] = []

    def labels(self, sample: dict) -> dict[str, torch.Tensor]:
        """{head: target} for the heads this sample has a label for."""
        given = sample.get("labels") or {}
        return {
            h: label_target(given[h], cfg, h, sample["id"]) for h, cfg in self.heads.items() if given.get(h) is not None
        }

    def take_dropped(self) -> list[tuple[str, str, str]]:
        out, self.dropped = self.dropped, []
        return out

    def _drop(self, utt: str, kind: str, detail: str) -> None:
        self.dropped.append((utt, kind, detail))

    def _generator(self, sample: dict) -> torch.Generator | None:
        """The utterance's augmentation randomness: a function of (seed, epoch, id, copy)."""
        if self.augment is None and self.perturb is None:
            return None
        key = f"{self.seed}/{self.epoch}/{sample['id']}"
        if sample.get("repeat"):  # a copy from balanced sampling: augmented differently
            key += f"/{sample['repeat']}"
        return torch.Generator().manual_seed(zlib.crc32(key.encode()))

    def _speed(self, g: torch.Generator | None) -> float:
        """The speed perturbation factor: the first draw from the utterance's generator."""
        if self.perturb is None or len(self.perturb.speeds) < 2:
            return 1.0
        speeds = self.perturb.speeds
        return speeds[int(torch.randint(len(speeds), (1,), generator=g))]

    def plan(self, sample: dict) -> float | None:
        """Seconds the utterance {"id", "duration"[, "repeat"]} will last after speed
        perturbation, known before its audio is decoded; None (and recorded) if that is
        longer than max_duration."""
        seconds = sample["duration"] / self._speed(self._generator(sample))
        if self.max_duration and seconds > self.max_duration:
            self._drop(sample["id"], "too_long", f"{seconds:.2f} s > max_duration {self.max_duration:g} s")
            return None
        return seconds

    def __call__(self, sample: dict) -> dict | None:
        wav, utt = sample["wav"], sample["id"]
        text = sample.get("text", "") or ""
        has_text = self.tokenizer is not None and bool(normalize(text))
        labels = self.labels(sample)
        if (self.tokenizer is not None or self.heads) and not has_text and not labels:
            what = "an empty transcript" if not self.heads else "no transcript and no label"
            log.warning("utterance %s has %s; skipped", utt, what)
            self._drop(utt, "no_target", what)
            return None
        g = self._generator(sample)
        speed = self._speed(g)
        if speed != 1.0:
            wav = speed_perturb(wav, speed)
        seconds = wav.numel() / self.features.sample_rate
        if self.max_duration and seconds > self.max_duration:
            self._drop(utt, "too_long", f"{seconds:.2f} s > max_duration {self.max_duration:g} s")
            return None
        if self.device_features:  # features later, a batch at a time on the device
            frames = self.features.frames(wav.numel())
            if frames < 1:
                self._drop(utt, "unusable", f"{wav.numel()} samples: shorter than one analysis window")
                return None
            item = {"id": utt, "wav": wav.float(), "frames": frames, "text": text, "duration": seconds}
        else:
            feats = self.features_of(wav, g)
            frames = feats.shape[0]
            item = {"id": utt, "feats": feats, "text": text, "duration": seconds}
        if self.max_frames is not None and frames > self.max_frames:
            self._drop(utt, "too_long", f"{frames} frames > encoder.max_frames {self.max_frames}")
            return None
        if self.tokenizer is not None:
            ids = self.tokenizer.encode(normalize(text)) if has_text else []
            item["targets"] = torch.tensor(ids, dtype=torch.long)
            if ids and self.output_frames is not None:
                need = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))  # a blank between repeats
                have = self.output_frames(frames)
                if have < need:
                    self._drop(utt, "infeasible", f"{len(ids)} tokens need {need} CTC frames, {have} available")
                    return None
        if self.heads:
            item["labels"] = labels
        if self.keep_wav:
            item["wav"] = wav
        return item

    def features_of(self, wav: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """fbank, then the feature-level augmentations (tempo, mel warp, SpecAugment) drawn from g."""
        feats = fbank(wav, self.features)

        def factor(w: float) -> float:  # uniform in [1 - w, 1 + w]
            return 1 + (2 * float(torch.rand(1, generator=g)) - 1) * w

        if self.perturb is not None and self.perturb.tempo > 0:
            feats = time_stretch(feats, factor(self.perturb.tempo))
        if self.perturb is not None and self.perturb.freq_warp > 0:
            feats = freq_warp(feats, factor(self.perturb.freq_warp))
        if self.augment is not None and self.augment.enabled:
            feats = spec_augment(feats, self.augment, g)
        return feats


def collate(items: list[dict]) -> dict:
    """Pad features with zeros (the normalised mean) and concatenate CTC targets.

    CTC: an item without a transcript has target length 0 (the loss skips it). Classifiers:
    batch["labels"][head] is (B, C) float, batch["label_mask"][head] (B,) says which items
    have a target for the head (the others' rows are zeros and take no part in its loss).

    Items of a Featurizer with `device_features` carry waveforms: the batch then has "wavs"
    (B, N) zero-padded and "samples" (B,) instead of "feats"; "lengths" are frames either way."""
    items = [it for it in items if it is not None]
    B = len(items)
    batch = {
        "ids": [it["id"] for it in items],
        "shards": [it.get("shard") for it in items],
        "texts": [it["text"] for it in items],
        "seconds": sum(it["duration"] for it in items),
    }
    if "feats" not in items[0]:
        samples = torch.tensor([it["wav"].numel() for it in items])
        wavs = torch.zeros(B, int(samples.max()))
        for i, it in enumerate(items):
            wavs[i, : it["wav"].numel()] = it["wav"]
        batch.update(wavs=wavs, samples=samples, lengths=torch.tensor([it["frames"] for it in items]))
    else:
        T = max(it["feats"].shape[0] for it in items)
        feats = torch.zeros(B, T, items[0]["feats"].shape[1])
        for i, it in enumerate(items):
            feats[i, : it["feats"].shape[0]] = it["feats"]
        batch.update(feats=feats, lengths=torch.tensor([it["feats"].shape[0] for it in items]))
    if "targets" in items[0]:
        batch["targets"] = torch.cat([it["targets"] for it in items])
        batch["target_lengths"] = torch.tensor([len(it["targets"]) for it in items])
    if any("labels" in it for it in items):
        width = {h: t.numel() for it in items for h, t in it.get("labels", {}).items()}
        batch["labels"], batch["label_mask"] = {}, {}
        for h in sorted(width):
            have = [h in it.get("labels", {}) for it in items]
            batch["labels"][h] = torch.stack(
                [it["labels"][h].float() if ok else torch.zeros(width[h]) for it, ok in zip(items, have)]
            )
            batch["label_mask"][h] = torch.tensor(have)
    return batch


def has_audio(batch: dict) -> bool:
    """Whether a loader item is a batch (features or waveforms), not only the drops it reports."""
    return "feats" in batch or "wavs" in batch


def batch_features(batch: dict, features: FeatureConfig, device: torch.device) -> torch.Tensor:
    """The batch's (B, T, bins) features on `device`: its "feats" moved there, or, where the
    loader's workers only decoded audio (Featurizer `device_features`), `fbank_batch` of its
    waveforms computed there (equal to the workers' fbank within 1e-4; the lengths are the
    frame counts the batch already carries, so nothing is read back from the device)."""
    if "feats" in batch:
        return batch["feats"].to(device, non_blocking=True)
    wavs = batch["wavs"].to(device, non_blocking=True)
    return fbank_batch(wavs, batch["samples"], features)


def _drop_none(collate_fn, transform=None):
    def fn(items):
        items = [it for it in items if it is not None]
        if items and transform is not None:
            items = transform(items)
        return collate_fn(items) if items else None

    return fn


class _ScoringLoader(DataLoader):
    """The loader of a pass that scores a set (decode, evaluate, validation): a sample id read a
    second time (two shards with the same keys, or one shard twice) is a ValueError naming both
    places, since results kept by id would silently replace the first copy's."""

    set_name = ""

    def __iter__(self):
        seen: dict[str, str | None] = {}
        for batch in super().__iter__():
            for utt, shard in zip(batch.get("ids", ()), batch.get("shards", ())):
                if utt in seen:
                    raise ValueError(_duplicate(self.set_name, utt, seen[utt], shard))
                seen[utt] = shard
            yield batch


def _duplicate(set_name: str, utt: str, first: str | None, second: str | None) -> str:
    where = f"twice in {first}" if first == second else f"in {first} and again in {second}"
    why = "ids must be unique in a set (one copy's reference would replace the other's)"
    return f"{set_name}: sample {utt!r} is {where}; {why}"


def make_loader(
    shards: str,
    featurizer: Featurizer,
    cfg: DataConfig,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over duration-bucketed dynamic batches of `shards` for one epoch.

    Yields collated batch dicts, each with "dropped" (see BatchedShardDataset), and
    {"dropped": [...]} alone where nothing of a batch was left. `pin_memory` (for CUDA) puts
    batches in page-locked memory, so that `.to(device, non_blocking=True)` really overlaps.
    Not `train`: a pass that scores the set, where a sample id read twice is an error."""
    featurizer.epoch = epoch
    kwargs = dict(shuffle=train, seed=seed, rank=rank, world_size=world_size, transform=featurizer)
    if train and cfg.balance.head:
        source = BalancedShardDataset(shards, cfg.balance, **kwargs)
    else:
        source = ShardDataset(shards, **kwargs)
    mixup = Mixup(cfg.mixup, featurizer) if train and cfg.mixup.prob > 0 else None
    batched = BatchedShardDataset(
        source,
        collate=_drop_none(collate, mixup),
        max_batch_seconds=cfg.max_batch_seconds,
        max_batch_size=cfg.max_batch_size,
        max_batch_seconds2=cfg.max_batch_seconds2,
        num_buckets=cfg.num_buckets if train else 1,
        bucket_buffer=cfg.bucket_buffer,
        seed=seed,
        shuffle=train,
    )
    batched.set_epoch(epoch)
    loader = (DataLoader if train else _ScoringLoader)(
        batched,
        batch_size=None,
        num_workers=cfg.num_workers,
        prefetch_factor=max(2, -(-cfg.prefetch // cfg.num_workers)) if cfg.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed * 1000 + epoch),  # leave the global RNG alone
        persistent_workers=False,
        pin_memory=pin_memory,
    )
    loader.set_name = str(shards)
    return loader
