"""Class-balanced sampling over streamed shards, by per-sample repeat factors.

Shards are read sequentially, so instead of drawing random indices we give every training
sample a repeat factor r from its class's frequency and stream it k times in the epoch, with
k = floor(r) + (1 if u < r - floor(r) else 0) and u drawn from (seed, epoch, sample key).
(LVIS's repeat-factor sampling, with stochastic rounding so that factors below 1 subsample.)

    weight of class c      w_c = count_c ** -power
    factor                 r_c = w_c * N / sum_c' count_c' * w_c'     (N labelled samples)

so the expected epoch length stays N and class c's expected share of it is proportional to
count_c ** (1 - power): `power: 1` makes every class equally frequent, `power: 0.5` halves the
imbalance in log scale. A multi-label sample takes the largest factor of its classes; a sample without a
label for the balanced head keeps r = 1.

Epoch semantics: an epoch is one pass over the shards in which sample i occurs k_i times
(E[k_i] = r_i; k_i = 0 drops it for this epoch). The copies are inserted where the sample is
read, before the shuffle buffer and the rank x worker split, so the split stays an exact
partition of the expanded stream: each copy is trained on exactly once. Copy n > 0 carries
`repeat: n`, which the Featurizer folds into its augmentation seed, so copies are augmented
differently. Everything is a function of (seed, epoch, key): a resumed run replays it exactly.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tarfile
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from .shards import ShardDataset, _resolve_shards
from .sources import is_url, open_shard

log = logging.getLogger(__name__)


@dataclass
class BalanceConfig:
    head: str | None = None  # the classifier whose classes are balanced; None = no balancing
    power: float = 1.0  # weight ~ count**-power: 1 = classes equally often, 0 = as in the data


def sample_classes(meta: dict, head: str) -> list[str]:
    """Class names a manifest row / shard json gives `head` ([] when it has none)."""
    value = (meta.get("labels") or {}).get(head)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _json_members(shard: str) -> Iterator[bytes]:
    """The .json members of one tar: a local one is read by seeking past the audio, a URL
    streamed whole (through `open_shard`, in tarfile's stream mode)."""
    if not is_url(shard):
        with tarfile.open(shard, "r:") as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".json"):
                    yield tar.extractfile(m).read()
        return
    with open_shard(shard) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".json"):
                yield tar.extractfile(m).read()
            tar.members = []  # a stream's members need not be kept


@lru_cache(maxsize=8)
def _counts(shards: tuple[str, ...], head: str) -> tuple[tuple[str, int], ...]:
    counts: Counter = Counter()
    for shard in shards:
        for data in _json_members(shard):
            try:
                meta = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                continue  # the reader reports it when it meets it
            counts.update(sample_classes(meta, head))
    return tuple(sorted(counts.items()))


def class_counts(shards, head: str) -> Counter:
    """Samples per class of `head` in a shard set (a class counts once per sample)."""
    paths, _ = _resolve_shards(shards)
    return Counter(dict(_counts(tuple(paths), head)))


def repeat_factors(counts: dict[str, int], power: float = 1.0) -> dict[str, float]:
    """Factor per class such that sum_c count_c * r_c = sum_c count_c (see the module doc)."""
    counts = {c: n for c, n in counts.items() if n > 0}
    if not counts:
        return {}
    w = {c: n**-power for c, n in counts.items()}
    scale = sum(counts.values()) / sum(counts[c] * w[c] for c in counts)
    return {c: w[c] * scale for c in counts}


def copies(factor: float, seed: int, epoch: int, key: str) -> int:
    """floor(factor), plus one with probability frac(factor), from (seed, epoch, key)."""
    whole = math.floor(factor)
    frac = factor - whole
    if frac > 0 and random.Random(f"balance:{seed}:{epoch}:{key}").random() < frac:
        whole += 1
    return whole


class BalancedShardDataset(ShardDataset):
    """ShardDataset whose samples are streamed `copies(r)` times per epoch (module doc)."""

    def __init__(self, shards, balance: BalanceConfig, **kwargs):
        super().__init__(shards, **kwargs)
        if not balance.head:
            raise ValueError("balanced sampling needs data.balance.head")
        self.head = balance.head
        self.counts = class_counts(self.shards, balance.head)
        if not self.counts:
            raise ValueError(f"balanced sampling: no sample in {shards} has a label for head {balance.head!r}")
        self.factors = repeat_factors(self.counts, balance.power)

    def factor(self, meta: dict) -> float:
        classes = sample_classes(meta, self.head)
        return max((self.factors[c] for c in classes if c in self.factors), default=1.0)

    def _read(self, shard: str, report_missing: bool = True) -> Iterator[dict]:
        for raw in super()._read(shard, report_missing):
            try:
                meta = json.loads(raw["json"])
                r = self.factor(meta) if isinstance(meta, dict) else 1.0
            except (KeyError, ValueError, UnicodeDecodeError):
                yield raw  # once: _decode reports what is wrong with it
                continue
            for n in range(copies(r, self.seed, self.epoch, raw.get("__key__", ""))):
                yield raw if n == 0 else {**raw, "__repeat__": n}

    def _decode(self, raw: dict) -> dict | None:
        sample = super()._decode(raw)
        if sample is not None and raw.get("__repeat__"):
            sample["repeat"] = raw["__repeat__"]
        return sample
